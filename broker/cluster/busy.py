"""Busy notices: a member that holds forwarded frames behind a backlog says it is live.

A member back after a while away (thawed, back on NATS, back from fencing itself off, or
restarted) first gives its sessions what the others parked for it meanwhile
(``broker.cluster.replay``); what the others send it directly from then on is held behind
that backlog, in each publisher's order (MQTT 3.1.1 §4.6), and answered only once the
backlog is given and committed: tens of thousands of parked messages take longer than the
``CONFIRM_WITHIN`` seconds a sender waits for an answer (a store write each). So would a
session arriving from another member, held until every member's barrier came
(``broker.cluster.handover``). Unanswered, the sender would disconnect its publishers
unacknowledged: a healthy publisher cut off for a slow but live peer.

Two designs were weighed. Giving the bulk of the backlog before the member says it takes
frames again (the others parking meanwhile, their publishers acknowledged as JetStream takes
each frame) shrinks the backlog only while the member gives and commits it faster than the
others park new frames, which nothing bounds (parking goes at the publishers' pace, giving
at the member's store's), and keeps the member refusing connections meanwhile. Measured on a
2-core machine: a member frozen for 12 s came back to 30,000 parked messages (4,000 frames),
read back in 2 s, and what was sent to it directly right after was still unanswered 5 s
after it came back. So the member says it is busy instead: every ``BUSY_EVERY`` seconds,
while a frame it took is held, it sends each sender one notice naming the reply tokens of
that sender's frames it holds, on ``<inbox>.b`` (a sender's frames are answered on
``<inbox>.<token>``; a sender of an earlier version ignores the token ``b``). The sender
then waits for each frame named ``CONFIRM_WITHIN`` seconds from the notice, up to
``cluster_replay_wait`` seconds from its sending (``broker.cluster.confirmations``). A
notice acknowledges nothing: a publisher gets its PUBACK or PUBREC only from the member's
answer, once what the frame brought is committed, or from JetStream if the member is found
gone meanwhile and the frame is parked. A member that dies sends no more notices, and its
frames are probed and parked as before. Frames that wait for the member's sessions to be
restored from the store (at start-up, or back from fencing: ``broker.cluster.frames_in``)
are named too, within ``max_forward_buffer`` bytes on the member. A sender's memory stays
bounded: the frames it waits for longer take ``max_forward_buffer`` bytes at most, past which
a frame keeps its first deadline.
"""

import asyncio
from collections.abc import Callable
from typing import Final

from broker.cluster.confirmations import BUSY_EVERY, Awaiting

__all__ = ["BUSY", "BusyNotices"]

BUSY: Final = "b"  # a busy notice's reply token; the tokens it names are its payload
_PER_NOTICE: Final = 10_000  # tokens named in one notice at most (about 70 KB)


class BusyNotices:
    """The frames a member holds unanswered, by reply subject, and the notices for them,
    sent with ``send(subject, payload)``; and, sending, the notices heard."""

    def __init__(self, send: Callable[[str, bytes], None]) -> None:
        self._send = send
        self._held: set[str] = set()  # reply subjects of frames held, not answered yet
        self._timer: asyncio.TimerHandle | None = None
        self.sent = 0  # notices sent
        self.heard = 0  # notices other members sent this one (counted by its forwarder)

    def held(self, reply: str) -> None:
        """The frame answered on ``reply`` is held: notices name it until ``answered``."""
        self._held.add(reply)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BUSY_EVERY, self._notify)

    def answered(self, reply: str) -> None:
        self._held.discard(reply)

    def held_until(self, reply: str, done: "asyncio.Future[None]") -> None:
        """``held`` until ``done`` (the frame's answer is due then)."""
        self.held(reply)
        done.add_done_callback(lambda _done: self.answered(reply))

    def heard_from(self, notice: bytes, awaiting: Awaiting) -> None:
        """A notice from a member busy with the frames it names (sending side): those of
        ``awaiting`` are waited for longer."""
        self.heard += 1
        for token in notice.decode(errors="replace").split():
            awaiting.busy(token)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()

    def _notify(self) -> None:
        self._timer = None
        if not self._held:
            return
        by_inbox: dict[str, list[str]] = {}
        for reply in self._held:
            inbox, _, token = reply.rpartition(".")
            by_inbox.setdefault(inbox, []).append(token)
        for inbox, tokens in by_inbox.items():
            for start in range(0, len(tokens), _PER_NOTICE):
                named = " ".join(tokens[start : start + _PER_NOTICE])
                self._send(f"{inbox}.{BUSY}", named.encode())
                self.sent += 1
        self._timer = asyncio.get_running_loop().call_later(BUSY_EVERY, self._notify)
