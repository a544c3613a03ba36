"""What NATS gives a cluster of NanoIoT nodes on this machine, through nats-py.

Measured against the NATS server on 127.0.0.1:4222 (JetStream), each figure the way the
cluster would use it:

- request/reply round trip, 64 B (a forwarded QoS 1 message and its acknowledgement, a kick
  asked of another node): p50 / p99 over ``--requests`` sequential requests;
- one-way publish -> subscribe throughput, 64 B, two connections in one process (a node
  forwarding to another): messages/s received, with the publisher flushing every 1,000;
- JetStream key-value: create-once and compare-and-set latency (a take-over lock, a session
  owner), p50 / p99.

Everything lives under a fresh subject prefix and bucket, removed afterwards.

    .venv/bin/python -m bench.nats_bench                  # the recorded run, ~20 s
    .venv/bin/python -m bench.nats_bench --messages 20000 --requests 500
"""

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
from nats.aio.msg import Msg

URL = "nats://127.0.0.1:4222"
PAYLOAD = b"x" * 64
RESULTS = Path(__file__).parent / "results"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


async def round_trips(count: int, prefix: str) -> tuple[float, float]:
    responder = await nats.connect(URL)
    requester = await nats.connect(URL)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await responder.subscribe(f"{prefix}.echo", cb=echo)
    await responder.flush()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await requester.request(f"{prefix}.echo", PAYLOAD, timeout=5)
        samples.append((time.perf_counter() - started) * 1000)
    await requester.close()
    await responder.close()
    return percentiles(samples)


async def throughput(count: int, prefix: str) -> tuple[float, float]:
    """Messages/s received, and the CPU seconds this process spent per 1,000 messages."""
    publisher = await nats.connect(URL)
    subscriber = await nats.connect(URL, pending_size=64 * 1024 * 1024)
    done = asyncio.Event()
    received = 0

    async def count_one(_msg: Msg) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    await subscriber.subscribe(f"{prefix}.flow", cb=count_one, pending_msgs_limit=count)
    await subscriber.flush()
    cpu, started = time.process_time(), time.perf_counter()
    for index in range(count):
        await publisher.publish(f"{prefix}.flow", PAYLOAD)
        if index % 1000 == 999:
            await publisher.flush()
    await publisher.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await publisher.close()
    await subscriber.close()
    return count / elapsed, cpu / count * 1000 * 1000


async def key_value(count: int, prefix: str) -> tuple[tuple[float, float], tuple[float, float]]:
    client = await nats.connect(URL)
    js = client.jetstream()
    bucket = f"{prefix}_locks"
    kv = await js.create_key_value(bucket=bucket, history=1)
    creates, updates = [], []
    try:
        for index in range(count):
            started = time.perf_counter()
            revision = await kv.create(f"device-{index}", b"node-a")
            creates.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await kv.update(f"device-{index}", b"node-b", last=revision)
            updates.append((time.perf_counter() - started) * 1000)
    finally:
        await js.delete_key_value(bucket)
        await client.close()
    return percentiles(creates), percentiles(updates)


async def main(args: argparse.Namespace) -> str:
    prefix = f"bench{secrets.token_hex(4)}"
    rtt = await round_trips(args.requests, prefix)
    rate, cpu_per_k = await throughput(args.messages, prefix)
    create, update = await key_value(args.requests, prefix)
    server = await nats.connect(URL)
    version = server._server_info.get("version", "?")
    await server.close()
    return "\n".join(
        [
            f"# NATS through nats-py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            "| measure | figure |",
            "|---|---:|",
            f"| request/reply 64 B, p50 / p99 ({args.requests:,} sequential) "
            f"| {rtt[0]:.3f} / {rtt[1]:.3f} ms |",
            f"| publish -> subscribe 64 B, one process ({args.messages:,} messages) "
            f"| {rate:,.0f} msg/s |",
            f"| client CPU per message, publisher and subscriber together | {cpu_per_k:.1f} µs |",
            f"| KV create-once, p50 / p99 | {create[0]:.3f} / {create[1]:.3f} ms |",
            f"| KV compare-and-set, p50 / p99 | {update[0]:.3f} / {update[1]:.3f} ms |",
            "",
            f"`python -m bench.nats_bench --messages {args.messages} --requests "
            f"{args.requests}`, against NATS {version} with JetStream on {URL} (file store).",
            "",
            f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"- Python {platform.python_version()}, nats-py "
            f"{__import__('importlib.metadata').metadata.version('nats-py')}",
            f"- git commit {_commit()}",
            "",
        ]
    )


def _commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "?"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--no-save", action="store_true", help="print only")
    options = parser.parse_args()
    report = asyncio.run(main(options))
    print(report)
    if not options.no_save:
        path = RESULTS / f"nats-{datetime.now(UTC):%Y-%m-%d}.md"
        path.write_text(report, encoding="utf-8")
        print(f"written to {path}")
