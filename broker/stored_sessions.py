"""Persistent sessions read back from the store as the broker's (``SessionStore.load_page``,
``load_one``): after a restart, or on the member of a cluster a session moved to.

Each comes back with its client away: its subscriptions, its messages in order (sent ones in
flight again with their packet ids, §4.4), the QoS 2 packet ids its client's PUBLISHes hold
until PUBREL (§4.3.3) with what routing their messages again needs, and the cluster-wide ids
of the QoS 2 messages it holds or completed last (``BrokerSession.brought``). Its expiry
counts from when its client left (§3.1.2.11.2). Nothing here writes to the store.
"""

import asyncio
import logging
from datetime import datetime

from broker.journal_entries import Ref
from broker.mqtt.limits import NEVER_EXPIRES
from broker.mqtt.properties import NO_PROPERTIES, PUBLISH, Properties, read_properties
from broker.mqtt.session import QUEUED, RELEASED, Outgoing, Subscription
from broker.mqtt.session import SENT as IN_FLIGHT
from broker.mqtt.wire import Reader
from broker.peer import store_key
from broker.sessions import BrokerSession, Unrouted
from storage.models import utcnow
from storage.session_data import StoredMessage, StoredSession, StoredSubscription

log = logging.getLogger(__name__)


def session_from(record: StoredSession, persistent_expiry: int = 0) -> BrokerSession | None:
    """The broker's session as ``record`` keeps it, its client away; None (logged) for one
    whose key does not match its device. ``persistent_expiry``: ``persistent_session_expiry``,
    the interval of a 3.1/3.1.1 session stored without one (0: it has none)."""
    key = (str(record.device_id), record.client_id)
    if store_key(key) != record.key:
        log.warning("stored session %r does not match its device: skipped", record.key)
        return None
    session = BrokerSession(key, record.device_name, persistent=True)
    wall, clock = utcnow(), asyncio.get_running_loop().time()
    expiry = record.expiry_interval
    if expiry is None and persistent_expiry:
        # Kept while 3.1/3.1.1 sessions never expired: once they do, the old ones expire
        # too, their interval counted from their client's disconnection like the others'.
        expiry = persistent_expiry
    session.expiry = expiry
    if expiry is not None and expiry != NEVER_EXPIRES:
        # §3.1.2.11.2: the interval runs from the disconnection; a session whose client was
        # still connected when the broker stopped runs it from now.
        away = record.disconnected_at or wall
        session.expiry_left = expiry - (wall - away).total_seconds()
    for sub in record.subscriptions:
        session.subscriptions[sub.topic_filter] = _subscription(sub)
    for row in record.queued:
        session.restore(_message(record.key, row, wall, clock))
    # A copy of one of these routed again does not reach it (``broker.cluster.resend``):
    # those it holds, and those it completed last (where it was before, or here).
    brought = {row.message_id for row in record.queued if row.message_id}
    brought.update(record.completed)
    brought.discard(0)
    session.brought = brought or None
    session.completions = record.completions
    # §4.3.3: a QoS 2 PUBLISH its client sends again before PUBREL is not routed again,
    # unless its routing was not confirmed (``broker.cluster.resend``).
    session.awaiting_pubrel.update(record.awaiting_pubrel)
    unrouted = {i: r for i, text in record.unrouted.items() if (r := Unrouted.read(text))}
    session.unrouted = unrouted or None
    return session


def _subscription(stored: StoredSubscription) -> Subscription:
    options = stored.options
    return Subscription(
        stored.qos, bool(options & 0x04), bool(options & 0x08), (options >> 4) & 0x03,
        stored.identifier, me_form=stored.me_form,
    )  # fmt: skip


def _message(key: str, row: StoredMessage, wall: datetime, clock: float) -> Outgoing:
    """The message as queued before the restart; its expiry, if any, counts from when it was
    received (§3.3.2.3.3): one already expired is deleted as the session is taken in
    (``Registry.restore``)."""
    properties = _properties(row.properties)
    interval = properties.message_expiry
    expires_at = None
    if isinstance(interval, int):
        received = row.received_at or wall
        expires_at = clock + interval - (wall - received).total_seconds()
    message = Outgoing(row.topic, row.payload, row.qos, row.retain, properties, expires_at)
    if row.packet_id:  # sent before: in flight again with its id (§4.4)
        message.packet_id = row.packet_id
        message.state = RELEASED if row.released else IN_FLIGHT
        message.sent = True
    else:
        message.state = QUEUED
        message.sent = row.attempted
    message.stored = Ref(key, message, row.id)
    message.message_id = row.message_id or 0
    return message


def _properties(stored: bytes | None) -> Properties:
    if not stored:
        return NO_PROPERTIES
    return read_properties(Reader(stored), PUBLISH, users=None)  # accepted before
