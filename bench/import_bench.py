"""Benchmark of the bulk import: devices with real certificates through the CLI and the API.

    .venv/bin/python -m bench.import_bench --devices 100000 --backend both   # the real run
    .venv/bin/python -m bench.import_bench --devices 2000 --backend sqlite   # smoke, seconds

One JSON-lines file of ``--devices`` rows, each a device name and a freshly generated
self-signed EC P-256 certificate (the keys are thrown away: the import only needs the
certificates), is imported into a fresh, migrated store, twice per backend:

- CLI: ``nanoiot device import FILE`` in a subprocess; wall time and the process's CPU time.
- API: ``POST /api/v1/devices/import`` to a running ``nanoiot serve`` (broker and admin API,
  so the broker's change-feed follower reads the new devices as it would in production), the
  file streamed from here with httpx and the answer read line by line as it comes; wall time
  and the server's CPU time (/proc).

Target: each under 60 s for 100,000 devices (scaled for other sizes, at least 5 s). Every row
must be reported imported and the store must hold every device with its credential, or the
run fails. Writes ``bench/results/import-<date>.md`` for a 100k run, otherwise
``import-<date>-<N>.tmp`` (git-ignored).
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from bench._report import machine_lines
from bench.load_worker import settled_cpu
from bench.store_bench import PG_ADMIN_DSN, database
from storage.sql import SqlCredentialStore

FULL_SIZE = 100_000
TARGET_S = 60.0  # for FULL_SIZE devices, through either path
RESULTS_DIR = Path(__file__).parent / "results"
NANOIOT = Path(sys.executable).with_name("nanoiot")
CHUNK = 64 * 1024
WAIT_S = 60.0  # bound on the server's start


@dataclass(frozen=True)
class Result:
    backend: str
    path: str  # "CLI" or "API"
    rows: int
    imported: int
    stored: int  # devices holding their one credential afterwards
    wall_s: float
    cpu_s: float  # the importing process: the CLI, or the server

    @property
    def target_s(self) -> float:
        return max(5.0, TARGET_S * self.rows / FULL_SIZE)

    @property
    def ok(self) -> bool:
        return self.wall_s <= self.target_s and self.imported == self.stored == self.rows


# --- the file -----------------------------------------------------------------------------


def write_fleet(path: Path, count: int) -> None:
    """``count`` rows of JSON lines: a device name and its own certificate."""
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    with path.open("w", encoding="utf-8") as out:
        for number in range(count):
            name = f"fleet-{number:07d}"
            out.write(json.dumps({"name": name, "pem": _certificate(name, now)}) + "\n")
            if number and number % 20_000 == 0:
                print(f"  {number:>9,} certificates  {time.perf_counter() - started:6.1f} s")


def _certificate(name: str, now: dt.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM).decode()


# --- the two paths ------------------------------------------------------------------------


def _env(url: str, data_dir: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOIOT_", "MQTT_SSL_"))}
    env.update(
        NANOIOT_DATABASE_URL=url, NANOIOT_DATA_DIR=str(data_dir), NANOIOT_ADMIN_TOKEN=token,
        NANOIOT_HTTP_BIND_ADDRESS="127.0.0.1", NANOIOT_HTTP_PORT="0",
        MQTT_SSL_BIND_ADDRESS="127.0.0.1", MQTT_SSL_BIND_PORT="0", NANOIOT_LOG_LEVEL="WARNING",
    )  # fmt: skip
    return env


async def through_cli(url: str, source: Path, work: Path) -> tuple[int, float, float]:
    """(rows imported, wall s, CPU s) of ``nanoiot device import``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        NANOIOT, "device", "import", str(source), env=_env(url, work / "cli-data", "unused"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    summary = out.decode().splitlines()[0] if out else ""
    if process.returncode != 0 or not summary.startswith("imported "):
        raise RuntimeError(f"nanoiot device import failed: {summary}\n{err.decode()[-2000:]}")
    return int(summary.split()[1]), wall, cpu


async def through_api(url: str, source: Path, work: Path) -> tuple[int, float, float]:
    """(rows imported, wall s, server CPU s) of POST /api/v1/devices/import to a running
    ``nanoiot serve``."""
    token = secrets.token_urlsafe(32)
    process = await asyncio.create_subprocess_exec(
        NANOIOT, "serve", env=_env(url, work / "api-data", token),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = await _admin_url(process)
        cpu = await settled_cpu(process.pid)
        started = time.perf_counter()
        summary = await _post(base, token, source)
        wall = time.perf_counter() - started
        cpu = await settled_cpu(process.pid) - cpu
    finally:
        process.terminate()
        await process.wait()
    if not summary.get("complete") or summary.get("failed"):
        raise RuntimeError(f"the API import did not complete: {summary}")
    return int(summary["imported"]), wall, cpu


async def _admin_url(process: asyncio.subprocess.Process) -> str:
    """http://HOST:PORT from the "admin API and web UI: http://HOST:PORT/ui" line."""
    assert process.stdout is not None
    async with asyncio.timeout(WAIT_S):
        while line := (await process.stdout.readline()).decode():
            if line.startswith("admin API and web UI: "):
                return line.split()[5].removesuffix("/ui")
    raise RuntimeError(f"nanoiot serve exited with {await process.wait()} before it was ready")


async def _post(base: str, token: str, source: Path) -> dict[str, Any]:
    async def body() -> AsyncIterator[bytes]:
        with source.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    last = ""
    async with (
        httpx.AsyncClient(timeout=600) as client,
        client.stream(
            "POST", f"{base}/api/v1/devices/import", content=body(), headers=headers
        ) as response,
    ):
        async for line in response.aiter_lines():
            last = line or last
    summary: dict[str, Any] = json.loads(last)
    return summary


async def stored(url: str) -> int:
    store = await SqlCredentialStore.open(url)
    try:
        return (await store.list_devices(page_size=1)).total
    finally:
        await store.close()


async def run(backend: str, source: Path, rows: int, work: Path, admin_dsn: str) -> list[Result]:
    results = []
    for name, path in (("CLI", through_cli), ("API", through_api)):
        async with database(backend, admin_dsn) as url:
            print(f"{backend}: {rows:,} devices through the {name} ...", flush=True)
            imported, wall, cpu = await path(url, source, work / f"{backend}-{name}")
            results.append(Result(backend, name, rows, imported, await stored(url), wall, cpu))
            print(f"  {wall:.1f} s, {cpu:.1f} s CPU", flush=True)
    return results


# --- report -------------------------------------------------------------------------------


def report(results: Sequence[Result], argv: Sequence[str]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Bulk import benchmark, {when}",
        "",
        "| backend | path | rows | imported | stored | wall | CPU | rows/s | target | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.path} | {r.rows:,} | {r.imported:,} | {r.stored:,} "
            f"| {r.wall_s:.1f} s | {r.cpu_s:.1f} s | {r.rows / r.wall_s:,.0f} "
            f"| < {r.target_s:.0f} s | {'PASS' if r.ok else 'FAIL'} |"
        )
    return "\n".join(
        [
            *lines,
            "",
            f"`python -m bench.import_bench {' '.join(argv)}`. JSON lines, one device and its own "
            "self-signed EC P-256 certificate a row, into a fresh migrated store per line of the "
            "table. CLI: `nanoiot device import`, CPU of that process. API: `POST "
            "/api/v1/devices/import` to `nanoiot serve`, streamed, CPU of the server.",
            "",
            *machine_lines(),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=FULL_SIZE)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--output", type=Path, help="default bench/results/import-<date>.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="nanoiot-import-") as tmp:
        source = Path(tmp) / "fleet.jsonl"
        print(f"writing {args.devices:,} devices with certificates ...", flush=True)
        write_fleet(source, args.devices)
        for backend in backends:
            results += asyncio.run(run(backend, source, args.devices, Path(tmp), args.pg_admin_dsn))
    text = report(results, sys.argv[1:] if argv is None else list(argv))
    print("\n" + text)
    output = args.output or _default_output(args.devices)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"written to {output}")
    return 1 if args.check and not all(r.ok for r in results) else 0


def _default_output(devices: int) -> Path:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    suffix = ".md" if devices >= FULL_SIZE else f"-{devices}.tmp"  # *.tmp is git-ignored
    return RESULTS_DIR / f"import-{date}{suffix}"


if __name__ == "__main__":
    sys.exit(main())
