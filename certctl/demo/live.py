"""What the demo shows while it runs: a live rich table on a terminal, plain lines otherwise.

Each refresh is one snapshot of the REST API (summary, certificates, jobs, agents), so the
view shows exactly what an operator's ``curl`` would get at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from certctl.demo.api import Api
from certctl.demo.seed import Inventory

STATUS_STYLE: Mapping[str, str] = {
    "Active": "green",
    "Completed": "green",
    "Online": "green",
    "Pending": "yellow",
    "AwaitingCSR": "yellow",
    "Running": "cyan",
    "RenewalInProgress": "cyan",
    "Expiring": "bold yellow",
    "Expired": "bold red",
    "Failed": "bold red",
    "Offline": "red",
    "Cancelled": "dim",
    "Revoked": "magenta",
    "Archived": "dim",
}
CERT_STATUSES = (
    "Pending",
    "Active",
    "RenewalInProgress",
    "Expiring",
    "Expired",
    "Failed",
    "Revoked",
    "Archived",
)
JOB_TYPES = ("Issuance", "Renewal", "Deployment")
JOB_STATUSES = ("Pending", "AwaitingCSR", "Running", "Completed", "Failed", "Cancelled")
JOB_COLUMNS: Mapping[str, str] = {
    "Pending": "pending",
    "AwaitingCSR": "await CSR",
    "Running": "running",
    "Completed": "done",
    "Failed": "failed",
    "Cancelled": "cancelled",
}
SOON = timedelta(days=7)
RECENT_JOBS = 8
CLOSEST = 6


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def span(delta: timedelta) -> str:
    """``3d 4h``, ``5h 12m``, ``42s``: two units at most, for narrow columns."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {seconds}s"
    return f"{sign}{seconds}s"


def clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


@dataclass(frozen=True)
class FleetState:
    summary: dict[str, Any]
    certificates: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    at: datetime

    @classmethod
    def take(cls, api: Api) -> FleetState:
        return cls(
            summary=api.get("/api/v1/stats/summary"),
            certificates=api.items("/api/v1/certificates", limit=1000),
            jobs=api.items("/api/v1/jobs", limit=1000),
            agents=api.items("/api/v1/agents"),
            at=datetime.now(UTC),
        )

    def certificate_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.summary["certificates_by_status"]
        return counts

    def job_counts(self, job_type: str) -> dict[str, int]:
        counts: dict[str, int] = self.summary["jobs_by_type_and_status"].get(job_type, {})
        return counts

    def settled(self) -> bool:
        """Every certificate issued and no job in flight: the first deploys are done."""
        counts = self.certificate_counts()
        return (
            self.summary["total_certificates"] > 0
            and not counts.get("Pending")
            and self.summary["active_jobs"] == 0
        )

    def closest_to_expiry(self, limit: int) -> list[dict[str, Any]]:
        issued = [c for c in self.certificates if c.get("expires_at")]
        return sorted(issued, key=lambda c: str(c["expires_at"]))[:limit]

    def recent_jobs(self, limit: int) -> list[dict[str, Any]]:
        return sorted(self.jobs, key=lambda j: str(j["status_changed_at"]), reverse=True)[:limit]


def _styled(value: str) -> Text:
    return Text(value, style=STATUS_STYLE.get(value, ""))


@dataclass
class View:
    inventory: Inventory
    url: str
    duration: float | None
    nginx_url: str | None = None
    notes: list[str] = field(default_factory=list)

    def _header(self, elapsed: float) -> Text:
        text = Text.assemble(
            ("certctl demo", "bold"), f"  {self.url}  running {clock(elapsed)}", style=""
        )
        if self.duration is not None:
            text.append(f"  stops in {clock(max(self.duration - elapsed, 0))}")
        text.append("  (Ctrl-C stops it)", style="dim")
        return text

    def _overview(self, snap: FleetState) -> Table:
        certs = Table(title="Certificates", title_justify="left", show_edge=False)
        certs.add_column("status")
        certs.add_column("count", justify="right")
        counts = snap.certificate_counts()
        for status in CERT_STATUSES:
            if counts.get(status):
                certs.add_row(_styled(status), str(counts[status]))
        certs.add_row(
            Text("expiring ≤ 30 d", style="bold"), str(snap.summary["expiring_within_30_days"])
        )

        jobs = Table(title="Jobs", title_justify="left", show_edge=False)
        jobs.add_column("type", no_wrap=True)
        for status, header in JOB_COLUMNS.items():
            jobs.add_column(header, justify="right", style=STATUS_STYLE.get(status, ""))
        for job_type in JOB_TYPES:
            row = snap.job_counts(job_type)
            jobs.add_row(job_type, *(str(row.get(s, "")) for s in JOB_COLUMNS))

        grid = Table.grid(padding=(0, 4))
        grid.add_row(certs, jobs)
        return grid

    def _agents(self, snap: FleetState) -> Text:
        text = Text("Agents: ", style="bold")
        for n, agent in enumerate(snap.agents):
            beat = _when(agent.get("last_heartbeat_at"))
            text.append(("   " if n else "") + f"{agent['name']} ", style="")
            text.append_text(_styled(agent["status"]))
            if beat is not None:
                text.append(f" (seen {span(snap.at - beat)} ago)", style="dim")
        verified = sum(1 for j in snap.jobs if j.get("verification_status") == "Success")
        if verified:
            text.append(f"   TLS-verified deploys: {verified}", style="")
        return text

    def _expiring(self, snap: FleetState) -> Table:
        table = Table(title="Closest to expiry", title_justify="left", show_edge=False)
        for column in ("certificate", "env", "status", "expires in", "last deployed"):
            table.add_column(column)
        for cert in snap.closest_to_expiry(CLOSEST):
            expires = _when(cert["expires_at"])
            deployed = _when(cert.get("last_deployment_at"))
            left = Text("—") if expires is None else Text(span(expires - snap.at))
            if expires is not None and expires - snap.at < SOON:
                left.stylize("bold yellow")
            table.add_row(
                cert["common_name"],
                cert.get("environment") or "",
                _styled(cert["status"]),
                left,
                "—" if deployed is None else f"{span(snap.at - deployed)} ago",
            )
        return table

    def _jobs(self, snap: FleetState) -> Table:
        certs = {c["id"]: c["common_name"] for c in snap.certificates}
        table = Table(title="Recent jobs", title_justify="left", show_edge=False)
        for column in ("changed", "type", "status", "certificate", "where", "detail"):
            table.add_column(
                column,
                overflow="ellipsis",
                no_wrap=True,
                min_width=22 if column == "certificate" else None,
            )
        for job in snap.recent_jobs(RECENT_JOBS):
            changed = _when(job["status_changed_at"])
            target = job.get("target_id")
            if target:
                where = self.inventory.targets.get(target, target)
            else:
                agent = self.inventory.agent_of.get(job["certificate_id"], "agent")
                where = f"{agent} (key, CSR)"
            detail = job.get("last_error") or ""
            if not detail and job.get("verification_status"):
                detail = f"verify {job['verification_status']}"
            table.add_row(
                "—" if changed is None else f"{span(snap.at - changed)} ago",
                job["type"],
                _styled(job["status"]),
                certs.get(job["certificate_id"], job["certificate_id"]),
                where,
                detail,
            )
        return table

    def render(self, snap: FleetState, elapsed: float) -> RenderableType:
        parts: list[RenderableType] = [
            self._header(elapsed),
            self._overview(snap),
            self._agents(snap),
            self._expiring(snap),
            self._jobs(snap),
        ]
        footer = list(self.notes)
        if self.nginx_url:
            footer.append(f"NGINX target serving on {self.nginx_url}")
        parts.extend(Text(note, style="dim") for note in footer)
        return Group(*parts)

    def line(self, snap: FleetState, elapsed: float) -> str:
        """One plain line for logs: certificate statuses, job progress, deployments."""
        counts = snap.certificate_counts()
        certs = ", ".join(f"{counts[s]} {s}" for s in CERT_STATUSES if counts.get(s)) or "none"
        deploys = snap.job_counts("Deployment")
        keys = _merge(snap.job_counts("Issuance"), snap.job_counts("Renewal"))
        online = sum(1 for a in snap.agents if a["status"] == "Online")
        return (
            f"[{clock(elapsed)}] certificates: {certs} "
            f"({snap.summary['expiring_within_30_days']} expiring within 30 days); "
            f"issuance/renewal jobs: {_fmt(keys)}; deployments: {_fmt(deploys)}; "
            f"agents online: {online}/{len(snap.agents)}"
        )


def _merge(*counts: Mapping[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for one in counts:
        for status, n in one.items():
            merged[status] = merged.get(status, 0) + n
    return merged


def _fmt(counts: Mapping[str, int]) -> str:
    shown = [f"{counts[s]} {s}" for s in JOB_STATUSES if counts.get(s)]
    return ", ".join(shown) or "none"


def summarize(snap: FleetState) -> Sequence[str]:
    """The closing lines: what was issued and deployed."""
    counts = snap.certificate_counts()
    deploys = snap.job_counts("Deployment")
    renewals = snap.job_counts("Renewal")
    certs = ", ".join(f"{counts[s]} {s}" for s in CERT_STATUSES if counts.get(s)) or "none"
    return (
        f"certificates: {snap.summary['total_certificates']} ({certs})",
        f"deployments: {deploys.get('Completed', 0)} Completed, {deploys.get('Failed', 0)} Failed"
        + (f", {deploys['Running']} still Running" if deploys.get("Running") else ""),
        f"renewals: {renewals.get('Completed', 0)} Completed",
    )
