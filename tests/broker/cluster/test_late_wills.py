"""The delayed MQTT 5 will of a connection a member's fencing closed, its connect made while
NATS was lost (no claim, no entry any survivor reads): published once the member is back and
what is left of the delay passed, or at once when its client connects again with Clean
Start, which ends the session; dropped when it connects again without before the delay ended
(5.0 §3.1.3.2.2, [MQTT-3.1.3-9]), published late when that connect came after. A survivor's
adoption of the session is not its client coming back. On the machine's NATS
(``broker.cluster.wills``)."""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from broker.cluster.claim_value import adoption_value, claim_value
from broker.cluster.frames import to_key
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.will_entries import StoredWill
from broker.cluster.wills import DEPARTURES, Wills, taken_on_in_time
from broker.mqtt.packets import Will
from broker.mqtt.properties import Properties, Property
from broker.peer import store_key
from nanoiot.settings import Settings

WAIT = 10.0
KEY = ("0190d4a0-0000-7000-8000-000000000003", "sensor")
CLAIM = to_key(store_key(KEY))
LONG = 300  # a Will Delay Interval the test never waits out: a will that comes is not late


class _Cut:
    """What ``Wills`` reads of a 5.0 connection with a delayed will whose connect could not
    claim its session (NATS lost)."""

    def __init__(self, delay: int) -> None:
        self.peer = SimpleNamespace(
            key=KEY, canonical=lambda topic: f"devices/sensor/{topic}",
            decision=SimpleNamespace(holder=None),  # no credential, no chain: as before
            request=SimpleNamespace(chain=(), certificate=None),
        )  # fmt: skip
        self.label = "sensor"
        delayed = Properties([(Property.WILL_DELAY_INTERVAL, delay)])
        self.core = SimpleNamespace(
            will=Will("status", b"gone", 1, properties=delayed),
            v5=SimpleNamespace(session_expiry=600),
        )
        self.ended = False


@dataclass
class Fenced:
    """Member "a", its connection of ``_Cut`` closed by its fencing, and its claims bucket."""

    wills: Wills
    claims: KeyValue
    published: list[StoredWill] = field(default_factory=list)
    published_at: list[float] = field(default_factory=list)

    def fence(self, delay: int, claimed_at: int | None = None) -> float:
        """The connect (no claim), then the fencing that closes it: when it was fenced.
        ``claimed_at``: the revision of "a"'s last claim of the session, if any."""
        self.wills.claimed_at = lambda _key: claimed_at
        self.wills.unkept(_Cut(delay))  # type: ignore[arg-type]
        self.wills.fenced("a.1-0-1")
        return asyncio.get_running_loop().time()

    async def decided(self) -> None:
        """Until the held will is published or dropped (within ``WAIT``: never ``LONG``)."""
        async with asyncio.timeout(WAIT):
            await self.wills.settle(LONG)


@pytest.fixture
async def member(cluster_settings: Callable[..., Settings]) -> AsyncIterator[Fenced]:
    link = await ClusterLink.connect(cluster_settings())
    try:
        claims = await link.key_value("clients")
        made = Fenced(
            Wills(await link.key_value("wills"), await link.key_value(DEPARTURES), claims,
                  "a.1-0", lambda will: None),
            claims,
        )  # fmt: skip

        def publish(will: StoredWill) -> None:
            made.published.append(will)
            made.published_at.append(asyncio.get_running_loop().time())

        made.wills.publish = publish
        yield made
        await made.wills.stop()
    finally:
        await link.close()


@pytest.mark.parametrize("clean", [True, False], ids=["clean-start-1", "clean-start-0"])
@pytest.mark.parametrize("when", ["while-fenced", "once-back"])
async def test_a_connect_elsewhere_decides_the_will_at_once(
    member: Fenced, clean: bool, when: str
) -> None:
    """Its client connects to member "b" while "a" is fenced off, or once "a" is back and
    the will waits for its delay there."""
    member.fence(LONG)
    if when == "while-fenced":
        await member.claims.put(CLAIM, claim_value("b", clean))
    member.wills.back()
    if when == "once-back":
        await member.claims.put(CLAIM, claim_value("b", clean))
    await member.decided()  # long before the delay ends
    assert [will.key for will in member.published] == ([KEY] if clean else [])


async def test_a_connect_here_after_the_fencing_decides_the_will_at_once(member: Fenced) -> None:
    """Member "a" claimed the session for an earlier connection: a later claim of "a" is its
    client coming back there (with Clean Start, here)."""
    earlier = await member.claims.put(CLAIM, claim_value("a", False))
    member.fence(LONG, claimed_at=earlier)
    await member.claims.put(CLAIM, claim_value("a", True))
    member.wills.back()
    await member.decided()
    assert [will.key for will in member.published] == [KEY]


@pytest.mark.parametrize("known", [True, False], ids=["claim-known", "claim-not-known"])
@pytest.mark.parametrize("adopted", [False, True], ids=["claim-kept", "session-adopted"])
async def test_the_will_waits_out_its_delay_while_its_client_stays_away(
    member: Fenced, known: bool, adopted: bool
) -> None:
    """Member "a" claimed the session for an earlier connection (whether or not it remembers
    that claim: it may have restarted since), and a survivor of its ended run may have adopted
    the session: none of that is its client coming back."""
    delay = 1
    earlier = await member.claims.put(CLAIM, claim_value("a", False))
    fenced = member.fence(delay, claimed_at=earlier if known else None)
    if adopted:
        adoption = adoption_value("b", claim_value("a", False), earlier)
        await member.claims.update(CLAIM, adoption, earlier)
    member.wills.back()
    await member.decided()
    assert [will.key for will in member.published] == [KEY]
    assert member.published_at[0] - fenced >= delay - 0.05


async def _past(moment: float) -> None:
    """Once the event loop's clock passed ``moment``: the will's delay is what is waited for."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(moment - loop.time(), 0.0))


@pytest.mark.parametrize("connected", ["before-due", "after-due"])
async def test_a_connect_without_clean_start_drops_the_will_only_before_its_delay_ended(
    member: Fenced, connected: str
) -> None:
    """Its client connects to member "b" with Clean Start 0 while "a" is fenced off: before
    the will's delay ended, which cancels it ([MQTT-3.1.3-9]); or after, when the will was due
    already and goes late, once "a" is back (§3.1.3.2.2). Either way "a" reads the claim only
    once the delay ended: NATS's time of the write decides, not the reading's."""
    delay = 1
    fenced = member.fence(delay)
    if connected == "after-due":
        await _past(fenced + delay + 0.2)  # past the clocks' rounding
    await member.claims.put(CLAIM, claim_value("b", False))
    await _past(fenced + delay + 0.2)
    member.wills.back()
    await member.decided()
    assert [will.key for will in member.published] == ([KEY] if connected == "after-due" else [])


DUE = 1_000_000.0  # when a will's delay ends, in seconds since the epoch


@pytest.mark.parametrize(
    ("claim", "written_at", "taken_on"),
    [
        (claim_value("b", False), DUE - 1, True),  # within the delay: cancelled
        (claim_value("b", False), DUE, False),  # the will was due: it went
        (claim_value("b", False), DUE + 30, False),
        (claim_value("b", True), DUE - 1, False),  # the session ended: the will goes
        (claim_value("b", True), DUE + 30, False),
        (claim_value("b", False), None, True),  # when is not known: Clean Start decides
        # An adoption's write is not its connect's: Clean Start decides.
        (adoption_value("c", claim_value("b", False), 7), DUE + 30, True),
        (adoption_value("c", claim_value("b", True), 7), DUE - 1, False),
    ],
)
def test_a_connect_cancels_a_delayed_will_only_if_it_took_the_session_on_before_it_was_due(
    claim: bytes, written_at: float | None, taken_on: bool
) -> None:
    assert taken_on_in_time(claim, written_at, DUE) is taken_on
