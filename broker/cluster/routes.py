"""The cluster's route table: which members have a subscription matching a topic.

Each member (node or worker) keeps one entry per distinct topic filter its sessions
subscribed to, never one per session, in the JetStream key-value bucket ``<cluster>_routes``
under the key ``<member>.<filter in base64url>``, with an empty value; a filter too long to be
a key (``broker.cluster.frames.to_key``) is keyed by its digest, and the value names it. Every
member watches the bucket, so the
others' filters are in its ``RouteTable``, a subscription trie keyed by member: one walk of
a topic's levels names each member with interest once, however many of its filters match
(as EMQX's route table: topic filter -> nodes, never per client). A shared subscription
(``$share/{group}/{filter}``, MQTT 5.0 §4.8.2) is an entry of its own: the publishing member
picks one member per group (``ClusterRouter``), so a group gets one copy cluster-wide.

The watch is asynchronous: a filter announced on one member is seen by the others within
the time a KV write takes to reach them (about a millisecond here), and a member whose table
lacks it sends a message published there nowhere: so a SUBACK waits until the others say
their tables hold its filters (MQTT 3.1.1 and 5.0 §3.8.4, ``broker.cluster.routes_seen``).

A member that starts writes the entries of its filters the bucket does not hold already
(most of a restored fleet's are there from its previous run; ``broker.cluster.own_entries``
says why a survivor's late deletion loses none) and, once it restored its sessions, deletes
the entries it left behind that they do not use (until then they route to it what is for the
sessions it restores). A member whose entries outlive it (killed, never restarted) leaves the
tables once the member that adopted its sessions deletes its entries (``forget``); until
then, frames for it are parked (``broker.cluster.parked``).
"""

import asyncio
import logging
import time
from collections.abc import Collection, Iterable
from typing import Final

from auth.topics import split_shared
from broker.cluster.frames import Group, from_key, is_digest, to_key
from broker.cluster.kv import KeyValue, Watch
from broker.cluster.own_entries import OwnEntries
from broker.cluster.pending_writes import PendingWrites
from broker.mqtt.session import Subscription
from broker.mqtt.trie import SubscriptionTrie
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_all_and_wait, cancel_requested, cancellable

__all__ = ["RouteAnnouncer", "RouteTable"]

log = logging.getLogger(__name__)

BUCKET: Final = "routes"
_CACHED: Final = 10_000  # topics whose members are remembered
# ... if at most this long: a topic may be 256 KiB (max_packet_size), and 10,000 of them held
# 2.5 GB for a device that published on that many (matching one anew costs microseconds).
_CACHED_LENGTH: Final = 256
_ANY: Final = Subscription(0)  # the trie wants options; routing needs none


class RouteTable:
    """Other members' topic filters."""

    def __init__(self) -> None:
        # Topic -> members with a plain filter matching it: a publisher sends to a few
        # topics over and over, and the answer changes only when a route does (then the
        # whole cache goes). At most _CACHED topics; past that it starts over.
        self._cache: dict[str, frozenset[str]] = {}
        self._trie: SubscriptionTrie[str] = SubscriptionTrie()
        # Shared subscriptions by their filter; the subscriber is (share name, filter, member).
        self._shared: SubscriptionTrie[tuple[str, str, str]] = SubscriptionTrie()
        self._by_member: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._trie) + len(self._shared)

    def members_for(self, topic: str) -> Collection[str]:
        """The members with a plain (not shared) filter matching ``topic``, each once."""
        found = self._cache.get(topic)
        if found is None:
            found = frozenset(self._trie.match(topic))
            if len(topic) <= _CACHED_LENGTH:
                if len(self._cache) >= _CACHED:
                    self._cache.clear()
                self._cache[topic] = found
        return found

    def groups_for(self, topic: str) -> dict[Group, list[str]]:
        """The shared subscriptions matching ``topic``, each with its members."""
        if not len(self._shared):
            return {}
        found: dict[Group, list[str]] = {}
        for name, topic_filter, member in self._shared.match(topic):
            found.setdefault((name, topic_filter), []).append(member)
        return found

    def add(self, member: str, topic_filter: str) -> None:
        shared = split_shared(topic_filter)
        if shared is None:
            added = self._trie.add(topic_filter, member, _ANY)
        else:
            name, inner = shared
            added = self._shared.add(inner, (name, inner, member), _ANY)
        if added:
            self._cache.clear()
            self._by_member.setdefault(member, set()).add(topic_filter)

    def remove(self, member: str, topic_filter: str) -> None:
        shared = split_shared(topic_filter)
        if shared is None:
            removed = self._trie.remove(topic_filter, member)
        else:
            name, inner = shared
            removed = self._shared.remove(inner, (name, inner, member))
        if removed:
            self._cache.clear()
            filters = self._by_member[member]
            filters.discard(topic_filter)
            if not filters:
                del self._by_member[member]

    def members(self) -> set[str]:
        return set(self._by_member)

    def counts(self) -> dict[str, int]:
        """Member -> how many of its filters the table holds."""
        return {member: len(filters) for member, filters in self._by_member.items()}


class RouteAnnouncer:
    """This member's filters written to the bucket, the others' read from it into ``table``."""

    def __init__(self, bucket: KeyValue, member: str, table: RouteTable) -> None:
        self.bucket = bucket
        self.member = member
        self.table = table
        self._wanted: dict[str, int] = {}  # filter -> subscriptions of this member on it
        self._writes = PendingWrites()  # (key, value; None: delete), the latest of each key
        self._long: dict[str, str] = {}  # key -> filter, of the others' digest keys
        self._tasks: list[asyncio.Task[None]] = []
        # The bucket's revision this member's table is as of, or its own last filter's if
        # later: a member whose table is at this revision or beyond has every filter this
        # member wrote so far (``broker.cluster.handover``). Read at every publish, so kept
        # as revisions arrive: the watch's and the writer's only grow (one of each).
        self.revision = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (revision, until it)
        self._leftovers: set[str] = set()  # keys of this member's previous run
        self._keys: dict[str, str] = {}  # key -> filter, of those in ``_wanted``
        self._own = OwnEntries()  # what this member's keys hold in the bucket
        self.skipped = 0  # writes not made: the bucket held the entry already
        self.rewritten = 0  # entries written again: another member deleted them
        self.writes = 0  # entries written or deleted so far
        self._keeping = False  # fenced off: keys no longer wanted join the leftovers

    @property
    def waiting(self) -> int:
        """This member's entries waiting to be written (or deleted)."""
        return len(self._writes)

    async def reached(self, revision: int) -> None:
        """Once this member's table is as of ``revision`` or later."""
        if self.revision >= revision:
            return
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, waiting))
        await waiting

    def _at(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision

    def _wake(self) -> None:
        now, still = self.revision, []
        for revision, waiting in self._waiters:
            if revision <= now:
                if not waiting.done():
                    waiting.set_result(None)
            elif not waiting.done():
                still.append((revision, waiting))
        self._waiters = still

    async def start(self) -> None:
        """Read the others' filters (all of them, before returning) and clean up ours."""
        watch = await self.bucket.watch()
        leftovers: set[str] = set()
        prefix = self.member + "."
        while (change := await watch.value()) is not None:
            self._at(watch.revision)
            key, value = change
            if key.startswith(prefix):
                self._seen(key, value, watch.revision, watched=True)
                if value is not None:
                    leftovers.add(key)
            else:
                self._apply(key, value)
        # Deleted once this member's sessions are restored (``drop_leftovers``): until then
        # they still route to it what is for the sessions it is restoring.
        self._leftovers = leftovers
        self._writes.stored(leftovers)
        for topic_filter in self._wanted:  # added before: written (the bucket unread then)
            self._announce(topic_filter, later=True)
        self._wake()  # asked meanwhile (``broker.cluster.routes_seen``): read now
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow(watch), name="cluster routes watch"),
            loop.create_task(self._write(), name="cluster routes writer"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_all_and_wait(tasks)

    def add(self, topic_filter: str, *, later: bool = False) -> None:
        """A subscription to ``topic_filter``; ``later``: a restored session's, its entry
        written after those of the clients here now (``broker.cluster.pending_writes``)."""
        count = self._wanted.get(topic_filter, 0)
        self._wanted[topic_filter] = count + 1
        if not count:
            self._keys[self._key(topic_filter)] = topic_filter
            self._announce(topic_filter, later=later)
        elif not later:  # a client subscribed: its route goes before a restore's
            self._writes.hurry([self._key(topic_filter)])

    def remove(self, topic_filter: str) -> None:
        count = self._wanted.get(topic_filter, 0)
        if count > 1:
            self._wanted[topic_filter] = count - 1
        elif count == 1:
            del self._wanted[topic_filter]
            del self._keys[self._key(topic_filter)]
            if self._keeping:
                self._leftovers.add(self._key(topic_filter))
            else:
                self._writes.change(self._key(topic_filter), None)

    def keep(self) -> None:
        """This member fenced itself off: the entries of the sessions it forgets stay, as
        leftovers, until the sessions it still holds are restored (``drop_leftovers``). A
        session nobody took from it (its device stayed away, and NATS kept this member's
        subscriptions, so no survivor adopted it) is restored as it rejoins: until then,
        what is published for it elsewhere is routed here (parked: this member does not
        listen for frames while it is fenced off, ``Fencing``), never matched by no route
        and acknowledged unrouted."""
        self._keeping = True

    def drop_leftovers(self) -> None:
        """Delete the entries of this member's previous run, or of the sessions it forgot
        when it fenced itself off (``keep``), that its sessions, restored now, do not use."""
        self._keeping = False
        wanted = {self._key(topic_filter) for topic_filter in self._wanted}
        for key in self._leftovers - wanted:
            self._writes.change(key, None, later=True)
        self._leftovers = set()
        if self._tasks:  # started: the restore's entries are being written
            task = asyncio.get_running_loop().create_task(
                self._restore_written(), name="cluster routes restored"
            )
            self._tasks = [*(t for t in self._tasks if not t.done()), task]  # fencings: bounded

    async def _restore_written(self) -> None:
        """Log once the entries of the sessions restored are in the bucket."""
        started = time.monotonic()
        await self._writes.written()
        log.info(
            "routes of the restored sessions in the bucket %.1f s after the restore: "
            "%d entries written since the start, %d there already",
            time.monotonic() - started, self.writes, self.skipped,
        )  # fmt: skip

    async def forget(self, member: str) -> None:
        """Delete the entries of ``member`` (gone, its sessions all taken by others)."""
        watch = await self.bucket.watch(f"{member}.>")
        keys = []
        try:
            while (change := await watch.next()) is not None:
                if change[1]:
                    keys.append(change[0])
        finally:
            await watch.stop()
        for key in keys:
            await self.bucket.delete(key)
        log.info("%d routes of member %s deleted", len(keys), member)

    def rewrite(self, filters: list[str]) -> None:
        """Write these filters of this member's again (a later revision names them)."""
        for topic_filter in filters:
            if topic_filter in self._wanted:
                self._writes.change(*self._entry(topic_filter))

    async def written(self) -> None:
        """Once the filters added or removed so far are in the bucket (the other members
        see them a watch's delivery later)."""
        if not self._tasks:
            return  # not started, or stopped: nothing is written
        await self._writes.written()

    async def written_for(self, filters: Iterable[str]) -> None:
        """Once the entries of ``filters`` are in the bucket as changed so far, written
        before the others waiting: a client connecting to a member that restores its
        sessions waits for its own filters, not for the restore's."""
        written = self.keys_written(filters)
        if written is not None:
            await written

    def keys_written(self, filters: Iterable[str]) -> "asyncio.Future[None] | None":
        """``written_for``'s wait; None if not started, or stopped: nothing is written."""
        if not self._tasks:
            return None
        keys = [self._key(topic_filter) for topic_filter in filters]
        self._writes.hurry(keys)
        return self._writes.keys_written(keys)

    def _announce(self, topic_filter: str, *, later: bool) -> None:
        """Write the entry of ``topic_filter``, unless the bucket holds it already."""
        key, value = self._entry(topic_filter)
        if self._own.holds(key, value) and self._writes.idle(key):
            self.skipped += 1
            return
        self._writes.change(key, value, later=later)

    def _seen(self, key: str, value: bytes | None, revision: int, *, watched: bool) -> None:
        """A change of this member's ``key`` given by the watch (``watched``) or written here:
        a deletion by another member of an entry a session here uses is written again."""
        if self._own.seen(key, value, revision, watched=watched):
            topic_filter = self._keys.get(key)
            if topic_filter is not None:
                self.rewritten += 1
                self._writes.change(*self._entry(topic_filter), later=True)

    def _key(self, topic_filter: str) -> str:
        return f"{self.member}.{to_key(topic_filter)}"

    def _entry(self, topic_filter: str) -> tuple[str, bytes]:
        """The key and value announcing ``topic_filter``: a digest's value names it."""
        key = self._key(topic_filter)
        return key, topic_filter.encode() if is_digest(key[len(self.member) + 1 :]) else b""

    def _apply(self, key: str, value: bytes | None) -> None:
        """Another member's entry written (``value``) or deleted (None)."""
        member, _, token = key.partition(".")
        if member == self.member or not token:
            return
        try:
            topic_filter = self._filter_of(key, token, value)
        except ValueError:
            log.warning("route %s in %s does not name a filter: ignored", key[:100], BUCKET)
            return
        if topic_filter is None:
            return  # a digest key deleted that was never read: nothing to remove
        if value is not None:
            self.table.add(member, topic_filter)
        else:
            self.table.remove(member, topic_filter)

    def _filter_of(self, key: str, token: str, value: bytes | None) -> str | None:
        if not is_digest(token):
            return from_key(token)
        if value is None:
            return self._long.pop(key, None)
        topic_filter = value.decode()
        if to_key(topic_filter) != token:
            raise ValueError("a digest key whose value is not its filter")
        self._long[key] = topic_filter
        return topic_filter

    async def _follow(self, watch: Watch) -> None:
        while True:
            change = await cancellable(watch.value())  # a stop's cancellation nats-py lost
            if change is not None:
                self._at(watch.revision)
                if change[0].startswith(self.member + "."):
                    self._seen(*change, watch.revision, watched=True)
                self._apply(*change)
            if self._waiters:
                self._wake()

    async def _write(self) -> None:
        """One writer, the latest change of each key in the order the keys first changed
        (``broker.cluster.pending_writes``). A write NATS refuses is retried until it goes
        through."""
        while True:
            key, value = await self._writes.next()
            while True:
                try:
                    if value is not None:
                        revision = await self.bucket.put(key, value)
                        self._at(revision)
                        if self._waiters:
                            self._wake()
                    else:
                        revision = await self.bucket.delete(key)
                    break
                except ClusterError as exc:
                    log.warning("%s (retrying)", exc)
                    await asyncio.sleep(1.0)
            self.writes += 1
            self._writes.done(key, value)
            self._seen(key, value, revision, watched=False)
            if cancel_requested():  # lost in nats-py's wait (``nanoiot.tasks``): stopping
                raise asyncio.CancelledError
