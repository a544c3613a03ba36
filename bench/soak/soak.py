"""Soak: many mTLS devices publishing QoS 1 for minutes; nothing lost, memory flat.

    .venv/bin/python -m bench.soak.soak                             # 2,000 devices, 10 min
    .venv/bin/python -m bench.soak.soak --devices 200 --seconds 30  # smoke

A real ``nanoiot serve`` on a fresh SQLite data directory; the devices (self-signed EC P-256
certificates) are provisioned through the store before it starts, plus one application with
MQTT basic credentials that subscribes to ``devices/+/telemetry`` at QoS 1. Every device
publishes one 64-byte QoS 1 message a second to ``v1/devices/me/telemetry`` (phases spread
over the second), carrying its index, a sequence number and the send time, so the
subscriber counts losses and duplicates and measures latency. The broker's RSS is sampled
every few seconds while publishing and a least-squares line gives its slope.

The load generator is raw asyncio (``bench.mqtt_wire``): paho is too slow. Its own CPU time
and the broker's are reported, so a generator that could not keep up shows. Exit code 1 if a
message was lost or a device could not connect.
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import resource
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench._report import machine_lines
from bench.broker_bench import make_devices, prepare_store
from bench.broker_process import HOST, Broker, running_broker
from bench.mqtt_load import RealDevice, remaining_length
from bench.mqtt_wire import PAYLOAD, MqttClient, client_context, connect
from storage.sql import SqlCredentialStore

APP_USER, APP_PASSWORD = "soak-backend", "soak-backend-pass"
TOPIC = b"v1/devices/me/telemetry"
GROUPS = 100  # publishing phases per second
DRAIN_S = 30.0  # after the last publish, how long in-flight messages may take


@dataclass
class Tally:
    sent: int = 0
    received: int = 0
    duplicates: int = 0
    seen: set[tuple[int, int]] = field(default_factory=set)
    latencies_ns: list[int] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, bytes)
    expected: int | None = None  # set when publishing is over
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self) -> None:
        self.expected = self.sent
        self._check_drained()

    def _check_drained(self) -> None:
        if self.expected is not None and self.received >= self.expected:
            self.drained.set()

    def on_publish(self, _topic: bytes, payload: bytes) -> None:
        index, seq, sent_ns = PAYLOAD.unpack(payload)
        if (index, seq) in self.seen:
            self.duplicates += 1
            return
        self.seen.add((index, seq))
        self.received += 1
        self.latencies_ns.append(time.monotonic_ns() - sent_ns)
        self._check_drained()


def application_connect_packet(client_id: str) -> bytes:
    """§3.1: CONNECT with user name and password, clean session, no keep-alive."""

    def field_(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    variable = b"\x00\x04MQTT\x04\xc2\x00\x00"
    payload = field_(client_id.encode()) + field_(APP_USER.encode()) + field_(APP_PASSWORD.encode())
    return b"\x10" + remaining_length(len(variable) + len(payload)) + variable + payload


async def subscribe_application(broker: Broker, tally: Tally) -> MqttClient:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(broker.server_cert)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: MqttClient(tally.on_publish), HOST, broker.port, ssl=context,
        server_hostname="localhost",
    )  # fmt: skip
    client.write(application_connect_packet("soak-backend"))
    if (code := await client.connack) != 0:
        raise RuntimeError(f"application CONNACK {code}")
    topic = b"devices/+/telemetry"
    body = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x01"
    client.write(b"\x82" + remaining_length(len(body)) + body)
    if (granted := await client.suback) != 1:
        raise RuntimeError(f"SUBACK {granted}")
    return client


async def connect_devices(
    broker: Broker, devices: Sequence[RealDevice], concurrency: int
) -> list[MqttClient]:
    slots = asyncio.Semaphore(concurrency)

    async def one(device: RealDevice) -> MqttClient:
        async with slots:
            context = client_context(str(broker.server_cert), str(device.pem_file))
            return await connect(broker.port, context, device.name)

    return list(await asyncio.gather(*(one(device) for device in devices)))


async def publish_for(clients: Sequence[MqttClient], seconds: float, tally: Tally) -> None:
    """Each client one QoS 1 PUBLISH a second, in GROUPS phases spread over the second."""
    start = time.monotonic()

    async def group(members: list[tuple[int, MqttClient]], phase: float) -> None:
        for second in range(int(seconds)):
            await asyncio.sleep(max(0.0, start + second + phase - time.monotonic()))
            now = time.monotonic_ns()
            for index, client in members:
                payload = PAYLOAD.pack(index, second, now)
                head = len(TOPIC).to_bytes(2, "big") + TOPIC + client.packet_id().to_bytes(2, "big")
                client.write(b"\x32" + remaining_length(len(head) + len(payload)) + head + payload)
                tally.sent += 1

    members = list(enumerate(clients))
    await asyncio.gather(
        *(group(members[g::GROUPS], g / GROUPS) for g in range(min(GROUPS, len(members))))
    )


async def sample_rss(pid: int, every: float, tally: Tally, stop: asyncio.Event) -> None:
    start = time.monotonic()
    while not stop.is_set():
        tally.rss.append((time.monotonic() - start, rss_bytes(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope, in units of y per unit of x."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx if sxx else 0.0


def percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


@dataclass
class Result:
    devices: int
    seconds: float
    tally: Tally
    connect_s: float
    pubacks: int
    broker_cpu_s: float
    generator_cpu_s: float

    @property
    def lost(self) -> int:
        return self.tally.sent - self.tally.received

    def lines(self) -> list[str]:
        t = self.tally
        ms = [v / 1e6 for v in t.latencies_ns]
        mib = [(x, y / 2**20) for x, y in t.rss]
        return [
            f"devices connected: {self.devices:,} in {self.connect_s:.1f} s (mTLS, EC P-256)",
            f"published: {t.sent:,} QoS 1 over {self.seconds:.0f} s; PUBACKs: {self.pubacks:,}",
            f"received by the application: {t.received:,}; lost: {self.lost:,}; "
            f"duplicates: {t.duplicates:,}",
            f"latency publish -> delivery: p50 {percentile(t.latencies_ns, 0.5) / 1e6:.1f} ms, "
            f"p99 {percentile(t.latencies_ns, 0.99) / 1e6:.1f} ms, max {max(ms, default=0):.1f} ms",
            f"broker RSS: first {mib[0][1]:.1f} MiB, last {mib[-1][1]:.1f} MiB, "
            f"max {max(y for _, y in mib):.1f} MiB, {len(mib)} samples, "
            f"slope {slope(mib) * 60:+.3f} MiB/min (least squares)",
            f"CPU during the run: broker {self.broker_cpu_s:.0f} s, "
            f"load generator {self.generator_cpu_s:.0f} s, "
            f"of {self.seconds * (os.cpu_count() or 1):.0f} core-seconds",
        ]


async def soak(args: argparse.Namespace, directory: Path) -> Result:
    print(f"making {args.devices:,} device certificates", flush=True)
    devices = make_devices(directory, "soak", args.devices, None)
    data_dir = directory / "data"
    url = await prepare_store(data_dir, 0, devices)
    store = await SqlCredentialStore.open(url)
    try:
        app = await store.create_device("soak-backend", type="application")
        await store.add_basic_credential(
            app.id, username=APP_USER, password=APP_PASSWORD, application=True
        )
    finally:
        await store.close()
    tally = Tally()
    async with running_broker(data_dir) as broker:
        subscriber = await subscribe_application(broker, tally)
        started = time.monotonic()
        clients = await connect_devices(broker, devices, args.connect_concurrency)
        connect_s = time.monotonic() - started
        print(f"{len(clients):,} devices connected in {connect_s:.1f} s; publishing", flush=True)
        cpu_broker, cpu_own = broker.cpu_seconds(), own_cpu()
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(broker.pid, args.sample_every, tally, stop))
        await publish_for(clients, args.seconds, tally)
        tally.expect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.drained.wait(), DRAIN_S)
        await asyncio.sleep(1.0)  # PUBACKs still on their way back to the last publishers
        stop.set()
        await sampler
        result = Result(
            len(clients), args.seconds, tally, connect_s, sum(c.pubacks for c in clients),
            broker.cpu_seconds() - cpu_broker, own_cpu() - cpu_own,
        )  # fmt: skip
        for client in [*clients, subscriber]:
            if client.transport is not None:
                client.transport.close()
    return result


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(result: Result, argv: Sequence[str]) -> str:
    lines = [
        f"# Soak {dt.date.today()}: {result.devices:,} devices, {result.seconds:.0f} s",
        "",
        f"`python -m bench.soak.soak {' '.join(argv)}`",
        "",
        *(f"- {line}" for line in result.lines()),
        "",
        "RSS samples (seconds, MiB): "
        + ", ".join(f"{x:.0f}:{y / 2**20:.1f}" for x, y in result.tally.rss),
        "",
        *machine_lines(),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.soak.soak", description=__doc__)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=600.0, help="publishing time")
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sample period")
    parser.add_argument("--connect-concurrency", type=int, default=64)
    parser.add_argument("--output", type=Path, help="report file (default: bench/results/)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nanoiot-soak-") as directory:
        result = asyncio.run(soak(args, Path(directory)))
    text = report(result, argv)
    print(text)
    full = args.devices >= 2000 and args.seconds >= 600
    suffix = "md" if full else "tmp"
    output = args.output or Path("bench/results") / f"soak-{dt.date.today()}.{suffix}"
    output.write_text(text)
    print(f"written to {output}")
    return 0 if result.lost == 0 and result.devices == args.devices else 1


if __name__ == "__main__":
    raise SystemExit(main())
