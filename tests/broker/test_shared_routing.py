"""The router's way through a shared subscription (MQTT 5.0 §4.8.2): the member whose turn
it is gets the message if it can take it now, without every member being ranked; otherwise
the ranking decides (one whose client can send it at once, before one whose in-flight window
is full, before one whose client is away; never one whose ACL denies the topic). Nothing
about a member is remembered from one message to the next: a change of its ACL, of its
window, its leaving, all count from the next message on. Real router, real sessions; the
clients stand in for connections (what they were given, whether they can send now)."""

import re

import pytest

import broker.router
from broker import shared_members
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Outgoing, Subscription
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from broker.shared_members import SharedOutgoing

FILTER = "$share/g/jobs/#"


class _Core:
    state = 0


class _Client:
    """What the router asks of a connected client."""

    def __init__(self) -> None:
        self.got: list[Outgoing] = []
        self.free = True  # whether a message would go out at once (``can_send_now``)
        self.core = _Core()

    def deliver(self, message: Outgoing, later: object = None) -> None:
        self.got.append(message)

    def can_send_now(self, qos: int) -> bool:
        return self.free


def _router() -> LocalRouter:
    return LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())


def _member(router: LocalRouter, name: str, qos: int = 1) -> BrokerSession:
    session = BrokerSession((name, "c"), name, persistent=False)
    session.client = _Client()  # type: ignore[assignment]
    sub = Subscription(qos)
    session.subscriptions[FILTER] = sub
    router.subscribe(session, FILTER, sub)
    return session


def _got(session: BrokerSession) -> list[str]:
    client = session.client
    assert isinstance(client, _Client)
    return [out.topic for out in client.got]


def _client(session: BrokerSession) -> _Client:
    client = session.client
    assert isinstance(client, _Client)
    return client


def _publish(router: LocalRouter, *topics: str) -> None:
    for topic in topics:
        router.publish(Message(topic, b"x", 1))


@pytest.fixture
def unranked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The topics for which the router ranked the members."""
    ranked: list[str] = []
    real = shared_members.member_rank

    def counted(message: Message) -> object:
        ranked.append(message.topic)
        return real(message)

    monkeypatch.setattr(broker.router, "member_rank", counted)
    return ranked


def test_members_that_can_take_messages_get_them_in_turn_unranked(unranked: list[str]) -> None:
    router = _router()
    a, b, c = (_member(router, name) for name in "abc")
    _publish(router, *(f"jobs/{n}" for n in range(7)))
    assert (_got(a), _got(b), _got(c)) == (
        ["jobs/0", "jobs/3", "jobs/6"], ["jobs/1", "jobs/4"], ["jobs/2", "jobs/5"],
    )  # fmt: skip
    assert unranked == []  # the member whose turn it was could take each
    assert all(isinstance(out, SharedOutgoing) for out in _client(a).got)


def test_a_member_that_cannot_take_it_now_passes_its_turn(unranked: list[str]) -> None:
    router = _router()
    a, b = _member(router, "a"), _member(router, "b")
    _client(a).free = False  # its in-flight window is full
    _publish(router, "jobs/0", "jobs/1", "jobs/2")
    assert (_got(a), _got(b)) == ([], ["jobs/0", "jobs/1", "jobs/2"])
    assert unranked == ["jobs/0", "jobs/1", "jobs/2"]  # a's turn each time, b chosen
    _client(a).free = True  # from the next message on
    _publish(router, "jobs/3", "jobs/4")
    assert (_got(a), _got(b)) == (["jobs/3"], ["jobs/0", "jobs/1", "jobs/2", "jobs/4"])
    _client(a).free = _client(b).free = False  # both busy: the turn still goes round
    _publish(router, "jobs/5", "jobs/6")
    assert (_got(a)[-1], _got(b)[-1]) == ("jobs/5", "jobs/6")


def test_an_acl_change_counts_from_the_next_message() -> None:
    router = _router()
    a, b = _member(router, "a"), _member(router, "b")
    _publish(router, "jobs/secret/0", "jobs/secret/1")
    assert (_got(a), _got(b)) == (["jobs/secret/0"], ["jobs/secret/1"])
    a.receive_denied = re.compile(r"jobs/secret(/.*)?")  # as a reconnect with a new ACL sets
    _publish(router, "jobs/secret/2", "jobs/open/3", "jobs/secret/4")
    assert _got(a) == ["jobs/secret/0", "jobs/open/3"]
    assert _got(b) == ["jobs/secret/1", "jobs/secret/2", "jobs/secret/4"]
    b.receive_denied = a.receive_denied
    _publish(router, "jobs/secret/5")  # nobody may have it
    assert len(_got(a)) + len(_got(b)) == 5
    a.receive_denied = None
    _publish(router, "jobs/secret/6")
    assert _got(a)[-1] == "jobs/secret/6"


def test_a_member_leaving_or_going_away_takes_no_more_turns() -> None:
    router = _router()
    a, b, c = (_member(router, name) for name in "abc")
    _publish(router, "jobs/0")  # a's; b's turn now
    router.unsubscribe(b, FILTER)
    _publish(router, "jobs/1", "jobs/2", "jobs/3")
    assert (_got(a), _got(b), _got(c)) == (["jobs/0", "jobs/2"], [], ["jobs/1", "jobs/3"])
    c.client = None  # away (a session that is not persistent keeps nothing for it)
    _publish(router, "jobs/4", "jobs/5")
    assert _got(a) == ["jobs/0", "jobs/2", "jobs/4", "jobs/5"]
    router.unsubscribe(a, FILTER)
    router.unsubscribe(c, FILTER)
    _publish(router, "jobs/6")  # the group is gone with its last member
    assert router.shared.group("g", "jobs/#") is None


def test_what_a_member_left_goes_to_another_and_qos_is_the_lower() -> None:
    router = _router()
    a = _member(router, "a", qos=0)
    b = _member(router, "b", qos=2)
    router.publish(Message("jobs/0", b"x", 2))  # a's turn: at its QoS 0
    router.publish(Message("jobs/1", b"x", 1))  # b's: at the publisher's QoS 1
    assert [out.qos for out in _client(a).got] == [0]
    assert [out.qos for out in _client(b).got] == [1]
    gone = _client(b).got
    router.unsubscribe(b, FILTER)
    router.session_ended(list(gone))  # §4.8.2: to another member
    assert _got(a) == ["jobs/0", "jobs/1"]
