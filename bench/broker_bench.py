"""Benchmark of the whole broker: start-up with many devices provisioned, and mTLS connect cost.

    .venv/bin/python -m bench.broker_bench                  # 100,000 devices, ~2-3 minutes
    .venv/bin/python -m bench.broker_bench --quick          # smoke run, ~20 s

Two stores, each in a fresh data directory (SQLite, the default), each served by a real
``nanoiot serve`` subprocess on 127.0.0.1 and a free port:

- small: 2 x 1,000 real devices, provisioned through ``SqlCredentialStore``: one half with
  unique subject DNs, the other with one shared DN (``CN=mqttclient`` plus the keygen
  defaults OU, O, L, ST, C: what every device made by the reference's script had).
- large: ``--devices`` fake devices bulk-inserted by ``bench.store_bench`` (random SPKI
  hashes), plus 200 real ones with unique DNs.

Start-up: wall time from spawn to the "ready:" line, and the broker's CPU time until then
(/proc/<pid>/stat: user + system, all threads). Connects: this process opens mTLS connections
with the real devices' certificates (self-signed EC P-256, a new SSLContext per device: no
session resumption), sends a hand-made MQTT 3.1.1 CONNECT, expects CONNACK 0, sends
DISCONNECT and closes; a bounded number in flight. Reported: broker CPU per connect (its
/proc CPU delta over the connects) and connects/s. The three connect measurements run in
interleaved rounds, so drift (CPU frequency, neighbours on a shared host) hits all alike.

Targets (the issue): start-up with 100,000 devices under 5 s; connect cost of the large store
within 1.2x of the small one (independent of the number of devices); same-DN devices all
connect, at a cost within 1.2x of unique-DN devices.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from OpenSSL import SSL

from auth.certificate import parse_credential
from bench._report import CLK_TCK, machine_lines
from bench.broker_process import Broker, running_broker
from bench.mqtt_load import Client, RealDevice, Tally, clients_for, drive
from bench.store_bench import bulk_insert
from nanoiot.keygen.certs import client_certificate, new_key
from nanoiot.keygen.properties import KeyAlgorithm, KeygenProperties, build_properties
from nanoiot.settings import Settings
from storage.migrate import upgrade
from storage.sql import SqlCredentialStore

RESULTS_DIR = Path(__file__).parent / "results"
FULL_SIZE = 100_000
STARTUP_TARGET_S = 5.0
RATIO_LIMIT = 1.2
SHARED_CN = "mqttclient"

UNIQUE = "small store, unique DNs"
SAME_DN = "small store, one shared DN"
LARGE = "large store, unique DNs"


@dataclass(frozen=True)
class Sizes:
    fake: int  # bulk-inserted devices in the large store
    real_large: int  # real devices in the large store (the ones that connect)
    per_dn_set: int  # real devices in each half of the small store
    connects: int  # per measurement, over all rounds
    rounds: int
    warmup: int  # connects per broker before measuring


def sizes_of(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes(fake=2_000, real_large=50, per_dn_set=100, connects=100, rounds=2, warmup=10)
    connects = args.handshakes or 2_000
    return Sizes(args.devices, 200, 1_000, connects, rounds=4, warmup=50)


# --- devices ------------------------------------------------------------------------------


def make_devices(
    directory: Path, prefix: str, count: int, shared_cn: str | None
) -> list[RealDevice]:
    """``count`` self-signed EC P-256 device certificates made as ``nanoiot keygen client``
    makes them; CN = the device name, or ``shared_cn`` for all of them."""
    props = build_properties({}, "benchmark defaults")
    now = dt.datetime.now(dt.UTC)
    return [_device(directory, f"{prefix}-{i:05d}", props, now, shared_cn) for i in range(count)]


def _device(
    directory: Path, name: str, props: KeygenProperties, now: dt.datetime, shared_cn: str | None
) -> RealDevice:
    key = new_key(KeyAlgorithm.EC, 256)
    issued = client_certificate(dataclasses.replace(props, client_cn=shared_cn or name), key, now)
    cert_pem = issued.cert.public_bytes(Encoding.PEM).decode()
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    pem_file = directory / f"{name}.nopass.pem"
    pem_file.write_text(key_pem + cert_pem)
    pem_file.chmod(0o600)
    return RealDevice(name, cert_pem, pem_file)


async def prepare_store(data_dir: Path, fake: int, devices: Sequence[RealDevice]) -> str:
    """A migrated SQLite store in ``data_dir`` with ``fake`` bulk devices, then ``devices``
    provisioned one by one through the real store API; returns its URL."""
    url = _new_store_url(data_dir)
    await upgrade(url)
    if fake:
        seconds, _ = await bulk_insert(url, fake, 10_000, set(), 1)
        print(f"  {fake:,} fake devices inserted in {seconds:.1f} s", flush=True)
    store = await SqlCredentialStore.open(url, data_dir=data_dir)
    try:
        for device in devices:
            await store.create_device_with_credential(
                device.name, x509=parse_credential(device.cert_pem)
            )
    finally:
        await store.close()
    return url


def _new_store_url(data_dir: Path) -> str:
    data_dir.mkdir(parents=True)
    return Settings(data_dir=data_dir).effective_database_url


async def settled_cpu(broker: Broker, quiet_s: float = 0.3, limit_s: float = 5.0) -> float:
    """The broker's CPU seconds once it stops working (at most ``limit_s`` later): it writes
    auth events in the background after the CONNACK, and that work belongs to the connects."""
    last = broker.cpu_seconds()
    for _ in range(int(limit_s / quiet_s)):
        await asyncio.sleep(quiet_s)
        now = broker.cpu_seconds()
        if now - last <= 1.001 / CLK_TCK:  # a tick: the revocation follower's idle polling
            return now
        last = now
    return last


# --- measurements -------------------------------------------------------------------------


@dataclass
class Measurement:
    name: str
    broker: Broker
    provisioned: int
    clients: list[Client]
    cpu_s: float = 0.0
    wall_s: float = 0.0
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        shuffled = random.sample(self.clients, len(self.clients))
        self._turns = itertools.cycle(shuffled)

    @property
    def cpu_ms_per_connect(self) -> float:
        return 1000 * self.cpu_s / max(self.tally.connects, 1)

    @property
    def connects_per_s(self) -> float:
        return self.tally.connects / self.wall_s if self.wall_s else 0.0

    async def round(self, count: int, concurrency: int) -> None:
        cpu = await settled_cpu(self.broker)
        started = time.perf_counter()
        tally = await drive(self.broker.port, self._turns, count, concurrency)
        self.wall_s += time.perf_counter() - started
        self.cpu_s += await settled_cpu(self.broker) - cpu
        self._merge(tally)

    def _merge(self, tally: Tally) -> None:
        self.tally.connected |= tally.connected
        self.tally.connects += tally.connects
        self.tally.failures += tally.failures
        self.tally.first_error = self.tally.first_error or tally.first_error
        self.tally.tls_version = self.tally.tls_version or tally.tls_version


async def measure(measurements: Sequence[Measurement], sizes: Sizes, concurrency: int) -> None:
    """Warm each broker up, then interleave the measurements round by round."""
    for m in measurements:
        await drive(m.broker.port, itertools.cycle(m.clients), sizes.warmup, concurrency)
    per_round = -(-sizes.connects // sizes.rounds)
    for number in range(1, sizes.rounds + 1):
        for m in measurements:
            print(f"round {number}/{sizes.rounds}: {per_round} connects, {m.name}", flush=True)
            await m.round(per_round, concurrency)


# --- the run ------------------------------------------------------------------------------


async def run(sizes: Sizes, concurrency: int, directory: Path) -> list[Measurement]:
    print(f"making {2 * sizes.per_dn_set + sizes.real_large:,} device certificates ...")
    keys = directory / "device-keys"
    keys.mkdir(mode=0o700)
    unique = make_devices(keys, "unique", sizes.per_dn_set, None)
    same_dn = make_devices(keys, "samedn", sizes.per_dn_set, SHARED_CN)
    large_real = make_devices(keys, "large", sizes.real_large, None)
    print(f"small store: provisioning {2 * sizes.per_dn_set:,} real devices ...", flush=True)
    await prepare_store(directory / "small", 0, [*unique, *same_dn])
    print(f"large store: {sizes.fake:,} fake + {sizes.real_large} real devices ...", flush=True)
    await prepare_store(directory / "large", sizes.fake, large_real)
    async with contextlib.AsyncExitStack() as stack:
        small = await stack.enter_async_context(running_broker(directory / "small"))
        print(f"small broker ready in {small.startup_wall_s:.2f} s", flush=True)
        large = await stack.enter_async_context(running_broker(directory / "large"))
        print(f"large broker ready in {large.startup_wall_s:.2f} s", flush=True)
        measurements = [
            Measurement(UNIQUE, small, 2 * sizes.per_dn_set, clients_for(unique, small)),
            Measurement(SAME_DN, small, 2 * sizes.per_dn_set, clients_for(same_dn, small)),
            Measurement(
                LARGE, large, sizes.fake + sizes.real_large, clients_for(large_real, large)
            ),
        ]
        await measure(measurements, sizes, concurrency)
    return measurements


# --- report -------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass(frozen=True)
class Row:
    m: Measurement
    startup: str  # PASS/FAIL of the start-up target, or "—" where it does not apply
    ratio: float | None  # CPU per connect relative to the unique-DN small store
    compared_with: str

    @property
    def ratio_ok(self) -> bool:
        return self.ratio is None or self.ratio <= RATIO_LIMIT

    @property
    def all_connected(self) -> bool:
        t = self.m.tally
        return t.failures == 0 and len(t.connected) == len(self.m.clients)

    @property
    def ok(self) -> bool:
        return self.startup != "FAIL" and self.ratio_ok and self.all_connected


def rows(ms: Sequence[Measurement]) -> list[Row]:
    unique, same_dn, large = ms
    base = unique.cpu_ms_per_connect or float("nan")
    startup = verdict(large.broker.startup_wall_s < STARTUP_TARGET_S)
    return [
        Row(unique, "—", None, "baseline"),
        Row(same_dn, "—", same_dn.cpu_ms_per_connect / base, "unique DNs"),
        Row(large, startup, large.cpu_ms_per_connect / base, "small store"),
    ]


def table(ms: Sequence[Measurement]) -> str:
    lines = [
        "| scenario | devices provisioned | start-up wall | start-up CPU | start-up < 5 s "
        "| connects | devices connected | broker CPU/connect | connects/s "
        "| CPU/connect ratio | ratio ≤ 1.2 | all connect |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|---|",
    ]
    lines += [
        _line(row, shared=row.m.broker is ms[0].broker and i > 0) for i, row in enumerate(rows(ms))
    ]
    return "\n".join(lines)


def _line(row: Row, *, shared: bool) -> str:
    m, t = row.m, row.m.tally
    if shared:
        startup = "(same broker) | "
    else:
        startup = f"{m.broker.startup_wall_s:.2f} s | {m.broker.startup_cpu_s:.2f} s"
    ratio = "—" if row.ratio is None else f"{row.ratio:.2f}× {row.compared_with}"
    ratio_ok = "—" if row.ratio is None else verdict(row.ratio_ok)
    failed = f" ({t.failures} failed)" if t.failures else ""
    return (
        f"| {m.name} | {m.provisioned:,} | {startup} | {row.startup} | {t.connects:,}{failed} "
        f"| {len(t.connected):,} / {len(m.clients):,} | {m.cpu_ms_per_connect:.2f} ms "
        f"| {m.connects_per_s:,.0f} | {ratio} | {ratio_ok} | {verdict(row.all_connected)} |"
    )


def passed(ms: Sequence[Measurement]) -> bool:
    return all(row.ok for row in rows(ms))


def machine_info() -> list[str]:
    return machine_lines(
        f"broker TLS: pyOpenSSL over {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}"
    )


def report(ms: Sequence[Measurement], sizes: Sizes, concurrency: int, argv: Sequence[str]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    errors = [f"- {m.name}: first failure {m.tally.first_error}" for m in ms if m.tally.failures]
    return "\n".join(
        [
            f"# Broker benchmark, {when}",
            "",
            table(ms),
            "",
            f"`python -m bench.broker_bench {' '.join(argv)}`. Real `nanoiot serve` "
            "subprocesses on SQLite stores; start-up = spawn to the `ready:` line (the first "
            "start of each data directory, development server certificate generated "
            "included). Connects: mTLS "
            f"({ms[0].tally.tls_version or '?'}, self-signed EC P-256 device certificates, "
            "no resumption) + MQTT CONNECT/CONNACK/DISCONNECT, "
            f"{concurrency} in flight, {sizes.rounds} interleaved rounds after "
            f"{sizes.warmup} warm-up connects per broker. Broker CPU from /proc/<pid>/stat "
            "(all threads, background auth-event writes included). Large store: "
            f"{sizes.fake:,} fake devices bulk-inserted (random SPKI hashes) + "
            f"{sizes.real_large} real ones, the only ones that connect.",
            "",
            *errors,
            *machine_info(),
            "",
        ]
    )


def default_output(devices: int) -> Path:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    # Smoke runs must not overwrite the real result of the day; *.tmp is git-ignored.
    suffix = ".md" if devices >= FULL_SIZE else f"-{devices}.tmp"
    return RESULTS_DIR / f"broker-{date}{suffix}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=FULL_SIZE, help="fake devices (large)")
    parser.add_argument("--handshakes", type=int, help="connects per measurement (2,000)")
    parser.add_argument("--concurrency", type=int, default=8, help="connects in flight")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    parser.add_argument("--output", type=Path, help="default bench/results/broker-<date>.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    sizes = sizes_of(args)
    with tempfile.TemporaryDirectory(prefix="nanoiot-broker-bench-") as tmp:
        measurements = asyncio.run(run(sizes, args.concurrency, Path(tmp)))
    text = report(measurements, sizes, args.concurrency, sys.argv[1:] if argv is None else argv)
    print("\n" + text)
    output = args.output or default_output(sizes.fake)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"written to {output}")
    return 1 if args.check and not passed(measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
