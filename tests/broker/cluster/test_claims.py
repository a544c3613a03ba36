"""Session claims racing on two members (``broker.cluster.sessions``, MQTT 3.1.1 §3.1.4) on the
machine's NATS: the order in which a member reads the answer to its own compare-and-set and
another member's take-over request does not decide which connection stays."""

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from broker.cluster.frames import to_key
from broker.cluster.kv import KeyValue
from broker.cluster.sessions import SessionClaims
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.peer import store_key
from broker.registry import Registry
from broker.repeats import LimitedLoggers
from broker.router import LocalRouter
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from nanoiot.settings import Settings
from tests.broker.cluster.joined import joined

if TYPE_CHECKING:
    from broker.client import MqttClient

WAIT = 10.0
KEY = ("0190d4a0-0000-7000-8000-000000000001", "sensor")


class _Connection:
    """What ``SessionClaims`` uses of a connection: its session key, and being closed."""

    def __init__(self, label: str) -> None:
        self.peer = SimpleNamespace(key=KEY, owner=KEY[0])
        self.broker = SimpleNamespace(device_lines=LimitedLoggers(interval=60.0, repeats=5))
        self.label = label
        self.ended = False
        self.will: bool | None = None  # whether it was closed with its will

    async def taken_over(self, *, will: bool) -> None:
        self.ended, self.will = True, will


class _AnswerHeld(KeyValue):
    """The bucket as one member sees it, the answer to its create read only once the member
    has another member's take-over request: NATS delivers both at once to a member that was
    busy, and the request's handler then runs first."""

    def __init__(self, bucket: KeyValue, request_read: asyncio.Event) -> None:
        super().__init__(bucket._store, bucket.bucket, bucket._js)
        self.written = asyncio.Event()
        self._request_read = request_read

    async def create(self, key: str, value: bytes) -> int:
        revision = await super().create(key, value)
        self.written.set()
        await asyncio.wait_for(self._request_read.wait(), WAIT)
        return revision


class _Watched(SessionClaims):
    """Claims whose take-over handler tells when a request reached it."""

    request_read: asyncio.Event

    async def _close(self, payload: bytes, reply: str | None) -> bytes:
        self.request_read.set()
        return await super()._close(payload, reply)


def _registry() -> Registry:
    store = MemorySessionStore()
    return Registry(LocalRouter(store, Limits(), BrokerMetrics()), store)


async def test_a_request_read_before_the_answer_to_the_own_claim_closes_that_claim(
    cluster_settings: Callable[..., Settings],
) -> None:
    """A claims first, B replaces A's claim and asks A to give the session up; A reads
    that request before the answer to its own create. The request names A's claim: its
    connection is closed and the session is B's alone, not kept on both members."""
    async with (
        joined(cluster_settings(node_name="a")) as link_a,
        joined(cluster_settings(node_name="b")) as link_b,
    ):
        request_read = asyncio.Event()
        bucket_a = _AnswerHeld(await link_a.key_value("clients"), request_read)
        on_a = _Watched(link_a, bucket_a, _registry())
        on_a.request_read = request_read
        on_b = SessionClaims(link_b, await link_b.key_value("clients"), _registry())
        for claims in (on_a, on_b):
            await claims.start()
        client_a, client_b = _Connection("sensor on a"), _Connection("sensor on b")
        claiming = asyncio.create_task(on_a.claim(cast("MqttClient", client_a), clean=False))
        await asyncio.wait_for(bucket_a.written.wait(), WAIT)
        assert await on_b.claim(cast("MqttClient", client_b), clean=False)  # it asked A
        assert await asyncio.wait_for(claiming, WAIT)
        assert client_a.ended  # taken over (§3.1.4)
        assert not on_a.holds(KEY)  # A's connect sees it lost the session
        assert on_a.taken_away == 1
        assert on_b.holds(KEY)
        assert not client_b.ended


@pytest.mark.parametrize(
    ("persistent", "away", "clean", "will"),
    [
        (True, False, False, False),  # the session goes on (5.0 §3.1.3.2.2 [MQTT-3.1.3-9])
        (True, False, True, True),  # Clean Start ends it
        (False, False, False, True),  # it ended with the connection taken over
        (True, True, False, False),  # a will waiting for its delay is dropped...
        (True, True, True, True),  # ... or goes now, as the session ends
    ],
)
async def test_a_take_over_request_carries_whether_the_connect_ends_the_session(
    cluster_settings: Callable[..., Settings], persistent: bool, away: bool, clean: bool,
    will: bool,
) -> None:  # fmt: skip
    """B's request says whether its connect has Clean Start; A applies the one rule
    (``BrokerSession.ends_with_connect``) to its connection's will, or to the will its
    session has waiting for its delay while its client is away."""
    async with (
        joined(cluster_settings(node_name="a")) as link_a,
        joined(cluster_settings(node_name="b")) as link_b,
    ):
        registry_a = _registry()
        session = registry_a.sessions[KEY] = BrokerSession(KEY, "sensor", persistent=persistent)
        published: list[bool] = []
        if away:
            session.pending_will = lambda: published.append(True)
        on_a = SessionClaims(link_a, await link_a.key_value("clients"), registry_a)
        on_b = SessionClaims(link_b, await link_b.key_value("clients"), _registry())
        for claims in (on_a, on_b):
            await claims.start()
        client_a, client_b = _Connection("sensor on a"), _Connection("sensor on b")
        client_a.ended = away
        assert await on_a.claim(cast("MqttClient", client_a), clean=False)
        assert await on_b.claim(cast("MqttClient", client_b), clean=clean)
        assert KEY not in registry_a.sessions  # given up
        if away:
            assert published == ([True] if will else [])
        else:
            assert client_a.will is will


@pytest.mark.parametrize("unknown", [b"\xff\xfe", b"node.of.another.kind held"])
async def test_a_claim_naming_no_member_this_version_reads_is_replaced_without_asking(
    cluster_settings: Callable[..., Settings], unknown: bytes
) -> None:
    """A session's claim in a form this version does not know, whose first word is no
    member's name (a node of another version, or another writer of the bucket): a connect
    claims the session, asks nobody, and holds it (``broker.cluster.claim_value``)."""
    async with joined(cluster_settings(node_name="b")) as link_b:
        bucket = await link_b.key_value("clients")
        await bucket.put(to_key(store_key(KEY)), unknown)
        on_b = SessionClaims(link_b, bucket, _registry())
        await on_b.start()
        client = _Connection("sensor on b")
        assert await asyncio.wait_for(on_b.claim(cast("MqttClient", client), clean=False), WAIT)
        assert on_b.holds(KEY)
        entry = await bucket.get(to_key(store_key(KEY)))
        assert entry is not None
        assert entry.value == b"b"
