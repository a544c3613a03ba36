"""A live member whose route table lags behind a session's hand-over by more than
``HOLD_WITHIN`` (but less than ``cluster_handover_window``) still has its messages for the
session reach it once each and in the order it routed them (MQTT 3.1.1 §4.6, 5.0 §4.6).

Node C's key-value watch reaches it ``LAG`` seconds late (a proxy holds back the route
bucket's messages, and only those: C is live, its heartbeats and confirmations go through);
node A gets the frames routed to it a moment late (``A_BEHIND``), so a message sent on
through A trails one sent to B directly. A publisher on C sends a numbered QoS 1 stream to a
persistent subscriber's topic while the subscriber's client moves from A to B (a take-over,
§3.1.4): C routes to A until its table shows B, A sends on to B, and B must hold what comes
until C's barrier (behind what C routed to A) came, however long C's table takes within the
window. Real paho clients over TLS, nodes as separate processes on the machine's NATS and
PostgreSQL."""

import asyncio
import itertools
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker.cluster.arrivals import HOLD_WITHIN
from tests.cluster.moving import (
    FILTER,
    ROOMY_QUEUES,
    Publisher,
    Subscriber,
    acknowledged_and_received,
    ranges,
    subscribed_on_a,
)
from tests.cluster.nodes import cluster
from tests.cluster.parking import until_nobody_listens
from tests.cluster.proxy import nats_proxy

pytestmark = pytest.mark.slow

# C's route table this much behind: more than HOLD_WITHIN, less than the hand-over window
# (10 s) and than the 5 s a member has to confirm a frame (what B holds is confirmed once C's
# barrier came).
LAG = 3.0
# The same for the dead member's variant: a hand-over that reads a dead member's parked frames
# waits HOLD_WITHIN more for the others' barriers once the reading gave up, so more than
# twice HOLD_WITHIN (what C routes then is parked: acknowledged without waiting for B).
PARKING_LAG = 4.5
# Seconds the frames sent on through A (or parked for it) take longer: far more than the
# publisher's gap between two messages.
A_BEHIND = 0.2
BEFORE = 100  # numbers the subscriber gets on A before it moves
AFTER = 400  # new numbers it gets on B before the publisher stops: past C's table catching up
MORE = 100  # numbers the publisher sends once C's table is no longer held back


class DupSubscriber(Subscriber):
    """S, with each delivery's DUP flag (MQTT 3.1.1 §3.3.1.1) kept too."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.dups: list[list[bool]] = []

    def _take(self, index: int, message: mqtt.MQTTMessage) -> None:
        if message.payload.isdigit():
            while len(self.dups) <= index:
                self.dups.append([])
            self.dups[index].append(bool(message.dup))
        super()._take(index, message)


def test_a_live_member_lagging_past_hold_within_keeps_its_publishers_order(
    tmp_path: Path,
) -> None:
    assert HOLD_WITHIN < LAG
    with nats_proxy() as to_c, nats_proxy() as to_a, cluster(tmp_path) as nodes:
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a", NANOIOT_NATS_URL=to_a.url, **ROOMY_QUEUES)
        nodes.start("b", **ROOMY_QUEUES)
        nodes.start("c", NANOIOT_NATS_URL=to_c.url, **ROOMY_QUEUES)
        to_a.delay(A_BEHIND, subjects=(f"{name}.route.a",))
        with DupSubscriber(nodes, "backend", 4) as subscriber:
            device = subscribed_on_a(subscriber, FILTER, 1, sensor, "c", "sensor")
            with Publisher(device, 1) as publisher:
                assert subscriber.receive_new(BEFORE), subscriber.counts()
                to_c.delay(LAG, subjects=(f"$KV.{name}_routes.",))
                mark = len(nodes.nodes["b"].log.lines)
                subscriber.move("b", "take-over")
                assert subscriber.receive_new(AFTER), subscriber.counts()
                to_c.delay(0)
                acknowledged = acknowledged_and_received(publisher, subscriber, MORE)
        b = nodes.nodes["b"].log
    _check_once_in_order(subscriber, acknowledged)
    # B held past HOLD_WITHIN for C, and gave no barrier up.
    assert b.wait_for(r"waiting for the hand-over barrier of live members .*\bc\b", after=mark)
    assert not [line for line in b.lines[mark:] if "no hand-over barrier" in line]


def test_a_live_member_lagging_past_hold_within_parks_in_order_for_a_dead_one(
    tmp_path: Path,
) -> None:
    """The same with the session's node A killed, its client away: C, whose table lags,
    parks what it routes for A until its table shows B, where the client took the session;
    B reads the parked frames (a moment late: ``A_BEHIND``) and must wait for C's barrier
    behind them before what C routes to it directly goes to the session."""
    assert 2 * HOLD_WITHIN < PARKING_LAG
    with nats_proxy() as to_c, nats_proxy() as to_b, cluster(tmp_path) as nodes:
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        # A is taken as gone by its heartbeats after the test (its client takes the session).
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "5.0"
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a", **ROOMY_QUEUES)
        nodes.start("b", NANOIOT_NATS_URL=to_b.url, **ROOMY_QUEUES)
        nodes.start("c", NANOIOT_NATS_URL=to_c.url, **ROOMY_QUEUES)
        to_b.delay(A_BEHIND, subjects=(f"{name}.parked.",))
        with DupSubscriber(nodes, "backend", 4) as subscriber:
            device = subscribed_on_a(subscriber, FILTER, 1, sensor, "c", "sensor")
            subscriber.close()
            nodes.kill("a")
            asyncio.run(until_nobody_listens(f"{name}.route.a"))
            to_c.delay(PARKING_LAG, subjects=(f"$KV.{name}_routes.",))
            mark = len(nodes.nodes["b"].log.lines)
            with Publisher(device, 1) as publisher:  # parked for A, until C's table shows B
                subscriber.connect("b")
                assert subscriber.receive_new(AFTER), subscriber.counts()
                to_c.delay(0)
                acknowledged = acknowledged_and_received(publisher, subscriber, MORE)
        b = nodes.nodes["b"].log
    _check_once_in_order(subscriber, acknowledged)
    assert not [line for line in b.lines[mark:] if "no barrier behind their parked" in line]


def _check_once_in_order(subscriber: DupSubscriber, acknowledged: set[int]) -> None:
    """Every acknowledged number came; each number new to the session after its
    predecessor, on whichever connection; a number again only on a later connection with
    DUP set (sent again after the take-over, §4.4)."""
    problems, seen, firsts = [], set[int](), []
    for index, conn in enumerate(subscriber.connections):
        dups = subscriber.dups[index] if index < len(subscriber.dups) else []
        here: set[int] = set()
        for (number, _qos), dup in zip(conn, dups, strict=True):
            if number in here or (number in seen and not dup):
                problems.append(f"connection {index}: {number} again (DUP {dup})")
            elif number not in seen:
                firsts.append(number)
            here.add(number)
        seen |= here
    missing = sorted(acknowledged - seen)
    if missing:
        problems.append(f"{len(missing)} acknowledged never came: {ranges(missing)}")
    behind = [(a, b) for a, b in itertools.pairwise(firsts) if b <= a]
    if behind:
        problems.append(f"{len(behind)} out of order: {behind[:10]}")
    assert not problems, "\n".join(problems[:20])
