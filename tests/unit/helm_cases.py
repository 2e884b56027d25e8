"""Rendering and validation helpers for ``test_helm_chart.py``.

The chart is rendered by Helm's own Go engine (``helm-python-sdk``), every built-in object
is validated against the Kubernetes OpenAPI schemas in strict mode (unknown fields are
errors, so a container-only field at pod scope is caught), and the custom resources the
Kubernetes schemas do not cover (cert-manager, Prometheus Operator) are checked against
the subset of their CRD schemas that the chart uses.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import helm_python
import jsonschema
import kubernetes_validate
import yaml

from certctl.core.model import AgentStatus, AlertSeverity, CertificateStatus, JobStatus, JobType

ROOT: Final = Path(__file__).resolve().parents[2]
CHART_DIR: Final = ROOT / "deploy" / "helm" / "certctl"
KUBE_VERSION: Final = "1.30.0"
RELEASE: Final = "rel"
NAMESPACE: Final = "certctl"
FULLNAME: Final = f"{RELEASE}-certctl"

Manifest = dict[str, Any]

# The smallest values that render: every secret the chart refuses to run without.
REQUIRED: Final[Mapping[str, Any]] = {
    "server": {
        "auth": {"apiKeys": [{"name": "admin", "key": "a" * 40, "role": "admin"}]},
        "encryptionKey": {"value": "e" * 44},
        "bootstrapToken": {"value": "b" * 40},
        "tls": {"existingSecret": "certctl-server-tls"},
    },
    "postgresql": {"auth": {"password": "pg-secret-1"}},
}

# What the Kubernetes schemas cannot check: (apiVersion, kind) -> the CRD subset used.
_STRING: Final = {"type": "string", "minLength": 1}
_SECRET_KEY_SELECTOR: Final = {
    "type": "object",
    "required": ["name", "key"],
    "additionalProperties": False,
    "properties": {"name": _STRING, "key": _STRING},
}
# monitoringv1.Duration, as the Prometheus Operator CRDs pattern it.
_DURATION: Final = {
    "type": "string",
    "minLength": 1,
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    "(([0-9]+)ms)?)$",
}
_METADATA: Final = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": _STRING, "namespace": _STRING, "labels": {"type": "object"}},
}


def _crd(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": _STRING,
            "kind": _STRING,
            "metadata": _METADATA,
            "spec": spec,
        },
    }


CRD_SCHEMAS: Final[Mapping[tuple[str, str], Mapping[str, Any]]] = {
    ("cert-manager.io/v1", "Certificate"): _crd(
        {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "additionalProperties": False,
            "properties": {
                "secretName": _STRING,
                "duration": _STRING,
                "renewBefore": _STRING,
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "minItems": 1, "items": _STRING},
                "usages": {
                    "type": "array",
                    "items": {"enum": ["server auth", "client auth", "digital signature"]},
                },
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
                "issuerRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": _STRING,
                        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                        "group": _STRING,
                    },
                },
            },
        }
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _crd(
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": _STRING}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": _STRING,
                            "scheme": {"enum": ["http", "https"]},
                            "path": _STRING,
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "authorization": {
                                "type": "object",
                                "required": ["credentials"],
                                "additionalProperties": False,
                                "properties": {
                                    "type": _STRING,
                                    "credentials": _SECRET_KEY_SELECTOR,
                                },
                            },
                            "tlsConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "serverName": _STRING,
                                    "insecureSkipVerify": {"type": "boolean"},
                                    "ca": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {"secret": _SECRET_KEY_SELECTOR},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _crd(
        {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": _STRING,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {
                                            "type": "string",
                                            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                                        },
                                        "expr": _STRING,
                                        "for": _DURATION,
                                        "labels": {"type": "object"},
                                        "annotations": {"type": "object"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    ),
}


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``, recursively for mappings (lists are replaced)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_required(override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return merge(REQUIRED, override or {})


def render_raw(chart: helm_python.Chart, values: Mapping[str, Any]) -> dict[str, str]:
    return chart.render(dict(values), name=RELEASE, namespace=NAMESPACE)


def manifests(rendered: Mapping[str, str]) -> list[Manifest]:
    """Every YAML document of the rendered templates (NOTES.txt is not a manifest)."""
    found: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document is not None:
                assert isinstance(document, dict), f"{path} rendered a non-mapping document"
                found.append(document)
    return found


def validate(manifest: Manifest) -> None:
    """Strict Kubernetes schema validation, or the CRD subset for custom resources."""
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    if key in CRD_SCHEMAS:
        jsonschema.Draft7Validator(CRD_SCHEMAS[key]).validate(manifest)
        return
    kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def render(chart: helm_python.Chart, values: Mapping[str, Any]) -> list[Manifest]:
    """Render with Helm, then validate every manifest (a failure names the object)."""
    found = manifests(render_raw(chart, values))
    for manifest in found:
        try:
            validate(manifest)
        except jsonschema.ValidationError as exc:
            kind, name = manifest.get("kind"), manifest.get("metadata", {}).get("name")
            raise AssertionError(f"{kind}/{name} is invalid: {exc.message}") from exc
    return found


def by_kind(found: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in found if m["kind"] == kind]


def one(found: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = [m for m in by_kind(found, kind) if name is None or m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def pod_templates(found: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload."""
    for manifest in found:
        if manifest["kind"] in {"Deployment", "DaemonSet", "StatefulSet"}:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            yield name, manifest["spec"]["template"]["spec"]


def container(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    matches = [c for c in pod["containers"] if c["name"] == name]
    assert len(matches) == 1, f"no container {name}"
    found: dict[str, Any] = matches[0]
    return found


def render_error(chart: helm_python.Chart, values: Mapping[str, Any]) -> str:
    """The message Helm refuses ``values`` with; fails the test if the chart renders."""
    try:
        render_raw(chart, values)
    except helm_python.HelmError as exc:
        return str(exc)
    raise AssertionError("the chart rendered values it should refuse")


def secret_data(found: list[Manifest]) -> dict[tuple[str, str], str]:
    """(Secret name, key) -> value of every Secret the chart renders."""
    data: dict[tuple[str, str], str] = {}
    for secret in by_kind(found, "Secret"):
        for key, value in secret.get("stringData", {}).items():
            data[(secret["metadata"]["name"], key)] = value
    return data


_VAR_REF: Final = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def container_env(
    found: list[Manifest],
    container: Mapping[str, Any],
    *,
    existing: Mapping[tuple[str, str], str] | None = None,
    fields: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment the kubelet would give ``container``.

    ``envFrom`` ConfigMaps first, then ``env`` in order (later entries win, ``$(VAR)``
    expands only names defined before it, as the kubelet does). ``secretKeyRef`` reads the
    chart's own Secrets or ``existing`` (Secrets the operator creates); ``fieldRef`` reads
    ``fields``. A reference to anything else fails the test.
    """
    secrets = {**secret_data(found), **(existing or {})}
    config_maps = {m["metadata"]["name"]: m.get("data", {}) for m in by_kind(found, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in config_maps, f"envFrom names a ConfigMap the chart does not render: {name}"
        env.update(config_maps[name])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _VAR_REF.sub(
                lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
            )
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = (source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
            assert ref in secrets, f"{item['name']} reads a Secret key nobody provides: {ref}"
            env[item["name"]] = secrets[ref]
        else:
            path = source["fieldRef"]["fieldPath"]
            assert fields is not None
            assert path in fields, f"{item['name']} reads an unexpected field {path}"
            env[item["name"]] = fields[path]
    return env


def leaf_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaves of a values tree (an empty mapping is a leaf)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


def has_path(values: Mapping[str, Any], path: str) -> bool:
    """Whether dotted ``path`` is a key of ``values`` (list items, ``[0].x``, are the schema's)."""
    node: Any = values
    for part in path.split("."):
        key, indexed, _ = part.partition("[")
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
        if indexed:
            return isinstance(node, list)
    return True


# --------------------------------------------------------------------------- shared cases

SERVER: Final = f"{FULLNAME}-server"
AGENT: Final = f"{FULLNAME}-agent"
POSTGRES: Final = f"{FULLNAME}-postgresql"
EXTERNAL_URL: Final = (
    "postgresql://certctl:ext-pw-1@db.example.internal:5432/certctl?sslmode=require"
)
FIELDS: Final = {"spec.nodeName": "node-1", "metadata.name": f"{AGENT}-7d9f"}
NO_PG: Final[Mapping[str, Any]] = {"postgresql": {"enabled": False, "auth": {"password": ""}}}
HA: Final[Mapping[str, Any]] = {
    "server": {"replicas": 3, "ca": {"existingSecret": "certctl-ca"}},
    "podDisruptionBudget": {"enabled": True},
}
HA_NO_PVC: Final = merge(HA, {"server": {"persistence": {"enabled": False}}})
MONITORING: Final[Mapping[str, Any]] = {
    "metrics": {
        "serviceMonitor": {"enabled": True, "bearerTokenSecret": {"name": "certctl-metrics"}},
        "prometheusRule": {"enabled": True},
    },
    "networkPolicy": {"enabled": True},
}
EVERYTHING: Final = merge(HA_NO_PVC, MONITORING)


def _keys(*entries: tuple[str, str, str | None]) -> dict[str, Any]:
    keys = [{"name": n, "key": k, **({"role": r} if r else {})} for n, k, r in entries]
    return {"server": {"auth": {"apiKeys": keys}}}


# id -> (values laid over REQUIRED, the one message the render is refused with)
FAIL_FAST: Final[Mapping[str, tuple[Mapping[str, Any], str]]] = {
    "missing-api-key": (
        {"server": {"auth": {"apiKeys": []}}},
        "server.auth.apiKeys is empty and server.auth.existingSecret is unset while server.auth."
        "type is api-key: add a {name, key, role} entry to server.auth.apiKeys or set server.auth."
        "existingSecret.",
    ),
    "missing-postgresql-password": (
        {"postgresql": {"auth": {"password": ""}}},
        "postgresql.auth.password is required with the bundled database: set it (openssl rand -hex"
        " 24) or set postgresql.auth.existingSecret (or use postgresql.enabled=false with "
        "externalDatabase.url).",
    ),
    "missing-external-url": (
        NO_PG,
        "externalDatabase.url or externalDatabase.existingSecret is required when postgresql."
        "enabled=false: set externalDatabase.url=postgresql://user:password@host:5432/certctl or "
        "name a Secret in externalDatabase.existingSecret.",
    ),
    "external-url-with-bundled-database": (
        {"externalDatabase": {"url": EXTERNAL_URL}},
        "externalDatabase is set while postgresql.enabled=true: set postgresql.enabled=false to "
        "use the external database, or clear externalDatabase.url and externalDatabase."
        "existingSecret.",
    ),
    "no-tls-source": (
        {"server": {"tls": {"existingSecret": ""}}},
        "server.tls has no certificate: set server.tls.existingSecret to a kubernetes.io/tls "
        "Secret (tls.crt, tls.key, ca.crt) or set server.tls.certManager.enabled=true.",
    ),
    "two-tls-sources": (
        {"server": {"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}},
        "server.tls.existingSecret and server.tls.certManager.enabled are both set: keep exactly "
        "one source for the server certificate.",
    ),
    "cert-manager-without-issuer": (
        {"server": {"tls": {"existingSecret": "", "certManager": {"enabled": True}}}},
        "server.tls.certManager.issuerRef.name is required when server.tls.certManager.enabled="
        "true: set it to your cert-manager Issuer or ClusterIssuer.",
    ),
    "replicas-without-shared-ca": (
        {"server": {"replicas": 2, "persistence": {"enabled": False}}},
        "server.replicas > 1 needs server.ca.existingSecret, or each replica would create its own "
        "self-signed root CA: set server.ca.existingSecret to a Secret with the CA's tls.crt and "
        "tls.key, or set server.replicas=1.",
    ),
    "replicas-on-a-read-write-once-volume": (
        HA,
        "server.persistence.accessModes has no ReadWriteMany, so server.replicas > 1 cannot share "
        "the data volume: set server.persistence.enabled=false (the CA comes from server.ca."
        "existingSecret) or server.persistence.accessModes=[ReadWriteMany].",
    ),
    "pdb-min-and-max": (
        {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable are both set: set "
        "only one of them.",
    ),
    "missing-encryption-key": (
        {"server": {"encryptionKey": {"value": ""}}},
        "server.encryptionKey.value is required: set it to at least 32 bytes (openssl rand -base64 "
        "32) or set server.encryptionKey.existingSecret.",
    ),
    "short-encryption-key": (
        {"server": {"encryptionKey": {"value": "e" * 31}}},
        "server.encryptionKey.value is shorter than 32 bytes: set it to the output of openssl rand "
        "-base64 32.",
    ),
    "missing-bootstrap-token": (
        {"server": {"bootstrapToken": {"value": ""}}},
        "server.bootstrapToken.value is required so agents can register: set it (openssl rand -hex "
        "32) or set server.bootstrapToken.existingSecret.",
    ),
    "service-monitor-without-token": (
        {"metrics": {"serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.bearerTokenSecret.name is required because /metrics needs an API "
        "key (the viewer role is enough): set it to a Secret holding one of server.auth.apiKeys "
        "(and bearerTokenSecret.key to its key in that Secret).",
    ),
    "api-key-name-with-two-roles": (
        _keys(("ci", "k1", "admin"), ("ci", "k2", None)),
        'server.auth.apiKeys[1] gives "ci" the role operator but an earlier entry gives it admin: '
        "a rotation lists the old and new key under the same name with the same role.",
    ),
    "api-key-listed-twice": (
        _keys(("ci", "k1", None), ("ci", "k1", None)),
        'server.auth.apiKeys[1] repeats a key already listed for "ci": remove the duplicate entry.',
    ),
}

# What the templates refuse when the schema (which refuses these first) is skipped.
SCHEMALESS_FAIL_FAST: Final[Mapping[str, tuple[Mapping[str, Any], str]]] = {
    "unknown-auth-type": (
        {"server": {"auth": {"type": "jwt"}}},
        'server.auth.type "jwt" is not supported: set it to "api-key" (for JWT/OIDC, put an '
        'authenticating gateway in front of certctl and keep api-key), or "none" for a demo.',
    ),
    "unknown-agent-kind": (
        {"agent": {"kind": "StatefulSet"}},
        'agent.kind "StatefulSet" is not supported: set it to DaemonSet or Deployment.',
    ),
    "external-url-scheme": (
        merge(NO_PG, {"externalDatabase": {"url": "mysql://db/certctl"}}),
        "externalDatabase.url must start with postgresql://: set it to postgresql://user:"
        "password@host:5432/certctl.",
    ),
}


# --------------------------------------------------------------------------- wiring


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return selector.items() <= labels.items()


def _named(found: list[Manifest], kind: str) -> set[str]:
    return {m["metadata"]["name"] for m in by_kind(found, kind)}


def unresolved(found: list[Manifest], outside: set[str]) -> list[str]:
    """References that point at nothing (or a selector at several workloads); ``outside``
    names the Secrets the operator creates."""
    owners = {m["metadata"]["name"]: m for m in found if "template" in m.get("spec", {})}
    pods = {name: m["spec"]["template"] for name, m in owners.items()}
    problems: list[str] = []

    def selects(what: str, selector: Mapping[str, str]) -> list[str]:
        hits = [n for n, p in pods.items() if _matches(selector, p["metadata"]["labels"])]
        if len(hits) != 1:
            problems.append(f"{what} selects {hits}")
        return hits

    known = {
        "secret": _named(found, "Secret")
        | outside
        | {m["spec"]["secretName"] for m in by_kind(found, "Certificate")},
        "persistentVolumeClaim": _named(found, "PersistentVolumeClaim"),
        "configMap": _named(found, "ConfigMap"),
    }
    fields = {"secret": "secretName", "persistentVolumeClaim": "claimName", "configMap": "name"}
    for name, owner in owners.items():
        if selects(f"{owner['kind']}/{name}", owner["spec"]["selector"]["matchLabels"]) != [name]:
            problems.append(f"{name} does not select its own pods")
        pod = pods[name]["spec"]
        if pod["serviceAccountName"] not in _named(found, "ServiceAccount"):
            problems.append(f"{name} runs as a missing ServiceAccount")
        for volume in pod.get("volumes", []):
            for source in fields.keys() & volume.keys():
                if volume[source][fields[source]] not in known[source]:
                    problems.append(
                        f"{name} mounts a missing {source} {volume[source][fields[source]]}"
                    )
    for service in by_kind(found, "Service"):
        for target in selects(
            f"Service/{service['metadata']['name']}", service["spec"]["selector"]
        ):
            ports = {
                p["name"] for c in pods[target]["spec"]["containers"] for p in c.get("ports", [])
            }
            if not {p["targetPort"] for p in service["spec"]["ports"]} <= ports:
                problems.append(f"Service {service['metadata']['name']} targets missing ports")
    for policy in [*by_kind(found, "NetworkPolicy"), *by_kind(found, "PodDisruptionBudget")]:
        what, spec = f"{policy['kind']}/{policy['metadata']['name']}", policy["spec"]
        selects(what, (spec.get("podSelector") or spec["selector"])["matchLabels"])
        for rule in spec.get("ingress", []) + spec.get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                selects(f"a peer of {what}", peer.get("podSelector", {}).get("matchLabels", {}))
    return problems + _unresolved_monitoring_and_rbac(found)


def _unresolved_monitoring_and_rbac(found: list[Manifest]) -> list[str]:
    problems: list[str] = []
    services = {m["metadata"]["name"]: m for m in by_kind(found, "Service")}
    for monitor in by_kind(found, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        hits = [n for n, s in services.items() if _matches(selector, s["metadata"]["labels"])]
        if hits != [SERVER]:
            problems.append(f"the ServiceMonitor selects {hits}")
        elif monitor["spec"]["endpoints"][0]["port"] not in {
            p["name"] for p in services[SERVER]["spec"]["ports"]
        }:
            problems.append("the ServiceMonitor scrapes a port the Service does not have")
    for binding in by_kind(found, "RoleBinding"):
        subjects = {s["name"] for s in binding["subjects"]}
        if binding["roleRef"]["name"] not in _named(found, "Role"):
            problems.append(f"RoleBinding {binding['metadata']['name']} binds a missing Role")
        if not subjects <= _named(found, "ServiceAccount"):
            problems.append(f"RoleBinding {binding['metadata']['name']} binds missing accounts")
    return problems


# --------------------------------------------------------------------------- the README

README: Final = (CHART_DIR / "README.md").read_text(encoding="utf-8")
BLOCKS: Final[list[tuple[str, str]]] = re.findall(r"```(\w*)\n(.*?)```", README, re.DOTALL)


def readme_section(title: str) -> str:
    """From the heading ``title`` (any level) to the next level-2 heading."""
    start = re.search(rf"^#+ {re.escape(title)}", README, re.MULTILINE)
    assert start is not None, f"the README has no section {title!r}"
    end = README.find("\n## ", start.end())
    return README[start.start() : end if end > 0 else None]


def set_expressions(block: str) -> list[str]:
    """The ``--set`` arguments of a shell block, random values filled in."""
    filled = re.sub(
        r"\$\(openssl rand -hex (\d+)\)", lambda m: "5e" * int(m.group(1)), block
    ).replace("\\\n", " ")
    words = shlex.split(filled, comments=True)
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--set"]


# --------------------------------------------------------------------------- alert rules


def exported_metrics() -> dict[str, set[str]]:
    """Sample name -> label names of what ``GET /metrics`` serves (system.py's registries)."""
    from certctl.server.routes import system

    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    found: dict[str, set[str]] = {}
    for registry in (system.REGISTRY, system.HTTP_REGISTRY):
        # No public API lists a registry's collectors and label names; these attributes have.
        for collector in list(registry._collector_to_names):
            labels = set(collector._labelnames)
            for family in collector.describe():
                base = family.name.removesuffix("_total")
                for suffix in suffixes[family.type]:
                    found[base + suffix] = labels | {"le"} if suffix == "_bucket" else labels
    return found


def label_values() -> dict[tuple[str, str], set[str]]:
    """(metric, label) -> the values certctl sets it to, where those are an enum."""
    types, statuses = {t.value for t in JobType}, {s.value for s in JobStatus}
    return {
        ("certctl_certificates", "status"): {s.value for s in CertificateStatus},
        ("certctl_agents", "status"): {s.value for s in AgentStatus},
        ("certctl_job_transitions_total", "type"): types,
        ("certctl_job_transitions_total", "status"): statuses,
        ("certctl_job_failed_permanently_total", "type"): types,
        ("certctl_expiry_alerts_total", "severity"): {s.value for s in AlertSeverity},
    }


SELECTOR: Final = re.compile(r"\b(certctl_\w+)\s*(?:\{([^}]*)\})?")
MATCHER: Final = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def promtool_suite(job: str) -> dict[str, Any]:
    """``promtool test rules`` cases: alerts fire after their ``for``, and only for ``job``."""
    mine = f'job="{job}"'
    series = {
        f'certctl_certificates{{{mine},status="Expiring"}}': "1x120",
        'certctl_certificates{job="other",status="Expired"}': "1x120",
        f'certctl_agents{{{mine},status="Offline"}}': "2x60",
        f'certctl_job_failed_permanently_total{{{mine},type="Renewal"}}': "0 0 1x10",
        f'certctl_job_transitions_total{{{mine},type="Deployment",status="Failed"}}': "0 0 1x10",
    }
    warning, renewal = [{"exp_labels": {"severity": "warning"}}], {"type": "Renewal"}
    cases = [
        ("30m", "CertctlCertificateExpiring", []),
        ("61m", "CertctlCertificateExpiring", warning),
        ("61m", "CertctlCertificateExpired", []),
        ("10m", "CertctlAgentOffline", []),
        ("16m", "CertctlAgentOffline", warning),
        ("1m", "CertctlRenewalFailing", []),
        ("5m", "CertctlRenewalFailing", [{"exp_labels": {**renewal, "severity": "critical"}}]),
        ("5m", "CertctlDeployRollbacks", warning),
    ]
    return {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": name, "exp_alerts": expected}
                    for at, name, expected in cases
                ],
            }
        ],
    }
