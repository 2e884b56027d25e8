"""The Helm chart in deploy/helm/certctl, rendered by Helm's own engine (helm-python-sdk).

Every rendered manifest is validated in strict mode against the Kubernetes schemas (the
CRD subsets for cert-manager and the Prometheus Operator), see ``helm_cases``. Beyond
that, the tests read the chart the way its consumers do: the server's and agent's own
``certctl.config`` must accept the environment the chart gives them, the alert rules may
use only metrics ``/metrics`` exports, and the README's commands must render.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_cases import (
    AGENT,
    BLOCKS,
    CHART_DIR,
    EVERYTHING,
    EXTERNAL_URL,
    FAIL_FAST,
    FIELDS,
    FULLNAME,
    HA_NO_PVC,
    MATCHER,
    MONITORING,
    NAMESPACE,
    NO_PG,
    POSTGRES,
    REQUIRED,
    ROOT,
    SCHEMALESS_FAIL_FAST,
    SELECTOR,
    SERVER,
    Manifest,
    by_kind,
    container,
    container_env,
    exported_metrics,
    has_path,
    label_values,
    leaf_paths,
    merge,
    one,
    pod_templates,
    promtool_suite,
    readme_section,
    render,
    render_error,
    set_expressions,
    unresolved,
    validate,
    with_required,
)

from certctl import config

CONTAINER_ONLY = {"readOnlyRootFilesystem", "allowPrivilegeEscalation", "capabilities"}
POD_ONLY = {"fsGroup", "fsGroupChangePolicy", "supplementalGroups", "sysctls"}
ALL_ON = with_required(merge(EVERYTHING, {"ingress": {"enabled": True}}))


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


def names(found: list[Manifest]) -> set[tuple[str, str]]:
    return {(m["kind"], m["metadata"]["name"]) for m in found}


def workload(found: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], one(found, kind, name)["spec"]["template"]["spec"])


def server_env(
    found: list[Manifest], existing: Mapping[tuple[str, str], str] | None = None
) -> dict[str, str]:
    pod = workload(found, "Deployment", SERVER)
    return container_env(found, container(pod, "server"), existing=existing)


# --------------------------------------------------------------------------- metadata


def test_chart_version_is_1_0_0_and_app_version_is_the_package_version() -> None:
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["version"] == "1.0.0"
    assert meta["appVersion"] == project["version"]


def test_images_default_to_the_app_version(chart: helm_python.Chart) -> None:
    app, found = chart.metadata["appVersion"], render(chart, with_required())
    images = {c["image"] for _, pod in pod_templates(found) for c in pod["containers"]}
    assert f"certctl/server:{app}" in images
    assert f"certctl/agent:{app}" in images


# --------------------------------------------------------------------------- the schema


def test_values_yaml_passes_its_schema(chart: helm_python.Chart) -> None:
    assert chart.schema is not None
    assert chart.schema["additionalProperties"] is False
    chart.validate_schema(chart.values)


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"serverReplicas": 3}, "additional properties 'serverReplicas' not allowed"),
        ({"server": {"replicas": "3"}}, "/server/replicas"),
        ({"server": {"auth": {"apiKey": "k"}}}, "additional properties 'apiKey' not allowed"),
        (
            {"server": {"auth": {"apiKeys": [{"name": "ci", "key": ""}]}}},
            "/server/auth/apiKeys/0/key",
        ),
        ({"server": {"auth": {"apiKeys": [{"name": "ci", "key": "k", "role": "root"}]}}}, "/role"),
        (
            {"server": {"auth": {"type": "jwt"}}},
            "at '/server/auth/type': value must be one of 'api-key', 'none'",
        ),
        (
            {"agent": {"kind": "StatefulSet"}},
            "at '/agent/kind': value must be one of 'DaemonSet', 'Deployment'",
        ),
        ({"agent": {"serverURL": "http://certctl:8443"}}, "/agent/serverURL"),
        ({"postgresql": {"password": "p"}}, "additional properties 'password' not allowed"),
        ({"podDisruptionBudget": {"minAvailable": "half"}}, "/podDisruptionBudget/minAvailable"),
        ({"metrics": {"prometheusRule": {"expiringFor": "30m1h"}}}, "/expiringFor"),
    ],
    ids=[
        *("unknown-key", "replicas-type", "legacy-api-key", "empty-key", "unknown-role"),
        *("auth-type", "agent-kind", "http-url", "legacy-password", "pdb-text", "duration"),
    ],
)
def test_schema_refuses_wrong_values(
    chart: helm_python.Chart, override: Mapping[str, Any], where: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as refused:
        render(chart, with_required(override))
    assert where in str(refused.value)


# --------------------------------------------------------------------------- Done-when 1-4


def test_default_values_render_exactly_the_listed_resources(chart: helm_python.Chart) -> None:
    found = render(chart, with_required())
    assert names(found) == {
        ("ServiceAccount", FULLNAME),
        ("Secret", SERVER),
        ("ConfigMap", SERVER),
        ("PersistentVolumeClaim", f"{SERVER}-data"),
        ("Deployment", SERVER),
        ("Service", SERVER),
        ("ConfigMap", f"{AGENT}-policy"),
        ("DaemonSet", AGENT),
        ("Secret", POSTGRES),
        ("Service", POSTGRES),
        ("StatefulSet", POSTGRES),
    }
    assert len(found) == len(names(found))
    assert {m["metadata"]["namespace"] for m in found} == {NAMESPACE}
    statefulset = one(found, "StatefulSet", POSTGRES)
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]


@pytest.mark.parametrize("version", ["1.27.0", kubernetes_validate.latest_version()])
def test_default_render_is_valid_from_the_oldest_supported_kubernetes(
    chart: helm_python.Chart, version: str
) -> None:
    assert chart.metadata["kubeVersion"] == ">=1.27.0-0"
    for manifest in render(chart, ALL_ON):
        if manifest["apiVersion"].startswith(("v1", "apps/", "networking.k8s.io/", "policy/")):
            kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize(
    ("database", "existing"),
    [
        ({"url": EXTERNAL_URL}, {}),
        ({"existingSecret": "certctl-db"}, {("certctl-db", "database-url"): EXTERNAL_URL}),
    ],
    ids=["url", "existing-secret"],
)
def test_external_database_renders_no_postgresql_resource(
    chart: helm_python.Chart, database: Mapping[str, Any], existing: Mapping[tuple[str, str], str]
) -> None:
    found = render(chart, merge(with_required(NO_PG), {"externalDatabase": database, **MONITORING}))
    assert not [m for m in found if "postgres" in m["metadata"]["name"]]
    assert not by_kind(found, "StatefulSet")
    pod = workload(found, "Deployment", SERVER)
    url_ref = next(
        e for e in container(pod, "server")["env"] if e["name"] == "CERTCTL_DATABASE_URL"
    )
    assert "secretKeyRef" in url_ref["valueFrom"]
    env = server_env(found, existing)
    assert env["CERTCTL_DATABASE_URL"] == EXTERNAL_URL
    assert "POSTGRES_PASSWORD" not in env
    policy = one(found, "NetworkPolicy", SERVER)
    assert {"ports": [{"protocol": "TCP", "port": 5432}]} in policy["spec"]["egress"]


def test_cert_manager_mode_renders_exactly_one_certificate(chart: helm_python.Chart) -> None:
    tls = {"existingSecret": "", "certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}
    found = render(chart, with_required({"server": {"tls": tls}}))
    spec = one(found, "Certificate")["spec"]  # exactly one
    assert spec["issuerRef"] == {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert SERVER in spec["dnsNames"]
    assert f"{SERVER}.{NAMESPACE}.svc" in spec["dnsNames"]
    server_pod = workload(found, "Deployment", SERVER)
    agent_pod = workload(found, "DaemonSet", AGENT)
    mounted = {v["name"]: v.get("secret", {}).get("secretName") for v in server_pod["volumes"]}
    agent_ca = {v["name"]: v.get("secret", {}).get("secretName") for v in agent_pod["volumes"]}
    assert mounted["tls"] == agent_ca["server-ca"] == spec["secretName"]
    assert not by_kind(render(chart, with_required()), "Certificate")


def test_replicas_monitoring_pdb_and_network_policy_render(chart: helm_python.Chart) -> None:
    found = render(chart, with_required(EVERYTHING))
    base = names(render(chart, with_required())) - {("PersistentVolumeClaim", f"{SERVER}-data")}
    assert names(found) - base == {
        ("ServiceMonitor", SERVER),
        ("PrometheusRule", FULLNAME),
        ("PodDisruptionBudget", SERVER),
        ("NetworkPolicy", SERVER),
        ("NetworkPolicy", AGENT),
        ("NetworkPolicy", POSTGRES),
    }
    deployment = one(found, "Deployment", SERVER)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert one(found, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    monitor = one(found, "ServiceMonitor")["spec"]["endpoints"][0]
    assert monitor["authorization"]["credentials"] == {"name": "certctl-metrics", "key": "token"}
    assert (monitor["scheme"], monitor["path"]) == ("https", "/metrics")
    env = server_env(found)
    assert env["CERTCTL_CA_CERT_PATH"] == "/etc/certctl/ca/tls.crt"
    assert env["CERTCTL_CA_KEY_PATH"] == "/etc/certctl/ca/tls.key"


@pytest.mark.parametrize(
    "override",
    [
        {"podDisruptionBudget": {"enabled": True}},
        merge(HA_NO_PVC, {"podDisruptionBudget": {"enabled": False}}),
    ],
    ids=["one-replica", "disabled"],
)
def test_pdb_renders_only_when_enabled_with_several_replicas(
    chart: helm_python.Chart, override: Mapping[str, Any]
) -> None:
    assert not by_kind(render(chart, with_required(override)), "PodDisruptionBudget")


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"minAvailable": 2}, {"minAvailable": 2}),
        ({"maxUnavailable": "50%"}, {"maxUnavailable": "50%"}),
    ],
    ids=["min-available", "max-unavailable"],
)
def test_pdb_takes_min_available_or_max_unavailable(
    chart: helm_python.Chart, budget: Mapping[str, Any], expected: Mapping[str, Any]
) -> None:
    found = render(chart, with_required(merge(HA_NO_PVC, {"podDisruptionBudget": budget})))
    spec = dict(one(found, "PodDisruptionBudget")["spec"])
    selector = spec.pop("selector")
    assert spec == expected
    pod = one(found, "Deployment", SERVER)["spec"]["template"]
    assert selector["matchLabels"].items() <= pod["metadata"]["labels"].items()


# --------------------------------------------------------------------------- Done-when 5


@pytest.mark.parametrize(("override", "message"), FAIL_FAST.values(), ids=FAIL_FAST.keys())
def test_render_refuses_inconsistent_values_with_one_message(
    chart: helm_python.Chart, override: Mapping[str, Any], message: str
) -> None:
    error = render_error(chart, with_required(override))
    assert error.count("execution error") == 1, error
    assert error.endswith(message), error


@pytest.fixture(scope="module")
def schemaless_chart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[helm_python.Chart]:
    """The chart as `helm install --skip-schema-validation` sees it."""
    copy = tmp_path_factory.mktemp("chart") / "certctl"
    shutil.copytree(CHART_DIR, copy)
    (copy / "values.schema.json").unlink()
    with helm_python.Chart.load(copy) as loaded:
        yield loaded


@pytest.mark.parametrize(
    ("override", "message"), SCHEMALESS_FAIL_FAST.values(), ids=SCHEMALESS_FAIL_FAST.keys()
)
def test_templates_refuse_what_the_schema_refuses_when_it_is_skipped(
    schemaless_chart: helm_python.Chart, override: Mapping[str, Any], message: str
) -> None:
    error = render_error(schemaless_chart, with_required(override))
    assert error.count("execution error") == 1, error
    assert error.endswith(message), error


# --------------------------------------------------------------------------- Done-when 6, 7


def test_probes_are_https_health_and_ready(chart: helm_python.Chart) -> None:
    server = container(workload(render(chart, with_required()), "Deployment", SERVER), "server")
    assert [p["name"] for p in server["ports"]] == ["https"]
    paths = {"livenessProbe": "/health", "readinessProbe": "/ready", "startupProbe": "/health"}
    for probe, path in paths.items():
        assert server[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}


@pytest.mark.parametrize(
    "override",
    [{}, {"agent": {"kind": "Deployment"}}, EVERYTHING],
    ids=["default", "agent-deployment", "everything"],
)
def test_security_context_fields_sit_at_their_own_scope(
    chart: helm_python.Chart, override: Mapping[str, Any]
) -> None:
    pods = list(pod_templates(render(chart, with_required(override))))
    assert len(pods) == 3
    for name, pod in pods:
        scope = pod["securityContext"]
        assert not CONTAINER_ONLY & scope.keys(), name
        assert scope["runAsNonRoot"] is True, name
        assert scope["fsGroup"] == scope["runAsUser"] == scope["runAsGroup"], name
        assert scope["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        inits = pod.get("initContainers", [])
        for each in pod["containers"] + inits:
            context = each["securityContext"]
            assert not POD_ONLY & context.keys(), (name, each["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, each["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, each["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, each["name"])
            allowed = {"CHOWN", "FOWNER"} if each in inits else set()
            assert set(context["capabilities"].get("add", [])) <= allowed, each["name"]


def test_strict_validation_catches_a_container_field_at_pod_scope(chart: helm_python.Chart) -> None:
    deployment = one(render(chart, with_required()), "Deployment", SERVER)
    deployment["spec"]["template"]["spec"]["securityContext"]["readOnlyRootFilesystem"] = True
    with pytest.raises(jsonschema.ValidationError):
        validate(deployment)


# --------------------------------------------------------------------------- Done-when 8


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "everything"])
def test_helm_lint_reports_no_warning_or_error(values: dict[str, Any] | None) -> None:
    report = helm_python.lint(
        CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0"
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


# --------------------------------------------------------------------------- Done-when 9


def rules(chart: helm_python.Chart) -> list[dict[str, Any]]:
    found = render(chart, with_required({"metrics": {"prometheusRule": {"enabled": True}}}))
    group = one(found, "PrometheusRule")["spec"]["groups"]
    return [rule for g in group for rule in g["rules"]]


def test_alert_rules_use_only_metrics_and_labels_the_server_exports(
    chart: helm_python.Chart,
) -> None:
    exported = exported_metrics()
    assert "certctl_job_transitions_total" in exported
    alerts = {rule["alert"]: rule["expr"] for rule in rules(chart)}
    required = {
        "CertctlCertificateExpiring",
        "CertctlRenewalFailing",
        "CertctlAgentOffline",
        "CertctlDeployRollbacks",
    }
    assert required <= alerts.keys()
    for alert, expr in alerts.items():
        used = SELECTOR.findall(expr)
        assert used, f"{alert} references no certctl metric"
        for metric, matchers in used:
            assert metric in exported, f"{alert}: /metrics does not export {metric}"
            found = MATCHER.findall(matchers)
            assert ("job", "=", SERVER) in found, f"{alert}: {metric} is not this release's"
            for label, op, value in found:
                assert label in exported[metric] | {"job"}, f"{alert}: {metric} has no {label}"
                allowed = label_values().get((metric, label))
                if allowed is not None:
                    wanted = value.split("|") if op == "=~" else [value]
                    assert set(wanted) <= allowed, f"{alert}: {metric}{{{label}}} is never {value}"
        for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in (item.strip() for item in grouping.split(",")):
                assert all(label in exported[m] for m, _ in used), f"{alert}: by ({label})"


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)"
)


def write_rules(chart: helm_python.Chart, path: Path, *, annotations: bool) -> None:
    kept = [
        r if annotations else {k: v for k, v in r.items() if k != "annotations"}
        for r in rules(chart)
    ]
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "certctl", "rules": kept}]}), encoding="utf-8"
    )


@needs_promtool
def test_promtool_accepts_the_rule_file(chart: helm_python.Chart, tmp_path: Path) -> None:
    write_rules(chart, tmp_path / "rules.yaml", annotations=True)
    checked = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules(chart))} rules found" in checked.stdout


@needs_promtool
def test_alerts_fire_on_this_release_series_only(chart: helm_python.Chart, tmp_path: Path) -> None:
    """Annotations are left out here: promtool would compare their rendered text too."""
    write_rules(chart, tmp_path / "rules.yaml", annotations=False)
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(promtool_suite(SERVER)), encoding="utf-8")
    ran = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(tmp_path / "tests.yaml")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


# --------------------------------------------------------------------------- the environment


def test_every_variable_the_chart_sets_is_a_certctl_setting(chart: helm_python.Chart) -> None:
    known = {spec.env for spec in config.SPECS.values()}
    pg_secret = {"postgresql": {"auth": {"password": "", "existingSecret": "pg"}}}
    for override in [{}, EVERYTHING, pg_secret, {"agent": {"kind": "Deployment"}}]:
        found = render(chart, with_required(override))
        set_names = set(one(found, "ConfigMap", SERVER)["data"])
        for _, pod in pod_templates(found):
            for each in pod["containers"]:
                if each["name"] in {"server", "agent"}:
                    set_names |= {e["name"] for e in each["env"]}
        # POSTGRES_PASSWORD only composes CERTCTL_DATABASE_URL (kubelet $(VAR) expansion).
        extra = {"POSTGRES_PASSWORD"} if override is pg_secret else set()
        assert set_names - known == extra


@pytest.mark.parametrize(
    ("override", "existing"),
    [
        ({}, {}),
        (EVERYTHING, {}),
        (
            {"postgresql": {"auth": {"password": "", "existingSecret": "pg"}}},
            {("pg", "password"): "pw-9"},
        ),
        (
            {
                "server": {
                    "auth": {"apiKeys": [], "existingSecret": "creds"},
                    "encryptionKey": {"value": "", "existingSecret": "creds"},
                    "bootstrapToken": {"value": "", "existingSecret": "creds"},
                },
                **NO_PG,
                "externalDatabase": {"existingSecret": "db"},
            },
            {
                ("creds", "api-keys"): "admin:" + "k" * 40 + ":admin",
                ("creds", "encryption-key"): "x" * 44,
                ("creds", "bootstrap-token"): "t" * 40,
                ("db", "database-url"): EXTERNAL_URL,
            },
        ),
    ],
    ids=["default", "everything", "postgresql-secret", "existing-secrets"],
)
def test_server_and_agent_accept_the_rendered_environment(
    chart: helm_python.Chart, override: Mapping[str, Any], existing: Mapping[tuple[str, str], str]
) -> None:
    found = render(chart, with_required(merge(override, {"server": {"database": {"maxConns": 7}}})))
    now = datetime.now(UTC)
    server = config.load(server_env(found, existing))
    config.validate(server, role=config.Role.SERVER, now=now)
    assert server.database_max_conns == 7
    assert server.server_host == "0.0.0.0"
    assert server.api_keys
    assert urlsplit(server.database_url or "").scheme == "postgresql"
    agent_pod = workload(found, "DaemonSet", AGENT)
    agent = config.load(
        container_env(found, container(agent_pod, "agent"), existing=existing, fields=FIELDS)
    )
    config.validate(agent, role=config.Role.AGENT, now=now)
    assert agent.server_url == f"https://{SERVER}:8443"
    assert agent.agent_bootstrap_token == server.agent_bootstrap_token
    assert agent.agent_name == "node-1"
    # Everything from the operator's Secrets: the chart has nothing to keep in its own.
    assert bool(by_kind(found, "Secret")) == (override.get("externalDatabase") is None)


def test_database_url_percent_encodes_the_password(chart: helm_python.Chart) -> None:
    password = "p@ss:w/rd+ %?#"
    found = render(chart, with_required({"postgresql": {"auth": {"password": password}}}))
    url = urlsplit(server_env(found)["CERTCTL_DATABASE_URL"])
    assert (url.hostname, url.port, url.path) == (POSTGRES, 5432, "/certctl")
    assert unquote(url.password or "") == password
    assert unquote(url.username or "") == "certctl"


# --------------------------------------------------------------------------- wiring


@pytest.mark.parametrize(
    "override",
    [
        {},
        EVERYTHING,
        merge(EVERYTHING, merge(NO_PG, {"externalDatabase": {"url": EXTERNAL_URL}})),
        {"agent": {"kind": "Deployment"}, "rbac": {"create": True}, "ingress": {"enabled": True}},
    ],
    ids=["default", "everything", "external-database", "agent-deployment"],
)
def test_every_reference_resolves(chart: helm_python.Chart, override: Mapping[str, Any]) -> None:
    found = render(chart, with_required(override))
    assert unresolved(found, {"certctl-server-tls", "certctl-ca"}) == []
    # The checker itself: a selector no pod carries, and a Secret nobody provides.
    service = one(found, "Service", SERVER)
    service["spec"]["selector"]["app.kubernetes.io/component"] = "nothing"
    assert set(unresolved(found, {"certctl-ca"})) == {
        f"Service/{SERVER} selects []",
        *[f"{n} mounts a missing secret certctl-server-tls" for n in (SERVER, AGENT)],
    }


def test_network_policies_allow_agents_postgresql_dns_and_the_extras(
    chart: helm_python.Chart,
) -> None:
    extra_in = {"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]}
    extra_out = {"ports": [{"protocol": "TCP", "port": 443}]}
    values = merge(
        EVERYTHING,
        {
            "networkPolicy": {
                "extraIngress": [extra_in],
                "extraEgress": [extra_out],
                "agent": {"extraEgress": [extra_out]},
            }
        },
    )
    found = render(chart, with_required(values))
    dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    server, agent, postgres = (
        one(found, "NetworkPolicy", n)["spec"] for n in (SERVER, AGENT, POSTGRES)
    )
    assert server["ingress"][0]["ports"] == [{"protocol": "TCP", "port": "https"}]
    assert server["ingress"][1:] == [extra_in]
    assert server["egress"][0] == dns
    assert server["egress"][1]["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert server["egress"][2:] == [extra_out]
    assert agent["ingress"] == []
    assert agent["egress"][0] == dns
    assert agent["egress"][1]["ports"] == [{"protocol": "TCP", "port": 8443}]
    assert agent["egress"][2:] == [extra_out]
    assert postgres["egress"] == []
    assert postgres["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]


def test_agent_kinds(chart: helm_python.Chart) -> None:
    daemon = workload(render(chart, with_required()), "DaemonSet", AGENT)
    assert daemon["volumes"][0]["hostPath"]["path"] == "/var/lib/certctl-agent"
    assert [c["name"] for c in daemon["initContainers"]] == ["state-permissions"]
    found = render(chart, with_required({"agent": {"kind": "Deployment"}}))
    deployment = one(found, "Deployment", AGENT)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == f"{AGENT}-state"
    env = container_env(found, container(pod, "agent"), fields=FIELDS)
    assert env["CERTCTL_AGENT_NAME"] == FIELDS["metadata.name"]
    assert not by_kind(render(chart, with_required({"agent": {"enabled": False}})), "DaemonSet")


def test_rbac_is_opt_in_and_grants_nothing_by_default(chart: helm_python.Chart) -> None:
    assert not by_kind(render(chart, with_required()), "Role")
    found = render(chart, with_required({"rbac": {"create": True}}))
    assert one(found, "Role")["rules"] == []
    assert one(found, "RoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]


# --------------------------------------------------------------------------- the README


def test_every_set_key_in_the_readme_is_a_values_key(chart: helm_python.Chart) -> None:
    keys = [e.split("=", 1)[0] for _, block in BLOCKS for e in set_expressions(block)]
    assert len(keys) > 10
    assert [k for k in keys if not has_path(chart.values, k)] == []


def test_readme_install_commands_render(chart: helm_python.Chart) -> None:
    installs = [
        b
        for _, b in BLOCKS
        if re.search(r"helm (install|upgrade --install) certctl deploy/helm/certctl", b)
    ]
    assert len(installs) == 2
    for block in installs:
        values = helm_python.parse_set_string(",".join(set_expressions(block)))
        assert ("Deployment", SERVER) in names(render(chart, values))


def test_values_table_covers_values_yaml(chart: helm_python.Chart) -> None:
    table = re.findall(r"^\| `([^`]+)` \|", readme_section("Values"), re.MULTILINE)
    assert [k for k in table if not has_path(chart.values, k)] == []
    uncovered = [
        p
        for p in leaf_paths(chart.values)
        if not any(p == k or p.startswith(f"{k}.") for k in table)
    ]
    assert uncovered == []


def test_readme_postgresql_password_rotation_is_non_destructive(chart: helm_python.Chart) -> None:
    text = readme_section("Rotating the PostgreSQL password")
    assert "only when it initialises an empty data" in text
    assert "Do not delete the PVC" in text
    found = chart.render(with_required(), name="certctl", namespace="certctl")
    statefulset = next(
        d for d in yaml.safe_load_all(found["certctl/templates/postgresql-statefulset.yaml"])
    )
    user = chart.values["postgresql"]["auth"]["username"]
    assert f"exec -it {statefulset['metadata']['name']}-0 --" in text
    assert f"psql -U {user} -d {chart.values['postgresql']['auth']['database']}" in text
    assert f"ALTER USER {user} PASSWORD '<new password>'" in text

    # Step 3's claim: a new chart-managed password rolls the server (its checksum changes).
    def checksum(password: str) -> str:
        values = with_required({"postgresql": {"auth": {"password": password}}})
        pod = one(render(chart, values), "Deployment", SERVER)["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/secret"])

    assert checksum("pg-secret-1") != checksum("pg-secret-2")
    templates = " ".join(t["data"] for t in chart.templates)
    assert "randAlphaNum" not in templates  # a generated password would change on upgrade


def test_readme_api_key_rotation_keeps_both_keys_valid(chart: helm_python.Chart) -> None:
    text = readme_section("API keys and their zero-downtime rotation")
    block = next(b for lang, b in BLOCKS if lang == "yaml" and b in text)
    rotation = yaml.safe_load(block.replace("<old key>", "o" * 40).replace("<new key>", "n" * 40))
    keys = rotation["server"]["auth"]["apiKeys"]
    assert len(keys) == 2
    found = render(chart, merge(REQUIRED, rotation))
    settings = config.load(server_env(found))
    config.validate(settings, role=config.Role.SERVER, now=datetime.now(UTC))
    assert [(k.name, k.key) for k in settings.api_keys] == [("ci", "o" * 40), ("ci", "n" * 40)]
    single = merge(rotation, {"server": {"auth": {"apiKeys": keys[:1]}}})
    annotations = [
        one(render(chart, v), "Deployment", SERVER)["spec"]["template"]["metadata"]["annotations"]
        for v in (merge(REQUIRED, single), merge(REQUIRED, rotation))
    ]
    assert annotations[0]["checksum/secret"] != annotations[1]["checksum/secret"]
