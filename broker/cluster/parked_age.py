"""How long frames wait unread in the parked stream, told before JetStream drops them.

The parked stream keeps a frame ``KEPT_FOR`` seconds at most (``broker.cluster.parked``): a
member nobody ever takes over does not keep frames forever. A frame not read by then is
dropped unread, and its messages, acknowledged to their publishers when JetStream took it,
are lost (MQTT 3.1.1 §4.3.2, §4.3.3). Frames are read within minutes on every path a member
leaves by (a survivor adopts its sessions once NATS says nobody listens for it, a member back
reads its own), so a frame that waits long says a member's sessions are stuck: frozen while
NATS still holds its connection, say, past the survivors' asking. Each member looks, every
``WATCH_EVERY`` seconds, at the oldest frame parked for each member it parks for, keeps the
oldest age for ``/metrics`` and logs a warning once one is ``WARN_AFTER`` seconds old, while
there is still time to take the member's sessions (restart it, or stop it).

What must not import: the broker's client or session modules.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from broker.cluster.parked import KEPT_FOR
from broker.repeats import LogLimiter
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_requested

if TYPE_CHECKING:
    from broker.cluster.parking import Parker

__all__ = ["WARN_AFTER", "WATCH_EVERY", "ParkedAge"]

log = logging.getLogger("broker.cluster.forward")  # its lines are the forwarder's

WATCH_EVERY: Final = 60.0  # seconds between looks at the oldest frames parked
WARN_AFTER: Final = KEPT_FOR / 2  # age of a frame parked unread that is warned of


class ParkedAge:
    """The age of the oldest frame parked by ``parker`` for each member, looked at in turn."""

    def __init__(self, parker: "Parker", warn_after: float = WARN_AFTER) -> None:
        self.parker = parker
        self.warn_after = warn_after
        self.oldest_seconds = 0.0  # of the frames parked for the members looked at last
        self._warnings = LogLimiter(log)  # one line per member a minute

    async def watch(self, every: float = WATCH_EVERY) -> None:
        while True:
            await asyncio.sleep(every)
            await self.look()
            if cancel_requested():  # lost in nats-py's wait (``nanoiot.tasks``): stopping
                raise asyncio.CancelledError

    async def look(self) -> None:
        """The oldest frame parked for each member frames are parked for, warned of if old."""
        parking, oldest = self.parker.parking, 0.0
        if parking is None:
            return
        for member in sorted(self.parker.parked):
            try:
                parked_at = await parking.oldest(member)
            except ClusterError as exc:
                log.info("%s (looked at again in a minute)", exc)
                continue
            if parked_at is None:
                continue  # read and purged: its sessions were taken
            age = (datetime.now(UTC) - parked_at).total_seconds()
            oldest = max(oldest, age)
            if age >= self.warn_after:
                self._warnings.warning(
                    member, "parked unread",
                    "frames parked for member %s are %.0f s old, unread: JetStream drops each "
                    "%.0f s after it was parked, and its messages, acknowledged to their "
                    "publishers, with it; take the member's sessions (restart it, or stop it "
                    "so that a survivor adopts them)", member, age, KEPT_FOR,
                )  # fmt: skip
        self.oldest_seconds = oldest
