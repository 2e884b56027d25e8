{{/* Names ------------------------------------------------------------------------- */}}

{{- define "certctl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>" cut to 40 characters, so that every suffix used below still fits
in a 63-character name. */}}
{{- define "certctl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "certctl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "certctl.server.fullname" -}}{{ include "certctl.fullname" . }}-server{{- end -}}
{{- define "certctl.agent.fullname" -}}{{ include "certctl.fullname" . }}-agent{{- end -}}
{{- define "certctl.postgresql.fullname" -}}{{ include "certctl.fullname" . }}-postgresql{{- end -}}

{{/* Labels ------------------------------------------------------------------------ */}}

{{- define "certctl.labels" -}}
helm.sh/chart: {{ include "certctl.chart" . }}
app.kubernetes.io/name: {{ include "certctl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: certctl
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "server") */}}
{{- define "certctl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "certctl.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "certctl.componentLabels" -}}
{{ include "certctl.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images ------------------------------------------------------------------------ */}}

{{- define "certctl.server.image" -}}
{{- printf "%s:%s" .Values.server.image.repository (default .Chart.AppVersion .Values.server.image.tag) -}}
{{- end -}}

{{- define "certctl.agent.image" -}}
{{- printf "%s:%s" .Values.agent.image.repository (default .Chart.AppVersion .Values.agent.image.tag) -}}
{{- end -}}

{{- define "certctl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "certctl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secrets ----------------------------------------------------------------------- */}}

{{/* The chart's own Secret: holds every credential not taken from an existingSecret. */}}
{{- define "certctl.server.secretName" -}}{{ include "certctl.server.fullname" . }}{{- end -}}

{{- define "certctl.tls.secretName" -}}
{{- if .Values.server.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "certctl.server.fullname" .) -}}
{{- else -}}
{{- .Values.server.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* "name:key:role,..." from server.auth.apiKeys. */}}
{{- define "certctl.apiKeys" -}}
{{- $entries := list -}}
{{- range .Values.server.auth.apiKeys -}}
{{- $entries = append $entries (printf "%s:%s:%s" .name .key (default "operator" .role)) -}}
{{- end -}}
{{- join "," $entries -}}
{{- end -}}

{{/* The bundled database's URL; the password is percent-encoded (query escaping, with "+"
turned back into "%20" since userinfo takes "+" literally). */}}
{{- define "certctl.postgresql.url" -}}
{{- $auth := .Values.postgresql.auth -}}
{{- $password := urlquery $auth.password | replace "+" "%20" -}}
{{- printf "postgresql://%s:%s@%s:5432/%s" (urlquery $auth.username) $password (include "certctl.postgresql.fullname" .) $auth.database -}}
{{- end -}}

{{/* True ("true") when the chart's Secret carries the database URL. */}}
{{- define "certctl.databaseUrlInSecret" -}}
{{- if .Values.postgresql.enabled -}}
{{- if not .Values.postgresql.auth.existingSecret -}}true{{- end -}}
{{- else if not .Values.externalDatabase.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* True when the chart's Secret has anything to hold. */}}
{{- define "certctl.server.secretNeeded" -}}
{{- $s := .Values.server -}}
{{- if or (and (eq $s.auth.type "api-key") (not $s.auth.existingSecret)) (not $s.encryptionKey.existingSecret) (not $s.bootstrapToken.existingSecret) (include "certctl.databaseUrlInSecret" .) -}}true{{- end -}}
{{- end -}}

{{- define "certctl.bootstrapToken.secretName" -}}
{{- default (include "certctl.server.secretName" .) .Values.server.bootstrapToken.existingSecret -}}
{{- end -}}

{{- define "certctl.bootstrapToken.secretKey" -}}
{{- if .Values.server.bootstrapToken.existingSecret -}}{{ .Values.server.bootstrapToken.existingSecretKey }}{{- else -}}bootstrap-token{{- end -}}
{{- end -}}

{{/* Pod-level and container-level security contexts ---------------------------------
Kept apart on purpose: readOnlyRootFilesystem, allowPrivilegeEscalation and capabilities
exist only on a container's securityContext. */}}

{{- define "certctl.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "certctl.containerSecurityContext" -}}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* The agent's control-plane URL. */}}
{{- define "certctl.agent.serverURL" -}}
{{- default (printf "https://%s:%v" (include "certctl.server.fullname" .) .Values.server.service.port) .Values.agent.serverURL -}}
{{- end -}}

{{/* Validation: every refusal is one sentence naming the values key and the fix. -------- */}}

{{- define "certctl.validate" -}}
{{- $s := .Values.server -}}
{{- if not (has $s.auth.type (list "api-key" "none")) -}}
{{- fail (printf "server.auth.type %q is not supported: set it to \"api-key\" (for JWT/OIDC, put an authenticating gateway in front of certctl and keep api-key), or \"none\" for a demo." $s.auth.type) -}}
{{- end -}}
{{- if and (eq $s.auth.type "api-key") (empty $s.auth.apiKeys) (not $s.auth.existingSecret) -}}
{{- fail "server.auth.apiKeys is empty and server.auth.existingSecret is unset while server.auth.type is api-key: add a {name, key, role} entry to server.auth.apiKeys or set server.auth.existingSecret." -}}
{{- end -}}
{{- /* The server refuses these at start (CERTCTL_API_KEYS): refuse them here instead of
rendering a crash-looping Deployment. */ -}}
{{- $roles := dict -}}
{{- $pairs := dict -}}
{{- range $i, $k := $s.auth.apiKeys -}}
{{- if or (not $k.name) (not $k.key) -}}
{{- fail (printf "server.auth.apiKeys[%d] needs a non-empty name and key: fill both in or remove the entry." $i) -}}
{{- end -}}
{{- $role := default "operator" $k.role -}}
{{- if hasKey $pairs (printf "%s:%s" $k.name $k.key) -}}
{{- fail (printf "server.auth.apiKeys[%d] repeats a key already listed for %q: remove the duplicate entry." $i $k.name) -}}
{{- end -}}
{{- if and (hasKey $roles $k.name) (ne (get $roles $k.name) $role) -}}
{{- fail (printf "server.auth.apiKeys[%d] gives %q the role %s but an earlier entry gives it %s: a rotation lists the old and new key under the same name with the same role." $i $k.name $role (get $roles $k.name)) -}}
{{- end -}}
{{- $_ := set $roles $k.name $role -}}
{{- $_ := set $pairs (printf "%s:%s" $k.name $k.key) true -}}
{{- end -}}
{{- if not $s.encryptionKey.existingSecret -}}
{{- if not $s.encryptionKey.value -}}
{{- fail "server.encryptionKey.value is required: set it to at least 32 bytes (openssl rand -base64 32) or set server.encryptionKey.existingSecret." -}}
{{- else if lt (len $s.encryptionKey.value) 32 -}}
{{- fail "server.encryptionKey.value is shorter than 32 bytes: set it to the output of openssl rand -base64 32." -}}
{{- end -}}
{{- end -}}
{{- if and (not $s.bootstrapToken.value) (not $s.bootstrapToken.existingSecret) -}}
{{- fail "server.bootstrapToken.value is required so agents can register: set it (openssl rand -hex 32) or set server.bootstrapToken.existingSecret." -}}
{{- end -}}
{{- $tls := $s.tls -}}
{{- if and $tls.existingSecret $tls.certManager.enabled -}}
{{- fail "server.tls.existingSecret and server.tls.certManager.enabled are both set: keep exactly one source for the server certificate." -}}
{{- end -}}
{{- if not (or $tls.existingSecret $tls.certManager.enabled) -}}
{{- fail "server.tls has no certificate: set server.tls.existingSecret to a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) or set server.tls.certManager.enabled=true." -}}
{{- end -}}
{{- if and $tls.certManager.enabled (not $tls.certManager.issuerRef.name) -}}
{{- fail "server.tls.certManager.issuerRef.name is required when server.tls.certManager.enabled=true: set it to your cert-manager Issuer or ClusterIssuer." -}}
{{- end -}}
{{- if and (gt (int $s.replicas) 1) (not $s.ca.existingSecret) -}}
{{- fail "server.replicas > 1 needs server.ca.existingSecret, or each replica would create its own self-signed root CA: set server.ca.existingSecret to a Secret with the CA's tls.crt and tls.key, or set server.replicas=1." -}}
{{- end -}}
{{- if and (gt (int $s.replicas) 1) $s.persistence.enabled (not $s.persistence.existingClaim) (not (has "ReadWriteMany" $s.persistence.accessModes)) -}}
{{- fail "server.persistence.accessModes has no ReadWriteMany, so server.replicas > 1 cannot share the data volume: set server.persistence.enabled=false (the CA comes from server.ca.existingSecret) or server.persistence.accessModes=[ReadWriteMany]." -}}
{{- end -}}
{{- $pg := .Values.postgresql -}}
{{- $ext := .Values.externalDatabase -}}
{{- if $pg.enabled -}}
{{- if or $ext.url $ext.existingSecret -}}
{{- fail "externalDatabase is set while postgresql.enabled=true: set postgresql.enabled=false to use the external database, or clear externalDatabase.url and externalDatabase.existingSecret." -}}
{{- end -}}
{{- if and (not $pg.auth.password) (not $pg.auth.existingSecret) -}}
{{- fail "postgresql.auth.password is required with the bundled database: set it (openssl rand -hex 24) or set postgresql.auth.existingSecret (or use postgresql.enabled=false with externalDatabase.url)." -}}
{{- end -}}
{{- else -}}
{{- if and $ext.url $ext.existingSecret -}}
{{- fail "externalDatabase.url and externalDatabase.existingSecret are both set: keep only one of them." -}}
{{- end -}}
{{- if not (or $ext.url $ext.existingSecret) -}}
{{- fail "externalDatabase.url or externalDatabase.existingSecret is required when postgresql.enabled=false: set externalDatabase.url=postgresql://user:password@host:5432/certctl or name a Secret in externalDatabase.existingSecret." -}}
{{- end -}}
{{- if and $ext.url (not (regexMatch "^postgres(ql)?://" $ext.url)) -}}
{{- fail "externalDatabase.url must start with postgresql://: set it to postgresql://user:password@host:5432/certctl." -}}
{{- end -}}
{{- end -}}
{{- $pdb := .Values.podDisruptionBudget -}}
{{- if and (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) -}}
{{- fail "podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable are both set: set only one of them." -}}
{{- end -}}
{{- if .Values.agent.enabled -}}
{{- if not (has .Values.agent.kind (list "DaemonSet" "Deployment")) -}}
{{- fail (printf "agent.kind %q is not supported: set it to DaemonSet or Deployment." .Values.agent.kind) -}}
{{- end -}}
{{- if not (hasPrefix "https://" (include "certctl.agent.serverURL" .)) -}}
{{- fail "agent.serverURL must start with https:// (the control plane is HTTPS-only): change it to https://." -}}
{{- end -}}
{{- end -}}
{{- $sm := .Values.metrics.serviceMonitor -}}
{{- if and $sm.enabled (eq $s.auth.type "api-key") (not $sm.bearerTokenSecret.name) -}}
{{- fail "metrics.serviceMonitor.bearerTokenSecret.name is required because /metrics needs an API key (the viewer role is enough): set it to a Secret holding one of server.auth.apiKeys (and bearerTokenSecret.key to its key in that Secret)." -}}
{{- end -}}
{{- end -}}
