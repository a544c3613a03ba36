"""``SubscriptionTrie.match`` keeps its answers for topics published again, within its
bounds; when one more would not fit, it makes room without forgetting them all: a fleet
publishing to more topics than fit, each in turn, still finds most answered (forgetting
all made every one of its messages a walk of the trie). Counted, not timed: walks."""

import pytest

from broker.mqtt import trie
from broker.mqtt.session import Subscription
from broker.mqtt.trie import SubscriptionTrie


class _Counted(SubscriptionTrie[str]):
    walks = 0

    def _match(self, topic: str) -> dict[str, Subscription]:
        self.walks += 1
        return super()._match(topic)


def test_a_fleet_past_the_bound_is_still_answered_without_walks() -> None:
    subscriptions = _Counted()
    subscriptions.add("fleet/#", "app", Subscription(1))
    topics = [f"fleet/{n}" for n in range(trie._CACHE_TOPICS + 100)]
    for _ in range(3):  # each device in turn, three times
        for topic in topics:
            assert subscriptions.match(topic) == {"app": Subscription(1)}
    # The first round walks for each; later rounds for those that did not fit only.
    assert subscriptions.walks <= len(topics) + 2 * 101
    assert len(subscriptions._answers) <= trie._CACHE_TOPICS


def test_the_subscribers_kept_stay_within_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trie, "_CACHE_SUBSCRIBERS", 5)
    subscriptions = _Counted()
    for n in range(3):
        subscriptions.add("a/#", f"s{n}", Subscription(0))
    for topic in ("a/1", "a/2", "a/3", "a/1"):
        assert len(subscriptions.match(topic)) == 3
        assert subscriptions._answered <= 5
        assert subscriptions._answered == sum(map(len, subscriptions._answers.values()))
    subscriptions.add("a/#", "s3", Subscription(0))  # any change: none kept
    assert subscriptions._answers == {}
    subscriptions.add("a/+", "s4", Subscription(0))
    subscriptions.add("a/1", "s5", Subscription(0))
    assert len(subscriptions.match("a/1")) == 6  # more than the bound: answered, not kept
    assert subscriptions._answers == {}
