"""The session's queue and packet ids, and the two topic indexes (MQTT 3.1.1 §4.7)."""

import pytest

from broker.mqtt.limits import Limits
from broker.mqtt.session import QUEUED, SENT, Outgoing, Session, Subscription
from broker.mqtt.trie import SubscriptionTrie, TopicTree


def test_queue_bytes_are_accounted_and_bounded() -> None:
    session = Session("k", persistent=True)
    limits = Limits(max_queued_messages=10, max_queued_bytes=100)
    first, second = Outgoing("t", b"x" * 49, 1), Outgoing("t", b"y" * 49, 1)
    assert session.enqueue(first, limits) == []
    assert session.enqueue(second, limits) == []
    assert session.queued_bytes == 100
    third = Outgoing("t", b"z", 1)
    assert session.enqueue(third, limits) == [(first, "max_queued_bytes")]
    assert session.queued_bytes == 52
    too_big = Outgoing("t", b"!" * 100, 1)
    assert session.enqueue(too_big, limits) == [(too_big, "max_queued_bytes")]


def test_a_session_has_a_queue_of_its_own_only_once_something_waits() -> None:
    """Idle sessions share one empty queue that cannot grow (an empty deque is 760 bytes);
    the first queued or restored message gives a session its own."""
    first, second = Session("a", persistent=True), Session("b", persistent=True)
    assert first.queue is second.queue
    assert not first.queue
    with pytest.raises(TypeError):
        first.queue.append(Outgoing("t", b"", 1))
    message = Outgoing("t", b"x", 1)
    assert first.enqueue(message, Limits()) == []
    assert list(first.queue) == [message]
    assert not second.queue
    second.restore(Outgoing("t", b"y", 0))
    assert len(second.queue) == 1
    assert first.queue is not second.queue
    third = Session("c", persistent=False)
    assert third.next_to_send(10) is None
    assert third.clear() == []
    assert not third.queue


def test_a_new_qos0_message_is_the_one_dropped_when_only_qos1_waits() -> None:
    session = Session("k", persistent=False)
    limits = Limits(max_queued_messages=1)
    kept, late = Outgoing("t", b"1", 1), Outgoing("t", b"0", 0)
    session.enqueue(kept, limits)
    assert session.enqueue(late, limits) == [(late, "max_queued_messages")]
    assert list(session.queue) == [kept]


def test_packet_ids_skip_those_in_flight_and_wrap_after_65535() -> None:
    session = Session("k", persistent=False)
    session.inflight[1] = Outgoing("t", b"", 1)
    assert session.next_packet_id() == 2  # §2.3.1: currently unused ids only
    session._next_id = 65535
    # 65535 wraps to 1, in flight, so 2 (handed out above but never used) comes next.
    assert [session.next_packet_id(), session.next_packet_id()] == [65535, 2]


def test_restored_messages_keep_their_ids_and_order() -> None:
    session = Session("k", persistent=True)
    sent, queued = Outgoing("a", b"", 1), Outgoing("b", b"", 1)
    sent.packet_id, sent.state = 40, SENT
    session.restore(sent)
    session.restore(queued)
    assert session.inflight == {40: sent}
    assert list(session.queue) == [queued]
    assert queued.state == QUEUED
    assert session.next_packet_id() == 41


def test_clear_forgets_everything() -> None:
    session = Session("k", persistent=False)
    session.enqueue(Outgoing("t", b"", 0), Limits())
    session.awaiting_pubrel.add(3)
    assert len(session.clear()) == 1
    assert (session.queued_bytes, session.queued_qos0, session.awaiting_pubrel) == (0, 0, set())


Q0, Q1, Q2 = Subscription(0), Subscription(1), Subscription(2)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),  # §4.7.1.2
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/#", "sport", True),
        ("#", "sport/tennis", True),
        ("sport/tennis/+", "sport/tennis/player1", True),  # §4.7.1.3
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("#", "$SYS/broker/uptime", False),  # §4.7.2
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("ACCOUNTS", "Accounts", False),  # §4.7.3: case-sensitive
        ("a/b", "a/b/c", False),
    ],
)
def test_subscription_trie_matches_as_the_standard_says(
    topic_filter: str, topic: str, matches: bool
) -> None:
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add(topic_filter, "s", Q1)
    assert (trie.match(topic) == {"s": Q1}) is matches
    tree: TopicTree[str] = TopicTree()
    tree.set(topic, "retained")
    assert (tree.match(topic_filter) == ["retained"]) is matches


def test_one_match_per_subscriber_at_its_highest_qos() -> None:
    # §3.3.5: overlapping subscriptions deliver once, at the maximum QoS of those matching.
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add("a/#", "s", Q1)
    trie.add("a/+", "s", Q2)
    trie.add("a/b", "s", Q0)
    trie.add("a/b", "other", Q0)
    assert trie.match("a/b") == {"s": Q2, "other": Q0}
    assert len(trie) == 4


def test_one_copy_for_overlapping_subscriptions_keeps_each_ones_options() -> None:
    # 5.0 §3.3.4: the highest QoS and every identifier; No Local is each subscription's own
    # (§3.8.3.1): the session's own message goes through the others, at their QoS and with
    # their identifiers; Retain As Published holds whichever order the levels are walked in.
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add("a/#", "s", Subscription(2, no_local=True, identifier=1))
    trie.add("a/+", "s", Subscription(0, identifier=2))
    trie.add("a/b", "s", Subscription(1, retain_as_published=True))
    copy = trie.match("a/b")["s"]
    assert (copy.qos, sorted(copy.identifiers), copy.retain_as_published) == (2, [1, 2], True)
    own = copy.for_publisher()
    assert own is not None
    assert (own.qos, own.identifiers, own.retain_as_published) == (1, (2,), True)
    assert trie.match("a/c")["s"].for_publisher() == Subscription(0, identifier=2)
    trie.add("a/+", "s", Subscription(0, no_local=True, identifier=2))
    assert trie.match("a/c")["s"].for_publisher() is None  # every one has No Local
    assert trie.match("a/b")["s"].for_publisher() == Subscription(1, retain_as_published=True)


def test_replacing_and_removing_subscriptions_prunes_the_trie() -> None:
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    assert trie.add("a/b/c", "s", Q0)
    assert not trie.add("a/b/c", "s", Q2)  # §3.8.4: replaced, not added
    assert trie.match("a/b/c") == {"s": Q2}
    assert not trie.remove("a/b", "s")
    assert trie.remove("a/b/c", "s")
    assert not trie.remove("a/b/c", "s")
    assert len(trie) == 0
    assert trie._root.children is None  # nothing left behind


def test_answers_kept_for_repeated_topics_follow_every_change() -> None:
    """A topic published again is answered from what the last match found, until any
    subscription changes: a new subscriber, a new QoS, one leaving."""
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add("a/+", "s", Q0)
    first = trie.match("a/b")
    assert first == {"s": Q0}
    assert trie.match("a/b") is first  # the same answer, not walked again
    trie.add("a/#", "t", Q1)
    assert trie.match("a/b") == {"s": Q0, "t": Q1}
    trie.add("a/+", "s", Q2)  # §3.8.4: options replaced
    assert trie.match("a/b") == {"s": Q2, "t": Q1}
    assert not trie.remove("x/y", "s")  # no change
    assert trie.remove("a/#", "t")
    assert trie.match("a/b") == {"s": Q2}
    assert trie.match("$SYS/b") == {}  # §4.7.2 holds for kept answers too
    trie.add("#", "u", Q0)
    assert trie.match("$SYS/b") == {}
    assert trie.match("a/b") == {"s": Q2, "u": Q0}


def test_answers_kept_are_bounded() -> None:
    """Topics, their length and the subscribers kept are bounded, whatever is published."""
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for subscriber in range(40_000):
        trie.add("wide/#", subscriber, Q0)
    trie.add("t/+", -1, Q0)
    for number in range(5_000):
        assert trie.match(f"t/{number}") == {-1: Q0}
    assert 0 < len(trie._answers) <= 1024
    assert trie.match("t/" + "x" * 300) == {-1: Q0}
    assert ("t/" + "x" * 300) not in trie._answers
    for number in range(3):
        assert len(trie.match(f"wide/{number}")) == 40_000
    assert trie._answered <= 65_536
    assert sum(len(answer) for answer in trie._answers.values()) == trie._answered


def test_topic_tree_set_replace_pop() -> None:
    tree: TopicTree[str] = TopicTree()
    assert tree.set("a/b", "1") is None
    assert tree.set("a/b", "2") == "1"
    tree.set("a", "parent")
    assert sorted(tree.match("a/#")) == ["2", "parent"]  # "a/#" matches "a" too
    assert tree.get("a/b") == "2"
    assert tree.pop("a/b") == "2"
    assert tree.pop("a/b") is None
    assert tree.pop("a") == "parent"
    assert (len(tree), tree._root.children) == (0, None)


def test_root_wildcards_skip_system_topics_in_the_tree() -> None:
    tree: TopicTree[str] = TopicTree()
    for topic in ("$SYS/x", "plain", "/x"):
        tree.set(topic, topic)
    assert sorted(tree.match("#")) == ["/x", "plain"]
    assert tree.match("+/x") == ["/x"]


def test_a_topic_of_32768_levels_needs_no_recursion() -> None:
    deep = "/".join(["a"] * 32_768)
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add(deep, "s", Q0)
    trie.add("a/#", "t", Q0)
    assert set(trie.match(deep)) == {"s", "t"}
    tree: TopicTree[str] = TopicTree()
    tree.set(deep, "v")
    assert tree.match("a/#") == ["v"]
    assert trie.remove(deep, "s")
