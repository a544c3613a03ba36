"""Topic filters and topic names indexed level by level (MQTT 3.1.1 §4.7).

``SubscriptionTrie`` answers "who subscribed to a filter matching this topic?" by walking the
topic's levels: the cost grows with the number of levels and of wildcard branches on the way,
not with the number of filters, and a topic published again is answered from a bounded cache
that any subscription change empties. ``TopicTree`` answers the reverse for retained messages:
"which stored topics does this filter match?" (§3.3.1.3).

Both follow §4.7: '+' matches one whole level, '#' the rest including the parent level
("sport/#" matches "sport", §4.7.1.2), and a wildcard as the first level never matches a topic
that starts with '$' (§4.7.2). Nodes left empty are removed, so memory follows what is
stored. Walks are iterative: a 64 KiB topic can have 32,768 levels.

Shared subscriptions (``$share/{group}/{filter}``, MQTT 5 §4.8.2) live in a trie of their own
(``broker.mqtt.shared``), whose subscribers are the groups.
"""

from collections.abc import Hashable, Iterator, Mapping
from typing import Generic, TypeVar

from broker.mqtt.session import Subscription, overlap

S = TypeVar("S", bound=Hashable)
T = TypeVar("T")
V = TypeVar("V")
_SEPARATOR, _SINGLE, _MULTI = "/", "+", "#"
# ``SubscriptionTrie.match`` keeps its answers for topics published again (a device publishes
# to the same few topics over and over): for at most this many topics, of at most this many
# characters, holding at most this many subscribers together; all are forgotten at any
# subscription change, and the last kept when one more would not fit.
_CACHE_TOPICS, _CACHE_TOPIC_LENGTH, _CACHE_SUBSCRIBERS = 1024, 256, 65_536


class _Node(Generic[T]):
    """One topic level; ``item`` is what is stored at it (None: nothing)."""

    __slots__ = ("children", "item")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] | None = None
        self.item: T | None = None


def _reach(root: _Node[T], levels: list[str]) -> _Node[T]:
    """The node of ``levels``, made on the way where missing."""
    node = root
    for level in levels:
        if node.children is None:
            node.children = {}
        child = node.children.get(level)
        if child is None:
            child = node.children[level] = _Node()
        node = child
    return node


def _find(root: _Node[T], levels: list[str]) -> tuple[_Node[T], list[tuple[_Node[T], str]]] | None:
    """The node of ``levels`` and the path to it (parent, level), or None."""
    path: list[tuple[_Node[T], str]] = []
    node = root
    for level in levels:
        child = node.children.get(level) if node.children is not None else None
        if child is None:
            return None
        path.append((node, level))
        node = child
    return node, path


def _prune(node: _Node[T], path: list[tuple[_Node[T], str]]) -> None:
    """Remove ``node`` and its ancestors as long as they hold nothing."""
    for parent, level in reversed(path):
        if node.item is not None or node.children:
            return
        assert parent.children is not None
        del parent.children[level]
        if not parent.children:
            parent.children = None
        node = parent


class SubscriptionTrie(Generic[S]):
    """Subscribers by topic filter; ``match(topic)`` gives each matching subscriber once."""

    def __init__(self) -> None:
        self._root: _Node[dict[S, Subscription]] = _Node()
        self._count = 0
        self._answers: dict[str, dict[S, Subscription]] = {}  # match's, by topic
        self._answered = 0  # subscribers in them

    def __len__(self) -> int:
        """The number of (filter, subscriber) pairs."""
        return self._count

    def add(self, topic_filter: str, subscriber: S, subscription: Subscription) -> bool:
        """Subscribe (or replace the options of an existing subscription, §3.8.4); True if
        the subscription is new."""
        self._forget()
        node = _reach(self._root, topic_filter.split(_SEPARATOR))
        if node.item is None:
            node.item = {}
        new = subscriber not in node.item
        node.item[subscriber] = subscription
        self._count += new
        return new

    def remove(self, topic_filter: str, subscriber: S) -> bool:
        """Unsubscribe; True if there was such a subscription. Empty nodes are pruned."""
        found = _find(self._root, topic_filter.split(_SEPARATOR))
        if found is None:
            return False
        node, path = found
        if node.item is None or node.item.pop(subscriber, None) is None:
            return False
        self._forget()
        self._count -= 1
        if not node.item:
            node.item = None
        _prune(node, path)
        return True

    def match(self, topic: str) -> Mapping[S, Subscription]:
        """Every subscriber with a filter matching ``topic``, with its matching subscription
        of highest QoS (3.1.1 §3.3.5: one message per client, at the highest QoS). The
        answer may be shared with later calls: read it, never change it."""
        found = self._answers.get(topic)
        if found is not None:
            return found
        found = self._match(topic)
        if len(topic) <= _CACHE_TOPIC_LENGTH and len(found) <= _CACHE_SUBSCRIBERS:
            answers = self._answers
            # Full: the answers kept last make room, not all of them: a fleet publishing to
            # more topics than fit, each in turn, would otherwise find none kept when its
            # turn came round (every message a walk); this way all but one stay answered.
            while answers and (
                len(answers) >= _CACHE_TOPICS or self._answered + len(found) > _CACHE_SUBSCRIBERS
            ):
                self._answered -= len(answers.popitem()[1])
            answers[topic] = found
            self._answered += len(found)
        return found

    def _forget(self) -> None:
        if self._answers:
            self._answers = {}
            self._answered = 0

    def _match(self, topic: str) -> dict[S, Subscription]:
        found: dict[S, Subscription] = {}
        levels = topic.split(_SEPARATOR)
        nodes = [self._root]
        system = topic.startswith("$")  # §4.7.2
        last = len(levels) - 1
        for index, level in enumerate(levels):
            reached: list[_Node[dict[S, Subscription]]] = []
            wild = not (system and index == 0)
            for node in nodes:
                children = node.children
                if children is None:
                    continue
                if wild:
                    multi = children.get(_MULTI)
                    if multi is not None and multi.item:
                        collect(found, multi.item)
                    single = children.get(_SINGLE)
                    if single is not None:
                        reached.append(single)
                exact = children.get(level)
                if exact is not None:
                    reached.append(exact)
            if not reached:
                return found
            nodes = reached
            if index == last:
                for node in nodes:
                    if node.item:
                        collect(found, node.item)
                    # §4.7.1.2: "sport/#" matches "sport" itself.
                    multi = node.children.get(_MULTI) if node.children else None
                    if multi is not None and multi.item:
                        collect(found, multi.item)
        return found


def collect(found: dict[S, Subscription], subscribers: dict[S, Subscription]) -> None:
    """Add ``subscribers`` to ``found``: a subscriber matched twice gets one copy
    (``overlap``)."""
    for subscriber, subscription in subscribers.items():
        known = found.get(subscriber)
        found[subscriber] = subscription if known is None else overlap(known, subscription)


class TopicTree(Generic[V]):
    """A value per topic name (a retained message); ``match(filter)`` finds them by filter."""

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, topic: str) -> V | None:
        found = _find(self._root, topic.split(_SEPARATOR))
        return found[0].item if found is not None else None

    def set(self, topic: str, value: V) -> V | None:
        """Store ``value`` for ``topic``; the value it replaced."""
        node = _reach(self._root, topic.split(_SEPARATOR))
        old, node.item = node.item, value
        self._count += old is None
        return old

    def pop(self, topic: str) -> V | None:
        """Remove the value of ``topic`` (pruning empty nodes); the value removed."""
        found = _find(self._root, topic.split(_SEPARATOR))
        if found is None or found[0].item is None:
            return None
        node, path = found
        old, node.item = node.item, None
        self._count -= 1
        _prune(node, path)
        return old

    def match(self, topic_filter: str) -> list[V]:
        """The values of every topic ``topic_filter`` matches (§4.7)."""
        levels = topic_filter.split(_SEPARATOR)
        found: list[V] = []
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            if index == len(levels):
                if node.item is not None:
                    found.append(node.item)
                continue
            level = levels[index]
            if level == _MULTI:
                if index and node.item is not None:  # the parent level itself (§4.7.1.2)
                    found.append(node.item)
                found.extend(_below(node, skip_system=index == 0))
            elif node.children is None:
                continue
            elif level == _SINGLE:
                for name, child in node.children.items():
                    if not (index == 0 and name.startswith("$")):
                        stack.append((child, index + 1))
            else:
                exact = node.children.get(level)
                if exact is not None:
                    stack.append((exact, index + 1))
        return found


def _below(node: _Node[V], *, skip_system: bool) -> Iterator[V]:
    """Every value under ``node`` (not its own); at the root, none under a '$' level."""
    stack = [
        child
        for name, child in (node.children or {}).items()
        if not (skip_system and name.startswith("$"))
    ]
    while stack:
        current = stack.pop()
        if current.item is not None:
            yield current.item
        if current.children:
            stack.extend(current.children.values())
