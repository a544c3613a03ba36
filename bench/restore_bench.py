"""Start-up of ``nanoiot serve`` over many stored persistent sessions.

    .venv/bin/python -m bench.restore_bench --sessions 100000      # the real run, a few minutes
    .venv/bin/python -m bench.restore_bench --sessions 2000 --no-record   # smoke, seconds
    .venv/bin/python -m bench.restore_bench --sessions 5000 --subscriptions 3 \
        --nats-url nats://127.0.0.1:4222 --no-record     # a cluster node's restart
    (tests/bench/test_restore_bench_smoke.py runs 300)

A SQLite store is filled with ``--sessions`` persistent sessions, each of its own device with
one subscription, and two queued QoS 1 messages per session (the proportions of 10,000
sessions and 20,000 messages a user reported), bulk-inserted with SQLAlchemy Core into the
schema of the real migrations. Then the real ``nanoiot serve`` starts on it twice (the first
start also makes the development TLS credentials and the admin token): **start-up** is the
time from the process start to its "ready:" line (the MQTT listener accepts connections by
then), **restored** when its log says every session is back, read from that line.

With ``--nats-url`` the node is a cluster's only member (a cluster name of its own on that
NATS): the second start is a restart, whose sessions' claims and routes its first start left
in the cluster's buckets, and the report also gives when the restored sessions' routes were
in the routes bucket (the node's log says), and how many were written again.
"""

import argparse
import asyncio
import re
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from bench._report import machine_lines
from bench.broker_process import running_broker
from storage.engine import create_engine
from storage.models import Base
from storage.sql import SqlCredentialStore
from tests.natsserver import delete_buckets

STARTUP_TARGET_S = 2.0
RESULTS_DIR = Path(__file__).parent / "results"
TABLES = Base.metadata.tables
_BATCH = 10_000
_RESTORED = re.compile(r"restored (\d+) persistent sessions, (\d+) messages, in ([\d.]+) s")
_ROUTES = re.compile(r"routes of the restored sessions in the bucket .*")
RESTORE_WAIT_S = 600.0


async def fill(data_dir: Path, sessions: int, subscriptions: int = 1) -> float:
    """Sessions, their devices, subscriptions and messages; seconds taken."""
    started = time.perf_counter()
    url = f"sqlite+aiosqlite:///{data_dir / 'nanoiot.db'}"
    # data_dir: created, and the migrations run.
    store = await SqlCredentialStore.open(url, data_dir=data_dir)
    await store.close()
    engine = create_engine(url)
    now = datetime.now(UTC)
    try:
        for first in range(0, sessions, _BATCH):
            devices: list[dict[str, object]] = []
            rows: list[dict[str, object]] = []
            subs: list[dict[str, object]] = []
            messages: list[dict[str, object]] = []
            for n in range(first, min(first + _BATCH, sessions)):
                device_id, name = uuid.uuid4(), f"bench-{n:07d}"
                key = f"{device_id}/{name}"
                devices.append({"id": device_id, "name": name, "type": "default", "label": "",
                                "created_at": now, "enabled": True})  # fmt: skip
                rows.append({"key": key, "device_id": device_id, "device_name": name,
                             "client_id": name, "updated_at": now})  # fmt: skip
                subs.extend({"session_key": key, "topic_filter": f"devices/{name}/rpc/{s}/+",
                             "qos": 1, "me_form": True, "options": 0}
                            for s in ["request", *map(str, range(1, subscriptions))])  # fmt: skip
                messages.extend(
                    {"session_key": key, "topic": f"devices/{name}/rpc/request/{m}",
                     "payload": b"x" * 64, "qos": 1, "attempted": False, "packet_id": None,
                     "released": False, "retain": False}
                    for m in range(2)
                )  # fmt: skip
            async with engine.begin() as connection:
                await connection.execute(insert(TABLES["devices"]), devices)
                await connection.execute(insert(TABLES["mqtt_sessions"]), rows)
                await connection.execute(insert(TABLES["mqtt_subscriptions"]), subs)
                await connection.execute(insert(TABLES["mqtt_queued_messages"]), messages)
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def measure(
    data_dir: Path, sessions: int, cluster: dict[str, str]
) -> tuple[float, float, str]:
    """(seconds to "ready:", CPU seconds by then, the log's "restored ..." line, and its
    routes line in a cluster)."""
    async with running_broker(data_dir, NANOIOT_LOG_LEVEL="INFO", **cluster) as broker:
        if not sessions:
            return broker.startup_wall_s, broker.startup_cpu_s, "(no sessions)"
        log_file = data_dir.parent / f"{data_dir.name}-broker.log"
        found = await _logged(log_file, _RESTORED)
        if cluster:
            found += f"`; `{await _logged(log_file, _ROUTES)}"
        return broker.startup_wall_s, broker.startup_cpu_s, found


async def _logged(log_file: Path, line: re.Pattern[str]) -> str:
    deadline = time.monotonic() + RESTORE_WAIT_S
    while True:
        found = line.search(await asyncio.to_thread(log_file.read_text, errors="replace"))
        if found is not None:
            return found.group(0)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {line.pattern!r} in the log in time")
        await asyncio.sleep(0.1)  # another process's log: polled


def report(
    sessions: int, fill_s: float, runs: list[tuple[float, float, str]], subscriptions: int = 1
) -> str:
    (first_s, _, _), (startup_s, cpu_s, restored) = runs
    wall_verdict = "met" if startup_s < STARTUP_TARGET_S else "not met"
    cpu_verdict = "met" if cpu_s < STARTUP_TARGET_S else "not met"
    return "\n".join([
        f"# Start-up over {sessions:,} stored persistent sessions",
        "",
        f"- sessions: {sessions:,}, {subscriptions} subscription(s) each, {2 * sessions:,} queued"
        " QoS 1 messages",
        f"  (SQLite; filled in {fill_s:.1f} s)",
        f"- start-up (process start to \"ready:\", the MQTT listener open): **{startup_s:.2f} s**"
        f" wall clock, **{cpu_s:.2f} s** of the broker's CPU time (target < {STARTUP_TARGET_S:g}"
        f" s: {wall_verdict} in wall-clock time on this machine at the load below, {cpu_verdict}"
        f" in CPU time); the first start, which also makes the development credentials:"
        f" {first_s:.2f} s",
        f"- then, in the background, the broker's log: `{restored}`",
        "",
        "## Machine",
        "",
        *machine_lines(),
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--subscriptions", type=int, default=1, help="per session")
    parser.add_argument("--nats-url", help="a cluster's only node, on this NATS")
    parser.add_argument("--no-record", action="store_true", help="print, do not write a result")
    parser.add_argument("--output", type=Path, help="the report's file (default: bench/results)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nanoiot-restore-") as scratch:
        data_dir = Path(scratch) / "data"
        fill_s = asyncio.run(fill(data_dir, args.sessions, args.subscriptions))
        cluster = {}
        if args.nats_url:
            cluster = {"NANOIOT_NATS_URL": args.nats_url, "NANOIOT_NODE_NAME": "node-a",
                       "NANOIOT_CLUSTER_NAME": f"restore{uuid.uuid4().hex[:8]}"}  # fmt: skip
        try:
            runs = [asyncio.run(measure(data_dir, args.sessions, cluster)) for _ in range(2)]
        finally:
            if args.nats_url:
                # The cluster's buckets and streams, removed from the NATS it ran on.
                asyncio.run(delete_buckets(cluster["NANOIOT_CLUSTER_NAME"], args.nats_url))
    text = report(args.sessions, fill_s, runs, args.subscriptions)
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    elif not args.no_record:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        (RESULTS_DIR / f"restore-{stamp}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
