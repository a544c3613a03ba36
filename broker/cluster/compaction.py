"""The cluster's buckets kept bounded: delete markers purged once every member has read them.

JetStream keeps a delete marker for each key deleted from a key-value bucket until the key is
written again. The routes bucket gets one per filter a member stops using for good (a device
subscribing to new filters and unsubscribing leaves one each), and the claims bucket one per
clean session ended (``SessionClaims``), the devices bucket one per device whose last session
ended (``broker.cluster.seats``); nothing bounded any. So, each ``cluster_compaction_interval``
seconds, the markers of these buckets written more than ``cluster_delete_markers_kept`` seconds
before are purged (``KeyValue.compact``): a member reads a marker within moments of its
writing, so one that old was read by every member that was live then, and a member starting
later needs only the live values.

One member purges: the lowest-named live one (``first``). What it purged is gone for everyone,
so the others' passes would only read what is left; two members that both take themselves
for the first for a moment (one joining, its heartbeat not read yet) purge the same markers,
which is harmless. It does not read the buckets whole on each pass: watches note the markers
they give (``broker.cluster.markers``), the route table's watch on the routes bucket, and, on
the first member only, a watch of each other bucket kept while it is the first; a pass purges
the markers noted that are old enough, a cost in the markers purged, not in the buckets' keys
(measured with 20,000 routes in docs/deploy.md). A member reads the routes bucket whole only
when it becomes the first (its first pass, or after another first member went), and starts its
watches of the others then: markers written before the notes began, or dropped from them while
another member purged, are found so. The others drop from their notes the markers older than
the markers kept: the first purges them.

A purge is only safe on nats-server 2.9.12 and later. Before, a purge moved every open watch
of the stream past the entries it had not delivered yet (nats-server pull request 3838,
released in 2.9.12), so a member could miss a route written while it ran. On an older server
the member logs once which buckets grow and purges nothing; likewise on a pass made while
connected to an older server (a NATS cluster being upgraded). All servers of a NATS cluster
should run 2.9.12 or later: the version checked is that of the server this member is
connected to, which may not lead the bucket's stream.
"""

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Final

from nats.aio.client import Client

from broker.cluster.kv import KeyValue, Watch
from broker.cluster.markers import DeleteMarkers
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_all_and_wait, cancel_and_wait, cancel_requested, cancellable

__all__ = ["Compaction", "purge_is_safe"]

log = logging.getLogger(__name__)

# The first nats-server release whose purge leaves open watches (ordered consumers) alone.
SAFE_FROM: Final = (2, 9, 12)


def purge_is_safe(client: Client) -> bool:
    """Whether the server ``client`` is connected to purges without moving open watches."""
    version = client.connected_server_version
    if not version.major:  # not connected, or no version said
        return False
    return (version.major, version.minor, version.patch) >= SAFE_FROM


def server_version(client: Client) -> str:
    version = client.connected_server_version
    return f"{version.major}.{version.minor}.{version.patch}"


class Compaction:
    """The periodic purge of the delete markers in ``buckets``, by the first member only."""

    def __init__(
        self,
        client: Client,
        buckets: list[KeyValue],
        every: float,
        kept: float,
    ) -> None:
        self._client = client
        self._buckets = buckets
        self.every = every  # seconds between passes (0: none)
        self.kept = kept  # seconds a delete marker stays, so that every member reads it
        self.purged = 0  # delete markers purged by this member
        self._task: asyncio.Task[None] | None = None
        self._unsafe_told = False
        # Whether this member is the one that purges (the lowest-named live member): each
        # pass asks, since members come and go.
        self.first: Callable[[], bool] = lambda: True
        self._purging = False  # the first at the last pass: its notes hold every marker
        # Buckets this member watches anyway (its route table): their watch notes markers.
        self.watched: set[str] = set()
        # The others' watches, kept by this member while it is the first.
        self._watches: dict[str, tuple[Watch, asyncio.Task[None]]] = {}

    @property
    def active(self) -> bool:
        """Whether this member purges (a safe server and a non-zero interval)."""
        return self.every > 0 and purge_is_safe(self._client)

    def start(self) -> bool:
        """Start the passes; False, with one warning, if this server's purge is not safe."""
        if self.every <= 0:
            return False
        if not purge_is_safe(self._client):
            self._tell_unsafe()
            return False
        for bucket in self._buckets:  # noted from now on; those before, by a full read
            bucket.markers = DeleteMarkers()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="compaction")
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await self._unwatch()

    async def compact(self) -> int:
        """One pass over the buckets now; the markers purged (0 on an unsafe server, or on a
        member that is not the first)."""
        if not purge_is_safe(self._client):
            self._tell_unsafe()
            return 0
        before = time.time() - self.kept
        if not self.first():  # the first purges them: not noted here any more
            self._purging = False
            await self._unwatch()
            for bucket in self._buckets:
                if bucket.markers is not None:
                    bucket.markers.forget_older(before)
            return 0
        purged = 0
        for bucket in self._buckets:
            purged += await self._compact(bucket, before)
        self._purging = True
        self.purged += purged
        if purged:
            log.info("compaction: %d delete markers purged", purged)
        return purged

    async def _compact(self, bucket: KeyValue, before: float) -> int:
        notes = bucket.markers
        if notes is None:  # not started (a single pass asked for): the bucket read whole
            markers = await bucket.delete_markers(self.kept)
        elif bucket.bucket not in self.watched and bucket.bucket not in self._watches:
            await self._watch(bucket)  # its first read notes the markers there are
            markers = notes.older_than(before)
        elif bucket.bucket in self.watched and not self._purging:
            # Markers given before the notes began, or dropped while another purged.
            markers = await bucket.delete_markers(self.kept)
        else:
            markers = notes.older_than(before)
        await bucket.purge(markers)
        if notes is not None:
            notes.forget(markers)
        return len(markers)

    async def _watch(self, bucket: KeyValue) -> None:
        """Watch ``bucket`` while this member is the first: every value read once, then
        each change as it comes (its markers noted by the watch)."""
        watch = await bucket.watch()
        try:
            while await watch.next() is not None:
                pass
        except BaseException:
            await watch.stop()
            raise
        task = asyncio.get_running_loop().create_task(
            _follow(watch), name=f"compaction watch {bucket.bucket}"
        )
        self._watches[bucket.bucket] = (watch, task)

    async def _unwatch(self) -> None:
        watches, self._watches = list(self._watches.values()), {}
        try:
            await cancel_all_and_wait([task for _, task in watches])
        finally:
            for watch, _ in watches:
                await watch.stop()

    async def _run(self) -> None:
        # The first pass after a random part of the interval: members started together do
        # not all read the buckets at once.
        first = self.every * secrets.SystemRandom().uniform(0.5, 1.0)
        await asyncio.sleep(first)  # a period, not an event to wait on
        while True:
            try:
                await self.compact()
            except ClusterError as exc:  # NATS away: the next pass purges what is left
                log.warning("compaction of the cluster's buckets: %s", exc)
            if cancel_requested():  # lost in nats-py's wait (``nanoiot.tasks``): stopping
                raise asyncio.CancelledError
            await asyncio.sleep(self.every)

    def _tell_unsafe(self) -> None:
        if self._unsafe_told:
            return
        self._unsafe_told = True
        log.warning(
            "NATS server %s is older than 2.9.12, whose purge can make a watch skip entries "
            "(nats-server pull request 3838): delete markers are not purged, so the routes "
            "bucket grows by about 250 bytes per filter unsubscribed for good, and session "
            "claims stay after their clean sessions end (about 205 bytes each); upgrade NATS "
            "to bound them",
            server_version(self._client),
        )


async def _follow(watch: Watch) -> None:
    """Each change of a bucket this member watches for compaction only: read to be noted."""
    while True:
        await cancellable(watch.next())  # a stop's cancellation nats-py lost
