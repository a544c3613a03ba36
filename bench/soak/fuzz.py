"""On-demand soak: 100,000 malformed MQTT packets against one broker, with a canary watching.

    .venv/bin/python -m bench.soak.fuzz                    # 100,000 cases, a few minutes
    .venv/bin/python -m bench.soak.fuzz --cases 2000       # smoke

The same Hypothesis strategies as ``tests/reliability/test_fuzz_packets.py`` (MQTT 3.1.1
violations after a valid CONNECT and as the first packet, random and mutated packets before
and after CONNECT), generated without shrinking, in batches of concurrent connections
against a real broker (TLS, SQLite store) running in a thread of this process. After each
batch: the broker's tasks, sessions, live peers, TLS connections and this process's file
descriptors are compared with the baseline, and the canary device must round-trip a message.
Failures are counted and the first few printed; nothing stops the run.
"""

import argparse
import asyncio
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.e2e.harness import BrokerThread, broker_settings
from tests.reliability import packets
from tests.reliability.canary import Baseline, Canary, Census
from tests.reliability.wire import Target, client_context, run_batch

TOKEN = "soak-fuzz-token"  # noqa: S105 - in this run's throw-away database
# kind -> (strategy, after a valid CONNECT, the broker must close the connection)
KINDS = {
    "violation-after-connect": (packets.violations(), True, True),
    "violation-as-first-packet": (packets.first_packet_violations(), False, True),
    "noise-after-connect": (packets.noise(), True, False),
    "noise-as-first-packet": (packets.noise(), False, False),
}


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    leak_checks: int = 0
    canary_round_trips: int = 0

    @property
    def total(self) -> int:
        return sum(self.cases.values())


def soak(broker: BrokerThread, canary: Canary, wanted: int, batch: int, seed_value: int) -> Tally:
    """Each kind in turn gets a quarter of ``wanted`` cases, in batches of ``batch``."""
    target = Target(broker.port, client_context(broker.server_cert), TOKEN)
    tally = Tally()
    baseline = Baseline(broker)
    for kind in sorted(KINDS):
        share = -(-wanted // len(KINDS))
        _fuzz_one_kind(kind, target, baseline, canary, tally, share, batch, seed_value)
    return tally


def _fuzz_one_kind(
    kind: str,
    target: Target,
    baseline: Baseline,
    canary: Canary,
    tally: Tally,
    wanted: int,
    batch: int,
    seed_value: int,
) -> None:
    strategy, after_connect, must_close = KINDS[kind]

    @seed(seed_value)
    @settings(
        max_examples=-(-wanted // batch),
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: failures are recorded, the run goes on
        suppress_health_check=list(HealthCheck),
    )
    @given(cases=st.lists(strategy, min_size=batch, max_size=batch))
    def one_batch(cases: list[bytes]) -> None:
        if tally.cases[kind] >= wanted:
            return
        run = run_batch(
            target, cases, after_connect=after_connect, must_close=must_close,
            tag=f"soak{tally.total}",
        )  # fmt: skip
        tally.failures += [f"{kind}: {failure}" for failure in asyncio.run(run)]
        tally.cases[kind] += len(cases)
        tally.leak_checks += 1
        tally.failures += [f"after {tally.total} cases: {leak}" for leak in baseline.leaks()]
        try:
            canary.check()
            tally.canary_round_trips += 1
        except AssertionError as exc:
            tally.failures.append(f"after {tally.total} cases: canary: {exc}")
        if tally.leak_checks % 100 == 0:
            print(f"  {tally.total} cases, {len(tally.failures)} failures", flush=True)

    one_batch()


def report(tally: Tally, before: Census, after: Census, seconds: float) -> None:
    print(f"cases tried: {tally.total} in {seconds:.0f} s ({tally.total / seconds:.0f}/s)")
    for kind, count in sorted(tally.cases.items()):
        print(f"  {kind}: {count}")
    print(f"failures: {len(tally.failures)}")
    for failure in tally.failures[:20]:
        print(f"  {failure}")
    print(f"leak checks: {tally.leak_checks}, canary round trips: {tally.canary_round_trips}")
    print(f"before: {before}")
    print(f"after:  {after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32, help="concurrent connections")
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # refusals are expected here by the thousand
    with tempfile.TemporaryDirectory(prefix="nanoiot-fuzz-") as tmp:
        directory = Path(tmp)
        broker = BrokerThread(broker_settings(directory / "data", tls_handshake_timeout=2.0))
        try:
            store = broker.running.store
            device = broker.call(store.create_device("soak-fuzzer"))
            broker.call(store.add_token_credential(device.id, TOKEN))
            canary = Canary(broker, directory)
            canary.check()
            started = time.monotonic()
            before = Baseline(broker).census
            tally = soak(broker, canary, args.cases, args.batch, args.seed)
            after = Baseline(broker).census
            report(tally, before, after, time.monotonic() - started)
            canary.close()
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
