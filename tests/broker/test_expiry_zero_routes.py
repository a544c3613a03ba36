"""Where a message whose Message Expiry Interval is 0 does not go (5.0 §3.3.2.3.3,
``broker.mqtt.expiry``): into the queue of a persistent session whose client is away or
leaving (nor its store), the retained messages (it deletes the topic's), or a gone cluster
member's sessions from its parked frames. An interval of 1 goes where it went. The whole,
with paho clients, is in tests/e2e/test_mqtt5_expiry_zero.py; across nodes in
tests/cluster/test_mqtt5_properties.py."""

import asyncio
from typing import TYPE_CHECKING, cast

from broker.cluster.frames import decode, encode
from broker.mqtt.connection import Connection
from broker.mqtt.expiry import deadline, expired, for_connected_only
from broker.mqtt.limits import Limits
from broker.mqtt.properties import Properties, Property
from broker.mqtt.session import Outgoing
from broker.retained import Retained as RetainedMessage
from broker.retained import RetainedStore, RetainLimits
from broker.router import Message
from broker.session_store import SqlSessionStore
from storage.sql import SqlCredentialStore
from tests.broker.stored_sessions import subscribed_away

if TYPE_CHECKING:
    from broker.client import MqttClient

ZERO = Properties([(Property.MESSAGE_EXPIRY_INTERVAL, 0)])
ONE = Properties([(Property.MESSAGE_EXPIRY_INTERVAL, 1)])
NOW = 50.0


def _message(
    payload: bytes, properties: Properties, retain: bool = False, now: float = NOW
) -> Message:
    return Message("a/b", payload, 1, retain, properties, deadline(properties, now))


async def test_a_session_whose_client_is_away_does_not_queue_it(
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    router, session = await subscribed_away(sessions, sqlite_store, 1)
    assert router.publish(_message(b"zero", ZERO)) is False  # nothing for the PUBACK to wait for
    # On the loop's clock: the broker takes a queued message out once its deadline passed.
    now = asyncio.get_running_loop().time()
    assert router.publish(_message(b"one", ONE, now=now)) is True
    assert [out.payload for out in session.queue] == [b"one"]
    assert router.metrics.limit_hits["message_expiry"] == 1
    await sessions.flush()
    stored = await sessions.load_one(session.key)
    assert stored is not None
    assert [out.payload for out in stored.queue] == [b"one"]  # not after a restart either


class _Leaving:
    """What the router reads of a client whose DISCONNECT was read (its acknowledgements
    still going out): the core's state, and what it is given."""

    def __init__(self) -> None:
        self.core = Connection(Limits())
        self.core.close()
        self.given: list[Outgoing] = []

    def deliver(self, out: Outgoing, later: object = None) -> None:
        self.given.append(out)


async def test_a_session_whose_client_is_leaving_is_not_given_it(
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    """Given now, it would be in flight to a connection that goes away, and sent again to
    the session's next one (§4.4): later than its lifetime."""
    router, session = await subscribed_away(sessions, sqlite_store, 1)
    leaving = _Leaving()
    session.client = cast("MqttClient", leaving)
    router.publish(_message(b"zero", ZERO))
    router.publish(_message(b"one", ONE))
    assert [out.payload for out in leaving.given] == [b"one"]
    assert router.metrics.limit_hits["message_expiry"] == 1


def test_a_retained_message_of_lifetime_0_leaves_the_topic_without_one() -> None:
    """It has expired before any later subscription could be sent it: the topic's previous
    retained message goes, as for an empty payload, on every node of a cluster."""
    told: list[tuple[str, RetainedMessage | None]] = []
    retained = RetainedStore(RetainLimits())
    retained.replica = lambda topic, kept: told.append((topic, kept))
    assert retained.retain("a/b", b"kept", 1, "dev", ONE, NOW + 1) is None
    assert retained.retain("a/b", b"zero", 1, "dev", ZERO, NOW) is None
    assert retained.matching("a/#") == []
    assert (len(retained), retained.total_bytes, retained.owned_by("dev")) == (0, 0, 0)
    assert told[-1] == ("a/b", None)
    assert retained.retain("a/c", b"one", 1, "dev", ONE, NOW + 1) is None
    assert [kept.payload for kept in retained.matching("a/#")] == [b"one"]


def test_a_frame_carries_lifetime_0_apart_from_a_time_left_of_0() -> None:
    """Cluster frames carry the time left in milliseconds: a message of lifetime 0 and one
    of 1 s forwarded after it ran out both cross with 0 left; the publisher's interval, in
    the properties' bytes, tells them apart on the receiving node."""
    frame = bytearray()
    encode(_message(b"zero", ZERO), frame, NOW + 0.002)
    encode(_message(b"one", ONE), frame, NOW + 1.5)
    zero, one = (routed.message for routed in decode(bytes(frame), 7.0))
    assert (zero.expires_at, one.expires_at) == (7.0, 7.0)
    assert for_connected_only(zero.properties)
    assert not for_connected_only(one.properties)
    for message, live in ((zero, True), (one, False)):
        copy = Outgoing("a/b", message.payload, 1, properties=message.properties)
        copy.expires_at = message.expires_at
        assert expired(copy, 7.001, publishing=True) is not live
