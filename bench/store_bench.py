"""Benchmark of the credential store: bulk insert, then find_x509 latency on the connect path.

    .venv/bin/python -m bench.store_bench --devices 1000000 --backend both
    .venv/bin/python -m bench.store_bench --devices 2000 --backend sqlite     # smoke, seconds

Rows are fake but well formed: random 32-byte SPKI SHA-256 hex keys and only the columns the
lookup needs, because generating a million real certificates would take hours and the lookup
does not look inside the PEM. They are inserted with SQLAlchemy Core executemany, in batches,
into the schema made by the real Alembic migrations (and without change-feed rows: a bulk
import is not what the feed is for). Lookups go through ``SqlCredentialStore.find_x509``.
PostgreSQL runs in a database of its own, dropped afterwards; SQLite in a temporary file.
"""

import argparse
import asyncio
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import insert

from bench._report import machine_lines
from storage.engine import create_engine
from storage.migrate import upgrade
from storage.models import Base, new_id
from storage.sql import SqlCredentialStore

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
FULL_SIZE = 1_000_000
INSERT_TARGET_S = 120.0  # for FULL_SIZE devices; scaled linearly for other sizes
LOOKUP_P99_TARGET_MS = {"sqlite": 1.0, "postgres": 2.0}
RESULTS_DIR = Path(__file__).parent / "results"
TABLES = Base.metadata.tables


@dataclass(frozen=True)
class Result:
    backend: str
    devices: int
    insert_s: float
    lookups: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms: float  # this process's CPU time per lookup, driver threads included

    @property
    def insert_target_s(self) -> float:
        # Scaled to the size, with a floor for the fixed costs (connections, ANALYZE) that
        # would otherwise fail a smoke run of a few thousand devices.
        return max(5.0, INSERT_TARGET_S * self.devices / FULL_SIZE)

    @property
    def p99_target_ms(self) -> float:
        return LOOKUP_P99_TARGET_MS[self.backend]

    @property
    def insert_ok(self) -> bool:
        return self.insert_s <= self.insert_target_s

    @property
    def lookup_ok(self) -> bool:
        return self.p99_ms <= self.p99_target_ms


# --- databases ----------------------------------------------------------------------------


@asynccontextmanager
async def database(backend: str, admin_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one run; removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="nanoiot-bench-") as directory:
            url = f"sqlite+aiosqlite:///{directory}/bench.db"
            await upgrade(url)
            yield url
        return
    name = f"nanoiot_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin_dsn.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
            await upgrade(f"{url}/{name}")
            yield f"{url}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# --- the two measurements -----------------------------------------------------------------


def _batch(start: int, size: int, now: datetime) -> tuple[list[dict[str, Any]], list[str]]:
    devices: list[dict[str, Any]] = []
    credentials: list[dict[str, Any]] = []
    keys = [os.urandom(32).hex() for _ in range(size)]
    for offset, key in enumerate(keys):
        device_id = new_id()
        devices.append(
            {
                "id": device_id,
                "name": f"bench-{start + offset:08d}",
                "type": "default",
                "label": "",
                "created_at": now,
                "enabled": True,
            }
        )
        credentials.append(
            {
                "id": new_id(),
                "device_id": device_id,
                "type": "X509_CERTIFICATE",
                "status": "active",
                "created_at": now,
                "spki_sha256": key,
                "application": False,
            }
        )
    return [*devices, *credentials], keys


async def bulk_insert(
    url: str, count: int, batch: int, sample: set[int], writers: int
) -> tuple[float, list[str]]:
    """Insert ``count`` devices with one X.509 credential each; returns seconds and sampled keys.

    ``writers`` connections insert batches side by side. PostgreSQL spends most of the time in
    the server (index updates and the foreign-key check of every credential), so two writers
    keep both of its cores busy; SQLite admits one writer at a time anyway.
    """
    engine = create_engine(url)
    now = datetime.now(UTC)
    sampled: list[str] = []
    starts = iter(range(0, count, batch))
    started = time.perf_counter()

    async def writer() -> None:
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                # A bulk import's own setting: a cache that holds the random SPKI index.
                await connection.exec_driver_sql("PRAGMA cache_size=-524288")
                await connection.commit()
            for start in starts:
                size = min(batch, count - start)
                rows, keys = _batch(start, size, now)
                async with connection.begin():
                    await connection.execute(insert(TABLES["devices"]), rows[:size])
                    await connection.execute(insert(TABLES["credentials"]), rows[size:])
                sampled.extend(key for i, key in enumerate(keys, start) if i in sample)
                if start // batch % 20 == 0:
                    print(f"  {start:>9,}  {time.perf_counter() - started:6.1f} s", flush=True)

    try:
        await asyncio.gather(*(writer() for _ in range(writers)))
        if engine.dialect.name == "postgresql":
            async with engine.begin() as connection:  # planner statistics, as autovacuum would
                await connection.exec_driver_sql("ANALYZE devices")
                await connection.exec_driver_sql("ANALYZE credentials")
    finally:
        await engine.dispose()
    return time.perf_counter() - started, sampled


async def lookups(url: str, keys: Sequence[str], warmup: int = 500) -> tuple[list[float], float]:
    """find_x509 latencies in milliseconds, one call after another (as connects arrive), and
    the CPU milliseconds per call: wall time minus CPU time is time lost waiting for a core."""
    store = await SqlCredentialStore.open(url)
    timings: list[float] = []
    try:
        for key in keys[:warmup]:
            await store.find_x509(key)
        cpu_started = time.process_time()
        for key in keys:
            started = time.perf_counter_ns()
            match = await store.find_x509(key)
            timings.append((time.perf_counter_ns() - started) / 1e6)
            if match is None:
                raise SystemExit(f"lookup of an inserted key {key} found nothing")
        cpu_ms = (time.process_time() - cpu_started) * 1000 / len(keys)
    finally:
        await store.close()
    return timings, cpu_ms


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


async def run(
    backend: str, devices: int, count: int, batch: int, writers: int, admin_dsn: str
) -> Result:
    print(f"{backend}: inserting {devices:,} devices with one X.509 credential each ...")
    sample = set(random.sample(range(devices), min(count, devices)))
    async with database(backend, admin_dsn) as url:
        insert_s, keys = await bulk_insert(url, devices, batch, sample, writers)
        random.shuffle(keys)
        # Repeat the sample if there are fewer devices than lookups.
        keys = (keys * (count // len(keys) + 1))[:count]
        print(f"{backend}: {count:,} find_x509 lookups ...")
        timings, cpu_ms = await lookups(url, keys)
        timings.sort()
    return Result(
        backend,
        devices,
        insert_s,
        count,
        percentile(timings, 0.5),
        percentile(timings, 0.99),
        timings[-1],
        cpu_ms,
    )


# --- report -------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    lines = [
        "| backend | devices | insert | insert target | result "
        "| lookups | p50 | p99 | max | CPU/lookup | p99 target | result |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.devices:,} | {r.insert_s:.1f} s | < {r.insert_target_s:.1f} s "
            f"| {'PASS' if r.insert_ok else 'FAIL'} | {r.lookups:,} | {r.p50_ms:.3f} ms "
            f"| {r.p99_ms:.3f} ms | {r.max_ms:.2f} ms | {r.cpu_ms:.3f} ms "
            f"| < {r.p99_target_ms:.0f} ms "
            f"| {'PASS' if r.lookup_ok else 'FAIL'} |"
        )
    return "\n".join(lines)


def machine_info(admin_dsn: str, backends: Sequence[str]) -> list[str]:
    databases = [f"SQLite {sqlite3.sqlite_version}"]
    if "postgres" in backends:
        databases.append(asyncio.run(_postgres_version(admin_dsn)))
    return machine_lines(f"databases: {', '.join(databases)}")


async def _postgres_version(admin_dsn: str) -> str:
    connection = await asyncpg.connect(admin_dsn)
    try:
        version: str = await connection.fetchval("SELECT version()")
    finally:
        await connection.close()
    return version.split(" on ")[0]


def report(results: Sequence[Result], info: Sequence[str], batch: int) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"# Credential store benchmark, {when}",
            "",
            table(results),
            "",
            f"`python -m bench.store_bench` with {sys.argv[1:]}. Fake, well-formed rows "
            "(random SPKI SHA-256 keys, minimal columns; no real certificates: generating a "
            f"million would take hours) inserted with SQLAlchemy Core executemany, {batch:,} "
            "devices per transaction, into the schema of the Alembic migrations. Lookups: "
            "sequential `SqlCredentialStore.find_x509` calls on random existing keys.",
            "",
            *info,
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=FULL_SIZE)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--lookups", type=int, help="default 20,000 (2,000 under 100k devices)")
    parser.add_argument("--batch", type=int, default=10_000, help="devices per transaction")
    parser.add_argument("--pg-writers", type=int, default=2, help="PostgreSQL connections")
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--output", type=Path, help="default bench/results/store-<date>.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    count = args.lookups or (20_000 if args.devices >= 100_000 else 2_000)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = [
        asyncio.run(
            run(
                backend,
                args.devices,
                count,
                args.batch,
                args.pg_writers if backend == "postgres" else 1,
                args.pg_admin_dsn,
            )
        )
        for backend in backends
    ]
    text = report(results, machine_info(args.pg_admin_dsn, backends), args.batch)
    print("\n" + text)
    output = args.output or _default_output(args.devices)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"written to {output}")
    missed = not all(r.insert_ok and r.lookup_ok for r in results)
    return 1 if args.check and missed else 0


def _default_output(devices: int) -> Path:
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    # Smoke runs must not overwrite the real result of the day; *.tmp is git-ignored.
    suffix = ".md" if devices >= FULL_SIZE else f"-{devices}.tmp"
    return RESULTS_DIR / f"store-{date}{suffix}"


if __name__ == "__main__":
    sys.exit(main())
