"""Malformed MQTT packets from Hypothesis, right after the TLS handshake and after a CONNECT.

Each example is a batch of packets, one connection each, sent concurrently. Packets that
break a MUST of MQTT 3.1.1 must get their connection closed (§4.8); random and mutated
packets may get anything but a crash. After every batch: no task, session, peer, TLS
connection or file descriptor left behind (``canary.Baseline``), and the canary still
round-trips. ``bench/soak/fuzz.py`` runs the same strategies 100,000 times.
"""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.harness import BrokerThread
from tests.reliability import packets
from tests.reliability.canary import Baseline, Canary
from tests.reliability.wire import Target, client_context, run_batch

BATCH = 16
FUZZ_TOKEN = "fuzz-token"  # a test credential
_FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def target(rbroker: BrokerThread) -> Target:
    store = rbroker.running.store
    device = rbroker.call(store.create_device("fuzzer"))
    rbroker.call(store.add_token_credential(device.id, FUZZ_TOKEN))
    return Target(rbroker.port, client_context(rbroker.server_cert), FUZZ_TOKEN)


@pytest.fixture(scope="module")
def baseline(rbroker: BrokerThread, target: Target, canary: Canary) -> Baseline:
    """Counted after one valid client came and went (the store's pool is warm by then)."""
    warm_up = [packets.PINGREQ_PACKET]
    failures = asyncio.run(
        run_batch(target, warm_up, after_connect=True, must_close=False, tag="w")
    )
    assert failures == []
    return Baseline(rbroker)


def _broker_is_unharmed(baseline: Baseline, canary: Canary, failures: list[str]) -> None:
    assert failures == []
    assert baseline.leaks() == []
    canary.check()


def _batch(strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes]]:
    return st.lists(strategy, min_size=BATCH, max_size=BATCH)


@settings(_FUZZ, max_examples=60)
@given(cases=_batch(packets.violations()))
def test_violations_after_connect_close_the_connection(
    target: Target, baseline: Baseline, canary: Canary, cases: list[bytes]
) -> None:
    failures = asyncio.run(
        run_batch(target, cases, after_connect=True, must_close=True, tag="after")
    )
    _broker_is_unharmed(baseline, canary, failures)


@settings(_FUZZ, max_examples=40)
@given(cases=_batch(packets.first_packet_violations()))
def test_bad_first_packets_close_the_connection(
    target: Target, baseline: Baseline, canary: Canary, cases: list[bytes]
) -> None:
    failures = asyncio.run(
        run_batch(target, cases, after_connect=False, must_close=True, tag="first")
    )
    _broker_is_unharmed(baseline, canary, failures)


@settings(_FUZZ, max_examples=40)
@given(cases=_batch(packets.noise()), after_connect=st.booleans())
def test_noise_is_survived(
    target: Target, baseline: Baseline, canary: Canary, cases: list[bytes], after_connect: bool
) -> None:
    failures = asyncio.run(
        run_batch(target, cases, after_connect=after_connect, must_close=False, tag="noise")
    )
    _broker_is_unharmed(baseline, canary, failures)
