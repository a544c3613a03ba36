"""Shared subscriptions (MQTT 5.0 §4.8.2): one copy of a message per group, not per member.

A shared subscription is identified by its share name *and* its topic filter: ``$share/g/a/#``
and ``$share/g/a/+`` are two groups, each getting its own copy of a message on ``a/b``
(§4.8.2: "a Shared Subscription's Topic Filter"), and a session can be in a group and hold
an ordinary subscription to the same filter as well.

``SharedSubscriptions`` finds the groups whose filter matches a topic by putting the groups
themselves as subscribers in a ``SubscriptionTrie``: the walk is the same as for ordinary
subscriptions, and a broker with no shared subscription never walks it. ``SharedGroup.pick``
chooses the member, round robin over the members ranked by the caller (the broker ranks a
member that can take the message now before one whose in-flight window is full, and that
before one whose client is away). ``SharedGroup.turn`` is the member whose turn it is: a
caller that finds it can take the message now gives it the message and calls ``passed``,
which is what ``pick`` would have chosen, without ranking anyone (most messages, on a
broker that keeps up).

Each member has an owner (the broker's: the device or application whose session it is), and
``SharedSubscriptions`` counts the bytes naming the groups each owner's members are in
(``named_by``): a group is counted against every owner with a member in it, once however
many of its members are, until the last of them leaves. Every group has a member, so the
groups an owner can make are bounded by what its own members are in: another owner joining
then leaving a group does not leave it charged to nobody.

Pure data structures, no I/O: members are any hashable value.
"""

from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from broker.mqtt.session import Subscription
from broker.mqtt.trie import SubscriptionTrie

S = TypeVar("S", bound=Hashable)

# How well a member can take a message (``SharedGroup.pick``): lower is better; None: it
# must not get the message at all.
Rank = Callable[[S, Subscription], int | None]
_AS_GROUP = Subscription(0)  # a group's entry in the trie: the options are the members'


def naming(name: str, topic_filter: str) -> int:
    """Bytes that name a group: its share name, a '/', its filter (UTF-8), and a separator
    (as a cluster's frames name it: ``broker.cluster.frames``)."""
    return len(name.encode()) + len(topic_filter.encode()) + 2


class SharedGroup(Generic[S]):
    """The members of one shared subscription, with their options, and whose turn it is."""

    __slots__ = ("_next", "_order", "members", "name", "topic_filter", "turn")

    # The member whose turn it is, with its options; there while the group has a member.
    turn: tuple[S, Subscription]

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.members: dict[S, Subscription] = {}
        self._order: list[S] = []  # the round-robin order: in the order they joined
        self._next = 0  # index in _order of the member whose turn it is

    def __repr__(self) -> str:
        return f"SharedGroup({self.name!r}, {self.topic_filter!r}, {len(self.members)} members)"

    def add(self, member: S, subscription: Subscription) -> bool:
        """Join (or change the options of a member, §3.8.4); True if the member is new."""
        new = member not in self.members
        self.members[member] = subscription
        if new:
            self._order.append(member)
        self._turned()  # its first member, or new options for the one whose turn it is
        return new

    def remove(self, member: S) -> bool:
        """Leave; True if it was a member. The turn stays with the member that had it (or
        the one after it, if that one left)."""
        if self.members.pop(member, None) is None:
            return False
        index = self._order.index(member)
        del self._order[index]
        if index < self._next:
            self._next -= 1
        if self._next >= len(self._order):
            self._next = 0
        self._turned()
        return True

    def pick(self, rank: Rank[S]) -> tuple[S, Subscription] | None:
        """The member that gets the next message, or None if none may.

        Round robin: starting with the member whose turn it is, the first of rank 0; failing
        that, the first of the lowest rank there is. The turn then passes to the member after
        the one chosen, so members of equal rank share the messages evenly.
        """
        order, members = self._order, self.members
        count = len(order)
        best: int | None = None
        best_rank = 0
        for step in range(count):
            index = (self._next + step) % count
            member = order[index]
            value = rank(member, members[member])
            if value is None:
                continue
            if value <= 0:
                best = index
                break
            if best is None or value < best_rank:
                best, best_rank = index, value
        if best is None:
            return None
        self._next = (best + 1) % count
        self._turned()
        member = order[best]
        return member, members[member]

    def passed(self) -> None:
        """The member of ``turn`` took a message (as if ``pick`` had chosen it): the turn
        passes to the member after it."""
        order = self._order
        if len(order) == 1:
            return  # its own turn again, ``turn`` as it is
        index = self._next + 1
        if index == len(order):
            index = 0
        self._next = index
        member = order[index]
        self.turn = (member, self.members[member])

    def _turned(self) -> None:
        """``turn`` after the order, the turn or a member's options changed."""
        if self._order:
            member = self._order[self._next]
            self.turn = (member, self.members[member])
        elif hasattr(self, "turn"):
            del self.turn


class SharedSubscriptions(Generic[S]):
    """Every shared subscription, by (share name, topic filter); ``match(topic)`` gives the
    groups that get a copy of a message on ``topic``."""

    def __init__(self, owner: Callable[[S], Hashable] = lambda member: member) -> None:
        """``owner``: whose a member is (``named_by``); by default each member its own."""
        self._owner = owner
        # owner -> the groups its members are in -> how many of them; and the bytes naming them.
        self._owned: dict[Hashable, dict[tuple[str, str], int]] = {}
        self._owned_named: dict[Hashable, int] = {}
        self._trie: SubscriptionTrie[SharedGroup[S]] = SubscriptionTrie()
        # (share name, topic filter) -> group; the router tests it for emptiness per message.
        self.groups: dict[tuple[str, str], SharedGroup[S]] = {}
        self.named = 0  # bytes of the groups' names (``naming``), which the broker bounds
        self._count = 0

    def __len__(self) -> int:
        """The number of (shared subscription, member) pairs."""
        return self._count

    def add(self, name: str, topic_filter: str, member: S, subscription: Subscription) -> bool:
        """Join the group (made if new); True if the member is new to it."""
        group = self.groups.get((name, topic_filter))
        if group is None:
            group = self.groups[(name, topic_filter)] = SharedGroup(name, topic_filter)
            self._trie.add(topic_filter, group, _AS_GROUP)
            self.named += naming(name, topic_filter)
        new = group.add(member, subscription)
        if new:
            self._count += 1
            self._owns(self._owner(member), name, topic_filter, 1)
        return new

    def remove(self, name: str, topic_filter: str, member: S) -> bool:
        """Leave the group (forgotten once empty); True if the member was in it."""
        group = self.groups.get((name, topic_filter))
        if group is None or not group.remove(member):
            return False
        self._count -= 1
        self._owns(self._owner(member), name, topic_filter, -1)
        if not group.members:
            del self.groups[(name, topic_filter)]
            self._trie.remove(topic_filter, group)
            self.named -= naming(name, topic_filter)
        return True

    def group(self, name: str, topic_filter: str) -> SharedGroup[S] | None:
        return self.groups.get((name, topic_filter))

    def match(self, topic: str) -> Iterable[SharedGroup[S]]:
        """The groups whose filter matches ``topic`` (§4.7), each once (the trie's answer,
        whose keys they are: read it, never change it)."""
        return self._trie.match(topic)

    def holds(self, owner: Hashable, name: str, topic_filter: str) -> bool:
        """Whether a member of ``owner`` is in the group."""
        return (name, topic_filter) in self._owned.get(owner, ())

    def named_by(self, owner: Hashable) -> int:
        """Bytes naming the groups members of ``owner`` are in (``naming``), each once."""
        return self._owned_named.get(owner, 0)

    def _owns(self, owner: Hashable, name: str, topic_filter: str, step: int) -> None:
        """A member of ``owner`` joined (``step`` 1) or left (-1) the group."""
        owned = self._owned.setdefault(owner, {})
        key = (name, topic_filter)
        members = owned.get(key, 0) + step
        if members:
            owned[key] = members
        else:
            del owned[key]
        if members != (1 if step > 0 else 0):  # not its first member joining nor last leaving
            return
        named = self.named_by(owner) + step * naming(name, topic_filter)
        if owned:
            self._owned_named[owner] = named
        else:  # none of its members is in a group: nothing kept for it
            del self._owned[owner], self._owned_named[owner]
