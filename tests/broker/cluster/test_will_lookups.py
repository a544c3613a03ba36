"""A dead member's wills decided ``cluster_max_will_lookups`` at a time
(``broker.cluster.will_decision``): a survivor settling a run of many wills has that many
database lookups under way at once, never more, and publishes each will it decided, or drops
it. Over the machine's NATS and a real SQLite credential store, whose certificate lookup is
counted (and held until the bound is reached, so that the count is exact)."""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from auth.certificate import parse_credential
from broker.authn import Authenticator
from broker.cluster.will_decision import Decisions
from broker.cluster.will_entries import encode_will
from nanoiot.settings import Settings
from storage.sql import SqlCredentialStore
from tests.broker.cluster.survivors import DEAD, GONE, WAIT, Buckets, claim_key, open_buckets
from tests.certgen import issue

WILLS = 12


@pytest.fixture
async def buckets(cluster_settings: Callable[..., Settings]) -> AsyncIterator[Buckets]:
    async with open_buckets(cluster_settings(), None) as made:
        yield made


async def _wills_of_devices(buckets: Buckets, store: SqlCredentialStore) -> None:
    """``WILLS`` wills of the dead run, each of a device of its own admitted by certificate;
    the first device's certificate revoked since."""
    for n in range(WILLS):
        issued = issue(f"d{n}")
        device = await store.create_device(f"d{n}")
        await store.add_x509_credential(device.id, parse_credential(issued.cert_pem.encode()))
        will = await buckets.will(f"c{n}")
        chain = (issued.cert.public_bytes(Encoding.DER),)
        kept = replace(will, key=(str(device.id), f"c{n}"), chain=chain)
        await buckets.wills.put(f"{DEAD}.{claim_key(f'c{n}')}", encode_will(kept))
        if n == 0:
            assert await store.revoke_x509(device.id)


@pytest.mark.parametrize("bound", [1, 4])
async def test_a_survivor_decides_a_dead_runs_wills_at_most_the_bound_at_once(
    buckets: Buckets,
    sqlite_store: SqlCredentialStore,
    monkeypatch: pytest.MonkeyPatch,
    bound: int,
) -> None:
    await _wills_of_devices(buckets, sqlite_store)
    looked_up, under_way, most = 0, 0, 0
    full = asyncio.Event()  # the bound reached: every lookup goes on from then on
    find_x509 = sqlite_store.find_x509

    async def counted(*args: object) -> object:
        nonlocal looked_up, under_way, most
        looked_up, under_way = looked_up + 1, under_way + 1
        most = max(most, under_way)
        if under_way == bound:
            full.set()
        try:
            await full.wait()
            return await find_x509(*args)  # type: ignore[arg-type]
        finally:
            under_way -= 1

    monkeypatch.setattr(sqlite_store, "find_x509", counted)
    survivor = buckets.survivor("b")
    survivor.survivor.refusal = Decisions(Authenticator(sqlite_store), bound)
    survivor.survivor.in_flight = bound
    survivor.member_gone(GONE)
    async with asyncio.timeout(WAIT):
        await buckets.settled()
    assert (looked_up, most) == (WILLS, bound)
    assert sorted(client for _, client in buckets.published) == sorted(
        f"c{n}" for n in range(1, WILLS)
    )
    assert survivor.refused == 1
