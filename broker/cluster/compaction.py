"""The cluster's buckets kept bounded: delete markers purged once every member has read them.

JetStream keeps a delete marker for each key deleted from a key-value bucket until the key is
written again. The routes bucket gets one per filter a member stops using for good (a device
subscribing to new filters and unsubscribing leaves one each), and the claims bucket one per
clean session ended (``SessionClaims``), the devices bucket one per device whose last session
ended (``broker.cluster.seats``); nothing bounded any. So every member purges, each
``cluster_compaction_interval`` seconds, the markers of these buckets written more than
``cluster_delete_markers_kept`` seconds before (``KeyValue.compact``): a member reads a marker
within moments of its writing, so one that old was read by every member that was live then,
and a member starting later needs only the live values. What one member purged is gone for
the others' passes: each member doing it costs a read of the buckets, not a second purge.

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
from typing import Final

from nats.aio.client import Client

from broker.cluster.kv import KeyValue
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait

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
    """Each member's periodic purge of the delete markers in ``buckets``."""

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
        self._task = asyncio.get_running_loop().create_task(self._run(), name="compaction")
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def compact(self) -> int:
        """One pass over the buckets now; the markers purged (0 on an unsafe server)."""
        if not purge_is_safe(self._client):
            self._tell_unsafe()
            return 0
        purged = 0
        for bucket in self._buckets:
            purged += await bucket.compact(self.kept)
        self.purged += purged
        if purged:
            log.info("compaction: %d delete markers purged", purged)
        return purged

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
