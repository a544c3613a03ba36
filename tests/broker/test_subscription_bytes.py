"""What a topic filter is counted as (``broker.subscription_bytes``) against what it costs,
measured here as it was for the constants: the router's tables and the session's entry,
under tracemalloc. Never less than it costs; within a third more for the deep filters an
attacker would choose. And the counts follow the router's tables: an options change adds
nothing, removal gives back what was added, a device left with no filter is forgotten."""

import gc
import tracemalloc
from collections.abc import Callable

import pytest

from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.router import LocalRouter
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from broker.subscription_bytes import cost


def _router() -> LocalRouter:
    return LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())


def _subscribe(router: LocalRouter, session: BrokerSession, topic_filter: str, qos: int) -> None:
    """As a SUBSCRIBE does (``broker.inbound``): the session's entry, then the router's."""
    sub = Subscription(qos)
    session.subscriptions[topic_filter] = sub
    router.subscribe(session, topic_filter, sub)


def _measured(shape: Callable[[int], str], count: int = 300) -> tuple[float, float]:
    """(bytes measured, bytes counted) per filter, for ``count`` filters of ``shape``."""
    router, session = _router(), BrokerSession(("dev", "c"), "dev", persistent=False)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(count):  # the filter made here, as a SUBSCRIBE's decoding makes it
            _subscribe(router, session, shape(n), 1)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    filters = [shape(n) for n in range(count)]
    assert session.subscription_bytes == sum(map(cost, filters))
    return used / count, session.subscription_bytes / count


@pytest.mark.parametrize(
    ("shape", "within"),
    [
        # Its first levels are every filter's of the device: counted for each, held once.
        (lambda n: f"devices/d/rpc/request/{n}", 4.0),
        # One level is its own level name: its bytes are held once, counted twice.
        (lambda n: f"{n:06}x" + "y" * 1000, 2.1),
        (lambda n: f"{n:06}" + "z" * 60_000, 2.1),  # as long as a filter gets
        # What an attacker would choose: each level a trie node.
        (lambda n: f"{n:06}/" + "/".join(f"{level:02}" for level in range(126)), 1.35),
        (lambda n: f"{n:06}/" + "/".join(["abcdefghij"] * 40), 1.35),
        (lambda n: f"$share/g/{n:06}/" + "/".join(["abcd"] * 60), 1.35),
    ],
    ids=["usual", "long", "longest", "deepest", "deep", "shared"],
)
def test_a_filter_is_counted_as_never_less_than_it_costs(
    shape: Callable[[int], str], within: float
) -> None:
    measured, counted = _measured(shape)
    assert measured <= counted <= within * measured


def test_counts_follow_the_routers_tables() -> None:
    router = _router()
    counts = router.subscription_bytes
    one = BrokerSession(("dev", "one"), "dev", persistent=False)
    two = BrokerSession(("dev", "two"), "dev", persistent=True)
    other = BrokerSession(("other", "one"), "other", persistent=False)
    _subscribe(router, one, "a/b", 1)
    _subscribe(router, one, "a/b", 0)  # new options (§3.8.4): nothing more held
    _subscribe(router, two, "a/b", 1)
    _subscribe(router, two, "$share/g/a/#", 1)
    _subscribe(router, other, "c", 0)
    assert (one.subscription_bytes, two.subscription_bytes) == (
        cost("a/b"),
        cost("a/b") + cost("$share/g/a/#"),
    )
    assert counts.of_device("dev") == 2 * cost("a/b") + cost("$share/g/a/#")
    router.unsubscribe(two, "$share/g/a/#")
    router.unsubscribe(two, "$share/g/a/#")  # not held any more: nothing given back
    router.unsubscribe(one, "a/b")
    assert (one.subscription_bytes, counts.of_device("dev")) == (0, cost("a/b"))
    router.unsubscribe(two, "a/b")
    assert counts.of_device("dev") == two.subscription_bytes == 0
    assert counts._by_device == {"other": cost("c")}  # a device with none is forgotten


def test_a_new_filter_is_refused_past_each_bound_in_turn() -> None:
    router = _router()
    counts = router.subscription_bytes
    one = BrokerSession(("dev", "one"), "dev", persistent=False)
    two = BrokerSession(("dev", "two"), "dev", persistent=False)
    each = cost("a/0")
    counts.max_subscriptions, counts.max_bytes, counts.max_bytes_per_device = 3, 2 * each, 3 * each
    _subscribe(router, one, "a/0", 1)
    _subscribe(router, one, "a/1", 1)
    assert counts.refusal(one, "a/2") == ("max_subscription_bytes", 2 * each)
    assert counts.refusal(two, "a/2") is None
    _subscribe(router, two, "a/2", 1)
    assert counts.refusal(two, "a/3") == ("max_subscription_bytes_per_device", 3 * each)
    counts.max_bytes = counts.max_bytes_per_device = None  # no bound
    _subscribe(router, one, "a/3", 1)
    assert counts.refusal(one, "a/4") == ("max_subscriptions", 3)
