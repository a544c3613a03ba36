"""Shared subscriptions ``$share/{group}/{filter}`` (MQTT 5.0 §4.8.2) for MQTT 3.1.1 devices:
real paho clients over mutual TLS, each with its own device certificate."""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import pytest

from broker.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from nanoiot.settings import Settings
from tests.certgen import Issued
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, running_broker, write_pem
from tests.e2e.peers import Paho, Raw
from tests.e2e.v5_client import v5_client

# Devices may use jobs/# (the work the groups share) but not secret/#.
RULES = [
    {"who": "device", "action": "both", "topic": "jobs/#"},
    {"who": "device", "action": "both", "topic": "report/#"},
    {"who": "device", "action": "subscribe", "topic": "report/private/#", "effect": "deny"},
]
Inbox = Queue[tuple[str, bytes]]


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return broker_settings(tmp_path / "data", acl_rules=RULES, **overrides)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with running_broker(tmp_path / "data", acl_rules=RULES) as running:
        yield running


class Fleet:
    """Devices connected with paho; every message any of them receives lands in ``inbox``
    as (device name, payload)."""

    def __init__(self, broker: BrokerThread, directory: Path) -> None:
        self.broker = broker
        self.directory = directory
        self.inbox: Inbox = Queue()
        self.certificates: dict[str, Issued] = {}
        self.clients: list[Paho] = []
        self.present: dict[str, bool] = {}  # each device's last CONNACK session present flag

    def connect(self, name: str, *, clean: bool = True, manual_ack: bool = False) -> Paho:
        issued = self.certificates.get(name)
        if issued is None:
            _, issued = self.broker.provision(name)
            self.certificates[name] = issued
        certfile = write_pem(self.directory, issued, name)
        inbox = self.inbox
        client = Paho(
            self.broker.port, self.broker.server_cert, certfile, name,
            clean_session=clean, manual_ack=manual_ack,
            on_message=lambda message: inbox.put((name, bytes(message.payload))),
        )  # fmt: skip
        code, self.present[name] = client.connack()
        assert code == 0
        self.clients.append(client)
        return client

    def receive(self, count: int) -> list[tuple[str, bytes]]:
        return [self.inbox.get(timeout=WAIT) for _ in range(count)]

    def nothing_more(self, within: float = 0.5) -> bool:
        try:
            self.inbox.get(timeout=within)
        except Empty:
            return True
        return False

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def fleet(broker: BrokerThread, tmp_path: Path) -> Iterator[Fleet]:
    devices = Fleet(broker, tmp_path)
    yield devices
    devices.close()


def test_each_group_gets_one_copy_round_robin_over_its_members(fleet: Fleet) -> None:
    workers = [fleet.connect(f"worker-{i}") for i in range(3)]
    auditors = [fleet.connect(f"auditor-{i}") for i in range(2)]
    watcher = fleet.connect("watcher")
    for worker in workers:
        assert worker.subscribe(("$share/workers/jobs/#", 1)) == [1]
    for auditor in auditors:
        assert auditor.subscribe(("$share/audit/jobs/+", 1)) == [1]
    assert watcher.subscribe(("jobs/#", 1)) == [1]  # an ordinary subscriber gets everything
    publisher = fleet.connect("publisher")

    payloads = [f"job {n}".encode() for n in range(30)]
    for payload in payloads:
        publisher.publish("jobs/queue", payload, 1)
    received = fleet.receive(90)
    assert fleet.nothing_more()

    by_group: dict[str, list[bytes]] = {"worker": [], "auditor": [], "watcher": []}
    for name, payload in received:
        by_group[name.split("-")[0]].append(payload)
    for group in by_group.values():  # each group: every message exactly once
        assert sorted(group) == sorted(payloads)
    per_member = Counter(name for name, _ in received)
    # Round robin: members that can all take more share the messages evenly.
    assert [per_member[f"worker-{i}"] for i in range(3)] == [10, 10, 10]
    assert [per_member[f"auditor-{i}"] for i in range(2)] == [15, 15]


def test_a_member_with_a_full_in_flight_window_is_skipped(tmp_path: Path) -> None:
    broker = BrokerThread(settings_for(tmp_path, max_inflight_messages=2))
    fleet = Fleet(broker, tmp_path)
    try:
        stuck = fleet.connect("stuck", manual_ack=True)  # never acknowledges, for now
        able = fleet.connect("able")
        for member in (stuck, able):
            assert member.subscribe(("$share/g/jobs/#", 1)) == [1]
        publisher = fleet.connect("publisher")
        recipients = []
        for n in range(10):
            publisher.publish("jobs/x", b"%d" % n, 1)
            recipients.append(fleet.inbox.get(timeout=WAIT)[0])
        # Turns alternate until "stuck" has 2 unacknowledged messages; from then on its turn
        # passes to "able" instead of queueing behind the window.
        assert recipients == ["stuck", "able", "stuck"] + ["able"] * 7
        assert fleet.nothing_more()
    finally:
        fleet.close()
        broker.stop()


def test_what_a_member_left_unacknowledged_goes_to_another(fleet: Fleet) -> None:
    leaver = fleet.connect("leaver", manual_ack=True)  # receives, never acknowledges
    stayer = fleet.connect("stayer")
    assert leaver.subscribe(("$share/g/jobs/#", 1)) == [1]
    assert stayer.subscribe(("$share/g/jobs/#", 1)) == [1]
    publisher = fleet.connect("publisher")
    publisher.publish("jobs/1", b"first", 1)
    assert fleet.receive(1) == [("leaver", b"first")]
    publisher.publish("jobs/2", b"second", 1)
    assert fleet.receive(1) == [("stayer", b"second")]
    leaver.drop()  # its clean session ends with "first" unacknowledged
    # MQTT 5.0 §4.8.2: the message the publisher had handed over goes to the other member.
    assert fleet.receive(1) == [("stayer", b"first")]
    assert fleet.nothing_more()


def test_acl_judges_the_filter_after_the_group_and_no_retained_message_is_sent(
    fleet: Fleet,
) -> None:
    publisher = fleet.connect("publisher")
    publisher.publish("jobs/config", b"retained", 1, retain=True)
    member = fleet.connect("member")
    granted = member.subscribe(
        ("$share/g/jobs/#", 1),  # jobs/# is allowed, whatever the $share/g/ before it
        ("$share/g/secret/#", 1),  # the filter is outside the ACL
        ("$share/g/report/private/#", 1),  # inside a deny rule
    )
    assert granted == [1, 128, 128]
    plain = fleet.connect("plain")
    assert plain.subscribe(("jobs/#", 1)) == [1]
    assert fleet.receive(1) == [("plain", b"retained")]  # §3.3.1.3 for the ordinary one
    publisher.publish("jobs/1", b"live", 1)
    assert sorted(fleet.receive(2)) == [("member", b"live"), ("plain", b"live")]
    assert fleet.nothing_more()  # the shared member never got the retained message


def test_malformed_shared_subscriptions_are_refused(fleet: Fleet) -> None:
    _, issued = fleet.broker.provision("raw")
    certfile = write_pem(fleet.directory, issued, "raw")
    with Raw(fleet.broker.port, fleet.broker.server_cert, certfile) as raw:
        raw.send(Connect(MQTT_3_1_1, "raw", True, 60))
        assert raw.read() == Connack(False, 0)
        # Well-formed 3.1.1 filters, but no shared subscriptions (5.0 §4.8.2): refused alone.
        filters = ["$share//jobs/#", "$share/g"]
        raw.send(Subscribe(7, tuple(SubscribeRequest(f, 1) for f in filters)))
        assert raw.read() == Suback(7, (0x80,) * 2)
    for malformed in ("$share/g+/jobs/#", "$share/g/jobs/#/x"):  # §4.7.1.3, §4.7.1.2
        with Raw(fleet.broker.port, fleet.broker.server_cert, certfile) as raw:
            raw.send(Connect(MQTT_3_1_1, "raw", True, 60))
            assert raw.read() == Connack(False, 0)
            raw.send(Subscribe(8, (SubscribeRequest(malformed, 1),)))
            assert raw.read() is None  # a protocol violation from 3.1.1: closed (§4.8)


def test_a_member_denied_the_topic_passes_its_turn(fleet: Fleet) -> None:
    wide, narrow = fleet.connect("wide"), fleet.connect("narrow")
    assert wide.subscribe(("$share/g/report/#", 1)) == [1]
    assert narrow.subscribe(("$share/g/report/#", 1)) == [1]
    publisher = fleet.connect("publisher")
    for n in range(4):  # both may receive report/public/...: they take turns
        publisher.publish("report/public/x", b"p%d" % n, 1)
    assert Counter(name for name, _ in fleet.receive(4)) == {"wide": 2, "narrow": 2}
    for n in range(4):  # neither may receive report/private/...: nobody gets it
        publisher.publish("report/private/x", b"s%d" % n, 1)
    publisher.publish("report/public/y", b"after", 1)
    assert [payload for _, payload in fleet.receive(1)] == [b"after"]
    assert fleet.nothing_more()


def test_unsubscribe_leaves_the_group_only(fleet: Fleet) -> None:
    first, second = fleet.connect("first"), fleet.connect("second")
    assert first.subscribe(("$share/g/jobs/#", 1), ("jobs/#", 1)) == [1, 1]
    assert second.subscribe(("$share/g/jobs/#", 1)) == [1]
    first.unsubscribe("$share/g/jobs/#")
    publisher = fleet.connect("publisher")
    publisher.publish("jobs/1", b"one", 1)
    publisher.publish("jobs/2", b"two", 1)
    received = sorted(fleet.receive(4))
    assert received == [
        ("first", b"one"), ("first", b"two"),  # through its ordinary subscription
        ("second", b"one"), ("second", b"two"),  # alone in the group now
    ]  # fmt: skip
    assert fleet.nothing_more()


def test_a_persistent_members_subscription_outlives_reconnect_and_restart(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    broker = BrokerThread(settings)
    fleet = Fleet(broker, tmp_path)
    try:
        keeper = fleet.connect("keeper", clean=False)
        assert keeper.subscribe(("$share/g/jobs/#", 1)) == [1]
        keeper.close()
        publisher = fleet.connect("publisher")
        # Its only member is away: the group's messages wait in its session.
        publisher.publish("jobs/1", b"while away", 1)
        keeper = fleet.connect("keeper", clean=False)
        assert fleet.receive(1) == [("keeper", b"while away")]
        keeper.close()
        # A member that is connected takes the turn of one that is away.
        other = fleet.connect("other")
        assert other.subscribe(("$share/g/jobs/#", 1)) == [1]
        publisher.publish("jobs/2", b"to the one there", 1)
        assert fleet.receive(1) == [("other", b"to the one there")]
        fleet.close()
        broker.stop()

        broker = fleet.broker = BrokerThread(settings)
        fleet.clients = []
        publisher = fleet.connect("publisher")
        publisher.publish("jobs/3", b"after restart", 1)
        keeper = fleet.connect("keeper", clean=False)
        assert fleet.present["keeper"]  # restored from the store (§3.2.2.2)
        assert fleet.receive(1) == [("keeper", b"after restart")]
        assert fleet.nothing_more()
    finally:
        fleet.close()
        broker.stop()


def test_many_messages_many_members_exactly_once(fleet: Fleet) -> None:
    members = [fleet.connect(f"m{i}") for i in range(5)]
    for member in members:
        assert member.subscribe(("$share/g/jobs/#", 1)) == [1]
    publisher = fleet.connect("publisher")
    payloads = [b"%d" % n for n in range(500)]
    for payload in payloads:  # without waiting for each PUBACK
        publisher.paho.publish("jobs/bulk", payload, qos=1)
    received = fleet.receive(len(payloads))
    assert sorted(payload for _, payload in received) == sorted(payloads)
    assert fleet.nothing_more()
    assert len({name for name, _ in received}) == 5


def test_mqtt_5_and_3_1_1_members_share_one_group(fleet: Fleet) -> None:
    broker = fleet.broker
    _, issued = broker.provision("modern")
    modern = v5_client(
        broker.port, broker.server_cert, write_pem(fleet.directory, issued, "modern"),
        client_id="modern",
    )  # fmt: skip
    try:
        assert modern.wait_connack()[0] == 0
        inbox = fleet.inbox
        modern.paho.on_message = lambda _c, _u, m: inbox.put(("modern", bytes(m.payload)))
        classic = fleet.connect("classic")
        assert modern.subscribe("$share/g/jobs/#") == [1]
        assert classic.subscribe(("$share/g/jobs/#", 1)) == [1]
        publisher = fleet.connect("publisher")
        for n in range(4):
            publisher.publish("jobs/mixed", b"%d" % n, 1)
        received = fleet.receive(4)
        # In turn, one each; the two connections' deliveries may reach the inbox interleaved
        # either way (order holds per subscriber, MQTT 3.1.1 §4.6, not across them).
        assert [payload for who, payload in received if who == "modern"] == [b"0", b"2"]
        assert [payload for who, payload in received if who == "classic"] == [b"1", b"3"]
        assert fleet.nothing_more()
    finally:
        modern.close()


def test_no_local_on_a_shared_subscription_closes_a_5_client(fleet: Fleet) -> None:
    _, issued = fleet.broker.provision("sloppy")
    certfile = write_pem(fleet.directory, issued, "sloppy")
    with Raw(fleet.broker.port, fleet.broker.server_cert, certfile, MQTT_5) as raw:
        raw.send(Connect(MQTT_5, "s", True, 60))
        assert isinstance(raw.read(), Connack)
        raw.send(Subscribe(1, (SubscribeRequest("jobs/#", 1, no_local=True),)))
        assert raw.read() == Suback(1, (1,))  # fine on an ordinary subscription
        raw.send(Subscribe(2, (SubscribeRequest("$share/g/jobs/#", 1, no_local=True),)))
        # MQTT 5 §3.8.3.1: a protocol error, so no SUBACK: the connection closes (a DISCONNECT
        # saying 0x82 first is allowed, §4.13.1).
        answer = raw.read()
        assert answer is None or (isinstance(answer, Disconnect) and answer.code == 0x82)
        assert raw.closed()
