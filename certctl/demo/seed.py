"""The demo's inventory, created through the REST API like an operator would.

Three teams with an owner each, three environments, and 32 certificates on three
agents. Production certificates come from the default local CA (90-day leaves), staging
ones from a CA issuing 14-day leaves and development ones (plus one production VPN
certificate) from a CA issuing 2-day leaves under a one-day renewal window: those are the
certificates close to expiry. Two service-mesh certificates live ten minutes (a profile
caps their lifetime), so a longer run shows the scheduler renewing them on its own every
few minutes. Every certificate gets targets on one agent only (the agent
that generates its key must be the one deploying it): a File target of its own under
``<demo dir>/targets/<agent>/``, and for the two storefront sites an NGINX target when the
demo runs NGINX.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certctl.demo.api import Api
from certctl.demo.nginx import DemoNginx

AGENTS = ("web-01", "api-01", "ops-01")


@dataclass(frozen=True, slots=True)
class TeamSpec:
    id: str
    name: str
    description: str
    owner_id: str
    owner_name: str
    owner_email: str


TEAMS = (
    TeamSpec(
        "team-storefront",
        "Storefront",
        "Public web shop and marketing sites",
        "owner-carol",
        "Carol Diaz",
        "carol@example.com",
    ),
    TeamSpec(
        "team-payments",
        "Payments",
        "Payment APIs and internal ledgers",
        "owner-bob",
        "Bob Chen",
        "bob@example.com",
    ),
    TeamSpec(
        "team-platform",
        "Platform",
        "Observability, CI and shared infrastructure",
        "owner-alice",
        "Alice Novak",
        "alice@example.com",
    ),
)

# Lifetime labels: the issuer that signs them and the renewal policy that renews them.
ISSUERS: Mapping[str, tuple[str, str]] = {
    "90d": ("iss-local", "rp-default"),  # both seeded by the server itself
    "14d": ("iss-14d", "rp-default"),
    "2d": ("iss-2d", "rp-short"),
    "10m": ("iss-local", "rp-short"),  # capped to ten minutes by the profile below
}
PROFILES: Mapping[str, str] = {"10m": "prof-workload"}
NEW_PROFILES: tuple[dict[str, Any], ...] = (
    {
        "id": "prof-workload",
        "name": "Service-mesh workload (10-minute leaves)",
        "max_ttl_seconds": 600,
        "allow_short_lived": True,
    },
)
NEW_ISSUERS: tuple[dict[str, Any], ...] = (
    {
        "id": "iss-14d",
        "name": "Local CA, 14-day leaves",
        "type": "LocalCA",
        "config": {"common_name": "certctl demo 14-day CA", "leaf_validity_days": 14},
    },
    {
        "id": "iss-2d",
        "name": "Local CA, 2-day leaves",
        "type": "LocalCA",
        "config": {"common_name": "certctl demo short-lived CA", "leaf_validity_days": 2},
    },
)
SHORT_POLICY: dict[str, Any] = {
    "id": "rp-short",
    "name": "Short-lived (1-day window)",
    "renewal_window_days": 1,
    "alert_thresholds_days": [7, 3, 1, 0],
    "retry_interval_seconds": 60,
}


@dataclass(frozen=True, slots=True)
class CertSpec:
    common_name: str
    agent: str
    team: str
    environment: str
    lifetime: str
    sans: tuple[str, ...] = ()
    nginx_site: str | None = None
    files: bool = True


def _spec(
    cn: str, agent: int, env: str, lifetime: str, *sans: str, nginx: str | None = None
) -> CertSpec:
    team = TEAMS[agent].id
    return CertSpec(cn, AGENTS[agent], team, env, lifetime, (cn, *sans), nginx, nginx is None)


PROD, STAGING, DEV = "production", "staging", "dev"
CERTIFICATES = (
    # web-01: the storefront
    CertSpec("www.example.com", "web-01", "team-storefront", PROD, "90d",
             ("www.example.com", "example.com"), "www", files=True),
    _spec("shop.example.com", 0, PROD, "90d", nginx="shop"),
    _spec("static.example.com", 0, PROD, "90d"),
    _spec("images.example.com", 0, PROD, "14d"),
    _spec("blog.example.com", 0, PROD, "90d"),
    _spec("search.example.com", 0, PROD, "90d"),
    _spec("www.staging.example.com", 0, STAGING, "14d"),
    _spec("shop.staging.example.com", 0, STAGING, "14d"),
    _spec("www.dev.example.com", 0, DEV, "2d"),
    _spec("preview.dev.example.com", 0, DEV, "2d"),
    # api-01: payments
    _spec("api.example.com", 1, PROD, "90d"),
    _spec("pay.example.com", 1, PROD, "90d"),
    _spec("checkout.example.com", 1, PROD, "90d"),
    _spec("webhooks.example.com", 1, PROD, "14d"),
    _spec("ledger.internal.example.com", 1, PROD, "90d"),
    _spec("fraud.internal.example.com", 1, PROD, "14d"),
    _spec("api.staging.example.com", 1, STAGING, "14d"),
    _spec("pay.staging.example.com", 1, STAGING, "14d"),
    _spec("api.dev.example.com", 1, DEV, "2d"),
    _spec("sandbox.pay.example.com", 1, DEV, "2d"),
    # ops-01: the platform
    _spec("grafana.internal.example.com", 2, PROD, "90d"),
    _spec("prometheus.internal.example.com", 2, PROD, "90d"),
    _spec("vault.internal.example.com", 2, PROD, "14d"),
    _spec("registry.internal.example.com", 2, PROD, "90d"),
    _spec("ci.internal.example.com", 2, PROD, "90d"),
    _spec("mail.example.com", 2, PROD, "90d", "smtp.example.com", "imap.example.com"),
    _spec("vpn.example.com", 2, PROD, "2d"),
    _spec("mq.internal.example.com", 2, STAGING, "14d"),
    _spec("logs.internal.example.com", 2, STAGING, "14d"),
    _spec("kafka.dev.example.com", 2, DEV, "2d"),
    _spec("jobs.mesh.example.com", 2, PROD, "10m"),
    _spec("events.mesh.example.com", 2, PROD, "10m"),
)  # fmt: skip


@dataclass
class Inventory:
    """What the seed created: names the live view shows instead of ids."""

    certificates: dict[str, str] = field(default_factory=dict)  # id -> common name
    lifetimes: dict[str, str] = field(default_factory=dict)  # id -> "90d", "2d", ...
    agent_of: dict[str, str] = field(default_factory=dict)  # certificate id -> agent name
    targets: dict[str, str] = field(default_factory=dict)  # id -> "agent/target name"
    agents: dict[str, str] = field(default_factory=dict)  # id -> name


def _slug(name: str) -> str:
    return name.replace(".", "-")


def seed(
    api: Api, agent_ids: Mapping[str, str], targets_dir: Path, nginx: DemoNginx | None
) -> Inventory:
    """Create the inventory; ``agent_ids`` maps each of ``AGENTS`` to its registered id."""
    inventory = Inventory(agents={agent_id: name for name, agent_id in agent_ids.items()})
    for team in TEAMS:
        api.post(
            "/api/v1/teams", {"id": team.id, "name": team.name, "description": team.description}
        )
        api.post(
            "/api/v1/owners",
            {
                "id": team.owner_id,
                "name": team.owner_name,
                "email": team.owner_email,
                "team_id": team.id,
            },
        )
    for issuer in NEW_ISSUERS:
        api.post("/api/v1/issuers", issuer)
    for profile in NEW_PROFILES:
        api.post("/api/v1/profiles", profile)
    api.post("/api/v1/renewal-policies", SHORT_POLICY)
    owners = {team.id: team.owner_id for team in TEAMS}
    for spec in CERTIFICATES:
        agent_id = agent_ids[spec.agent]
        target_ids = []
        if spec.nginx_site is not None and nginx is not None:
            target = api.post(
                "/api/v1/targets",
                {
                    "name": f"nginx-{spec.nginx_site}",
                    "type": "NGINX",
                    "agent_id": agent_id,
                    "config": nginx.target_config(spec.nginx_site),
                },
            )
            target_ids.append(target["id"])
            inventory.targets[target["id"]] = f"{spec.agent}/nginx-{spec.nginx_site}"
        if spec.files or nginx is None or spec.nginx_site is None:
            directory = targets_dir / spec.agent / _slug(spec.common_name)
            directory.mkdir(parents=True, exist_ok=True)
            name = f"files-{_slug(spec.common_name)}"
            target = api.post(
                "/api/v1/targets",
                {
                    "name": name,
                    "type": "File",
                    "agent_id": agent_id,
                    "config": {
                        "cert_path": str(directory / "cert.pem"),
                        "key_path": str(directory / "key.pem"),
                        "chain_path": str(directory / "chain.pem"),
                    },
                },
            )
            target_ids.append(target["id"])
            inventory.targets[target["id"]] = f"{spec.agent}/{name}"
        issuer_id, policy_id = ISSUERS[spec.lifetime]
        created = api.post(
            "/api/v1/certificates",
            {
                "name": spec.common_name,
                "common_name": spec.common_name,
                "sans": list(spec.sans),
                "owner_id": owners[spec.team],
                "team_id": spec.team,
                "environment": spec.environment,
                "issuer_id": issuer_id,
                "renewal_policy_id": policy_id,
                "certificate_profile_id": PROFILES.get(spec.lifetime),
                "tags": {"lifetime": spec.lifetime, "agent": spec.agent},
                "target_ids": target_ids,
            },
        )
        cert_id = created["certificate"]["id"]
        inventory.certificates[cert_id] = spec.common_name
        inventory.lifetimes[cert_id] = spec.lifetime
        inventory.agent_of[cert_id] = spec.agent
    return inventory
