"""Storage figures on 100,000 certificates in an embedded PostgreSQL.

Prints the due-renewal query time (target <= 200 ms for a page of 1,000), the keyset walk
rate over every certificate (target >= 20,000 rows/s), and what the trio-asyncio bridge
costs: one ``PostgresStore.get_certificate`` against the same SQL on raw asyncpg under
plain asyncio. The baseline runs in a child process that never imports trio-asyncio,
because trio-asyncio replaces asyncio's event loop policy in any process that imports it.

Certificates are bulk-loaded with COPY: 90-day versions issued evenly over the last 90
days under a 30-day window, so about a third are due for renewal.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import trio
import trio_asyncio

from certctl.core.model import (
    CertificateStatus,
    CertificateVersion,
    Issuer,
    IssuerType,
    KeyAlgorithm,
    ManagedCertificate,
    Owner,
    RenewalPolicy,
)
from certctl.core.renewal import renewal_due_at
from certctl.store.embedded import EmbeddedPostgres
from certctl.store.migrate import apply_migrations
from certctl.store.rows import CERTIFICATES, ISSUERS, OWNERS, POLICIES, VERSIONS

CERTIFICATES_TOTAL = 100_000
PAGE = 1_000
LOOKUPS = 3_000
NOW = datetime(2030, 6, 1, tzinfo=UTC)
POLICY = RenewalPolicy("policy-1", "default")

_BASELINE = """
import asyncio, json, sys, time
import asyncpg
from certctl.store.rows import CERTIFICATES
from certctl.services.rules import DOMAIN_RULES

async def _keep_session(conn):
    pass

async def _init_connection(conn):
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads, format="text"
    )

async def main():
    job = json.load(sys.stdin)
    sql, ids = job["sql"], job["ids"]
    conn = await asyncpg.connect(job["dsn"])
    pool = await asyncpg.create_pool(
        job["dsn"], min_size=1, max_size=1, init=_init_connection, reset=_keep_session
    )
    for i in ids[:300]:
        await conn.fetchrow(sql, i)

    t0 = time.perf_counter()
    for i in ids:
        await conn.fetchrow(sql, i)
    raw = (time.perf_counter() - t0) / len(ids)

    t0 = time.perf_counter()
    for i in ids:
        async with pool.acquire() as pooled:
            CERTIFICATES.decode(await pooled.fetchrow(sql, i))
    pooled = (time.perf_counter() - t0) / len(ids)
    print(json.dumps({"raw": raw, "pooled": pooled}))

asyncio.run(main())
"""
"""Plain asyncio: a bare ``fetchrow`` on one connection, then the same work the store does
minus the bridge (pool acquire and row decoding)."""


def _copy_rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Encoded rows as COPY records (jsonb travels as text on a codec-free connection)."""
    columns = list(rows[0])
    return [
        tuple(json.dumps(r[c]) if isinstance(r[c], dict) else r[c] for c in columns) for r in rows
    ]


def _dataset() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    certs, versions = [], []
    step = timedelta(days=90) / CERTIFICATES_TOTAL
    for i in range(CERTIFICATES_TOTAL):
        cert_id = f"cert-{i:06d}"
        issued = NOW - timedelta(days=90) + i * step
        version = CertificateVersion(
            f"version-{i:06d}",
            cert_id,
            serial_number=f"{i:032x}",
            not_before=issued,
            not_after=issued + timedelta(days=90),
            fingerprint_sha256=f"{i:064x}",
            pem_chain="-----BEGIN CERTIFICATE-----\n" + "A" * 900 + "\n-----END CERTIFICATE-----\n",
            key_algorithm=KeyAlgorithm.ECDSA,
            key_size=256,
            created_at=issued,
        )
        cert = ManagedCertificate(
            cert_id,
            f"service-{i:06d}",
            f"service-{i:06d}.example.com",
            owner_id="owner-1",
            issuer_id="issuer-1",
            renewal_policy_id=POLICY.id,
            created_at=issued - timedelta(minutes=5),
            updated_at=issued,
            sans=(f"service-{i:06d}.example.com",),
            environment="production",
            status=CertificateStatus.ACTIVE,
            expires_at=version.not_after,
            tags={"tier": str(i % 3)},
            last_renewal_at=issued,
        )
        due = renewal_due_at(version.not_before, version.not_after, POLICY)
        certs.append({**CERTIFICATES.encode(cert), "renewal_due_at": due})
        versions.append(VERSIONS.encode(version))
    return certs, versions


async def _load(dsn: str) -> float:
    certs, versions = _dataset()
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
        reference = [
            (OWNERS.name, [OWNERS.encode(Owner("owner-1", "Ops", "ops@example.com"))]),
            (ISSUERS.name, [ISSUERS.encode(Issuer("issuer-1", "local", IssuerType.LOCAL_CA))]),
            (POLICIES.name, [POLICIES.encode(POLICY)]),
        ]
        for name, rows in reference:
            await conn.copy_records_to_table(name, records=_copy_rows(rows), columns=list(rows[0]))
        start = time.perf_counter()
        for name, rows in ((CERTIFICATES.name, certs), (VERSIONS.name, versions)):
            await conn.copy_records_to_table(name, records=_copy_rows(rows), columns=list(rows[0]))
        loaded = time.perf_counter() - start
        await conn.execute("ANALYZE")
        return loaded
    finally:
        await conn.close()


def _baseline(dsn: str, sql: str, ids: list[str]) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _BASELINE],
        input=json.dumps({"dsn": dsn, "sql": sql, "ids": ids}),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


async def _store_figures(dsn: str, ids: list[str]) -> dict[str, Any]:
    from certctl.services.rules import DOMAIN_RULES
    from certctl.store.postgres import open_postgres_store

    figures: dict[str, Any] = {}
    async with trio_asyncio.open_loop() as loop:

        async def nothing() -> None:
            return None

        cross = trio_asyncio.aio_as_trio(nothing, loop=loop)
        start = time.perf_counter()
        for _ in range(LOOKUPS):
            await cross()
        figures["crossing"] = (time.perf_counter() - start) / LOOKUPS
    async with open_postgres_store(dsn, DOMAIN_RULES, max_size=4) as store:
        for i in ids[:300]:
            await store.get_certificate(i)
        start = time.perf_counter()
        for i in ids:
            await store.get_certificate(i)
        figures["store_get"] = (time.perf_counter() - start) / len(ids)

        samples = []
        for _ in range(7):
            start = time.perf_counter()
            page = await store.due_renewals(NOW, limit=PAGE)
            samples.append(time.perf_counter() - start)
        figures["due_page"] = statistics.median(samples)
        figures["due_page_rows"] = len(page.items)

        start, due_rows, cursor = time.perf_counter(), 0, None
        while True:
            due = await store.due_renewals(NOW, limit=PAGE, cursor=cursor)
            due_rows += len(due.items)
            if due.next_cursor is None:
                break
            cursor = due.next_cursor
        figures["due_walk"] = (due_rows, time.perf_counter() - start)

        start, rows, cursor = time.perf_counter(), 0, None
        while True:
            listed = await store.list_certificates(limit=PAGE, cursor=cursor)
            rows += len(listed.items)
            if listed.next_cursor is None:
                break
            cursor = listed.next_cursor
        figures["walk"] = (rows, time.perf_counter() - start)
    return figures


def run() -> None:
    from certctl.store._sql import select_from

    root = Path(tempfile.mkdtemp(prefix="certctl-bench-store-"))
    embedded = EmbeddedPostgres.start(root)
    try:
        dsn = embedded.dsn("bench")

        async def create() -> None:
            conn = await asyncpg.connect(embedded.dsn())
            await conn.execute("CREATE DATABASE bench")
            await conn.close()

        asyncio.run(create())
        loaded = asyncio.run(_load(dsn))
        print(
            f"loaded {CERTIFICATES_TOTAL:,} certificates and versions with COPY in {loaded:.1f} s"
        )

        step = CERTIFICATES_TOTAL // LOOKUPS
        ids = [f"cert-{i:06d}" for i in range(0, CERTIFICATES_TOTAL, step)]
        sql = f"{select_from(CERTIFICATES)} WHERE c.id = $1"
        figures = trio.run(_store_figures, dsn, ids)
        baseline = _baseline(dsn, sql, ids)
    finally:
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)

    due_rows, due_seconds = figures["due_walk"]
    walked, walk_seconds = figures["walk"]
    store_get, raw, pooled = figures["store_get"], baseline["raw"], baseline["pooled"]
    print(
        f"due-renewal query: {figures['due_page'] * 1000:.1f} ms for a page of "
        f"{figures['due_page_rows']:,} due certificates with their latest versions "
        "(median of 7; target <= 200 ms)"
    )
    print(
        f"due-renewal walk: all {due_rows:,} due certificates in {due_seconds:.2f} s "
        f"({due_rows / due_seconds:,.0f} rows/s)"
    )
    print(
        f"keyset walk: {walked:,} certificates in pages of {PAGE:,} in {walk_seconds:.2f} s = "
        f"{walked / walk_seconds:,.0f} rows/s (target >= 20,000 rows/s)"
    )
    print(
        f"get_certificate: raw asyncpg fetchrow on asyncio {raw * 1e6:.0f} us; "
        f"asyncio + pool + decode {pooled * 1e6:.0f} us; PostgresStore through trio-asyncio "
        f"{store_get * 1e6:.0f} us"
    )
    print(
        f"bridge overhead: PostgresStore / raw asyncpg = {store_get / raw:.2f}x; "
        f"PostgresStore / same work on asyncio = {store_get / pooled:.2f}x; one crossing "
        f"with no I/O costs {figures['crossing'] * 1e6:.0f} us, the rest is asyncpg's socket "
        "I/O scheduled through trio-asyncio"
    )
