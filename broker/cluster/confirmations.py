"""The confirmations of forwarded frames: what waits for them, and how they join.

A frame with QoS 1 or 2 messages is confirmed by the member it went to
(``broker.cluster.forward``); its future is what the messages' publishers wait for before
their PUBACK or PUBREC (MQTT 3.1.1 §4.3.2, §4.3.3). ``Awaiting`` keeps the frames sent and
not answered yet, each with its deadline; ``all_of`` joins the futures one publisher waits
for (a frame per member, copies sent on after a hand-over, the store's commit).

A frame to a member killed after the frame reached NATS is never answered, and NATS says
nobody listens only for a frame sent once it noticed the member's connection closed. So
``Awaiting`` watches one frame per member at a time: one still unanswered ``PROBE_AFTER``
seconds after it was sent has its member *probed* (the forwarder asks NATS whether anybody
listens), then the member's oldest later frame is watched, at most one probe per member
every ``PROBE_AFTER`` seconds. A member that answers its frames in time is never probed.

A member may be live and still slow to answer: one back after a while away gives its
sessions the backlog parked for it first (``broker.cluster.replay``), and what is sent to it
meanwhile is held behind that backlog, answered once it is given and committed (tens of
thousands of messages take longer than ``CONFIRM_WITHIN``). Such a member says so every
``BUSY_EVERY`` seconds (``broker.cluster.busy``), and each frame it names is waited for
``CONFIRM_WITHIN`` seconds from then (``busy``), up to ``most_busy`` seconds
(``cluster_replay_wait``) from its sending: its publishers are not cut off for a live peer. A
busy notice acknowledges nothing: only the member's answer does. Frames so extended hold
``busy_bytes`` (``max_forward_buffer``) at most; past it a frame keeps its first deadline.

Every failure must reach whoever decides about a publisher (its connection is closed
unacknowledged, so the client sends again: nothing acknowledged is lost). A failure nobody
is left to decide on (the outcome was decided by an earlier one, or nothing acknowledges
what it confirmed) is retrieved on purpose (``retrieved``, ``ignore_outcome``): asyncio
would otherwise report it as "Future exception was never retrieved" when it is collected,
which reads like a lost message.

No I/O here: the forwarder sends, and answers what comes back.
"""

import asyncio
from collections.abc import Callable
from typing import Final

from nanoiot.errors import ClusterUnavailableError

__all__ = [
    "BUSY_EVERY", "CONFIRM_WITHIN", "PROBE_AFTER", "Awaiting", "all_of", "fail", "ignore_outcome",
    "retrieved",
]  # fmt: skip

CONFIRM_WITHIN: Final = 5.0  # seconds a member has to answer a frame
# Seconds a frame waits unanswered before its member is probed: a member answers once its
# store committed (milliseconds; a probe of a slow one costs an empty message and its answer).
PROBE_AFTER: Final = 0.5
# Seconds between a busy member's notices (``broker.cluster.busy``): well within
# ``CONFIRM_WITHIN``, so that a notice delayed by a loaded machine still comes in time.
BUSY_EVERY: Final = 1.0


def fail(future: "asyncio.Future[None]", why: str) -> None:
    """Fail ``future`` (a publisher's wait) with ``why``, unless it is decided already."""
    if not future.done():
        future.set_exception(ClusterUnavailableError(why))


def retrieved(future: "asyncio.Future[None]") -> None:
    """A done callback reading ``future``'s failure for someone who has nothing to do with it."""
    if not future.cancelled():
        future.exception()


def ignore_outcome(future: "asyncio.Future[None]") -> None:
    """``future`` is waited for by nobody (its frame acknowledges nobody): its failure is
    read once it comes, on purpose."""
    future.add_done_callback(retrieved)


def all_of(futures: list["asyncio.Future[None]"]) -> "asyncio.Future[None] | None":
    """A future done when all of ``futures`` are, failed if one failed; no task involved."""
    if not futures:
        return None
    if len(futures) == 1:
        return futures[0]
    combined: asyncio.Future[None] = futures[0].get_loop().create_future()
    remaining = len(futures)

    def one_done(done: "asyncio.Future[None]") -> None:
        nonlocal remaining
        remaining -= 1
        if combined.done():
            # The first failure failed the publisher already; a second one (another
            # member's frame, dropped by the same full buffer) decides nothing more.
            retrieved(done)
            return
        if done.cancelled() or done.exception() is not None:
            combined.set_exception(
                ClusterUnavailableError("a member did not confirm a forwarded message")
                if done.cancelled()
                else done.exception()  # type: ignore[arg-type]
            )
        elif remaining == 0:
            combined.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    return combined


# token -> the confirmation, the member, its deadline, the frame (to park it), when it was
# sent (loop time), and whether its wait was extended for a busy member (``busy``)
_Entry = tuple["asyncio.Future[None]", str, asyncio.TimerHandle, bytes, float, bool]


class Awaiting:
    """Frames sent with a reply subject and not answered yet, by reply token (sequential,
    so in the order they were sent). One not answered within ``CONFIRM_WITHIN`` seconds
    fails its publishers; one not answered within ``PROBE_AFTER`` seconds has its member
    probed (``probe``)."""

    __slots__ = (
        "_entries", "_loop", "_next", "_watched", "busy_bytes", "extended_bytes", "most_busy",
        "probe",
    )  # fmt: skip

    def __init__(
        self,
        probe: Callable[[str], None] | None = None,
        most_busy: float = CONFIRM_WITHIN,
        busy_bytes: int = 0,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._next = 0
        self._loop = asyncio.get_running_loop()
        self._watched: dict[str, asyncio.TimerHandle] = {}  # by member: its watched frame's
        self.probe = probe
        self.most_busy = most_busy  # seconds a busy member's frame is waited for at most
        self.busy_bytes = busy_bytes  # bytes of frames extended so at most
        self.extended_bytes = 0  # ... now

    def add(self, member: str, data: bytes, confirmed: "asyncio.Future[None]") -> str:
        """The reply token for ``data`` sent to ``member``; ``confirmed`` fails if no answer
        comes in time."""
        token = str(self._next)
        self._next += 1
        timer = self._loop.call_later(CONFIRM_WITHIN, self._unconfirmed, token)
        self._entries[token] = (confirmed, member, timer, data, self._loop.time(), False)
        if self.probe is not None and member not in self._watched:
            self._watch(member, token, self._loop.time() + PROBE_AFTER)
        return token

    def deadline(self, token: str) -> float | None:
        """When ``token``'s frame fails unless answered (loop time); None if not waited for."""
        entry = self._entries.get(token)
        return None if entry is None else entry[2].when()

    def member(self, token: str) -> str | None:
        """The member ``token``'s frame went to; None if it is no longer waited for."""
        entry = self._entries.get(token)
        return None if entry is None else entry[1]

    def answered(self, token: str) -> tuple["asyncio.Future[None]", str, bytes] | None:
        """The confirmation, member and frame of ``token``, no longer waited for; None if it
        failed already (a late answer)."""
        entry = self._entries.pop(token, None)
        if entry is None:
            return None
        confirmed, member, timer, data, _sent, extended = entry
        timer.cancel()
        if extended:
            self.extended_bytes -= len(data)
        return confirmed, member, data

    def busy(self, token: str) -> bool:
        """``token``'s member says it holds the frame, live but busy (a backlog before it):
        it is waited for ``CONFIRM_WITHIN`` seconds from now, ``most_busy`` from its sending
        at most, while the frames so extended take ``busy_bytes`` at most. Whether it was."""
        entry = self._entries.get(token)
        if entry is None:
            return False  # answered, or failed already
        confirmed, member, timer, data, sent, extended = entry
        if not extended:
            if self.extended_bytes + len(data) > self.busy_bytes:
                return False  # its first deadline stands: the sender's memory is bounded
            self.extended_bytes += len(data)
        timer.cancel()
        at = min(self._loop.time() + CONFIRM_WITHIN, sent + self.most_busy)
        timer = self._loop.call_at(at, self._unconfirmed, token)
        self._entries[token] = (confirmed, member, timer, data, sent, True)
        return True

    def of(self, member: str) -> list[tuple[bytes, "asyncio.Future[None]"]]:
        """The frames sent to ``member`` and not answered, in the order they were sent, no
        longer waited for (they are parked instead)."""
        tokens = sorted((int(t), t) for t, entry in self._entries.items() if entry[1] == member)
        taken: list[tuple[bytes, asyncio.Future[None]]] = []
        for _number, token in tokens:
            answered = self.answered(token)
            assert answered is not None
            taken.append((answered[2], answered[0]))
        return taken

    def fail(self, token: str, why: str) -> None:
        """``token``'s frame is not confirmed: its publishers fail (none is acknowledged)."""
        entry = self.answered(token)
        if entry is not None:
            fail(entry[0], f"forwarding: {why}")

    def fail_all(self, why: str) -> None:
        """Every frame still waiting fails (the node is stopping)."""
        for timer in self._watched.values():
            timer.cancel()
        self._watched.clear()
        for token in list(self._entries):
            self.fail(token, why)

    def _unconfirmed(self, token: str) -> None:
        entry = self._entries.get(token)
        if entry is None:
            return
        member, sent, extended = entry[1], entry[4], entry[5]
        if extended:
            waited = self._loop.time() - sent
            self.fail(token, f"member {member}, busy, did not confirm within {waited:.0f} s")
        else:
            self.fail(token, f"member {member} did not confirm within {CONFIRM_WITHIN:g} s")

    # --- probing -------------------------------------------------------------------------------

    def _watch(self, member: str, token: str, at: float) -> None:
        self._watched[member] = self._loop.call_at(at, self._overdue, member, token)

    def _overdue(self, member: str, token: str) -> None:
        """``PROBE_AFTER`` seconds since ``token``'s frame was sent: its member is probed if
        it still waits; then the member's oldest later frame is watched."""
        self._watched.pop(member, None)
        probed = token in self._entries
        if probed and self.probe is not None:
            self.probe(member)
        after = int(token)
        for later, entry in self._entries.items():  # in the order they were sent
            if entry[1] == member and int(later) > after:
                at = entry[4] + PROBE_AFTER  # its sending, plus
                if probed:  # one probe per member a PROBE_AFTER at most
                    at = max(at, self._loop.time() + PROBE_AFTER)
                self._watch(member, later, at)
                return
