"""How much of what a client sent the protocol core reads now: the read window and the turn
budget, with the bytes kept unread meanwhile. ``Connection`` is built on it; its packet loop
(``Connection._split``) checks both bounds inline, once per packet, as the engine's hot path.

Backpressure (MQTT 3.1 and 3.1.1): the broker answers a QoS 1 or 2 PUBLISH (PUBACK, PUBREC)
only once the store has it (§4.3.2), and these versions have no Receive Maximum to bound how
many a client sends meanwhile. Once ``max_awaiting_pubrel`` of them are unanswered,
``window_full`` is true: processing stops before the next packet (the rest stays unread) and
the I/O layer stops reading the socket, until an acknowledgement goes out. Keep-alive does not
expire meanwhile: the client is not silent, it is not read (§3.1.2.10; the I/O layer's
``broker.keep_alive`` keeps that rule).

Fairness: one call handles at most ``TURN_BUDGET`` packets, a SUBSCRIBE or UNSUBSCRIBE
counting one more per topic filter (each costs an ACL check and a subscription, or a retained
look-up), and any packet one more per ``TURN_BYTES`` of its length. Past it ``turn_over`` is
true and the rest waits until ``new_turn``: the I/O layer gives other connections their turn
in between. The bytes count because a packet's work grows with them (the payload copied into
each subscriber's TLS record, the store, other cluster members): counted as packets only, a
turn of 256 PUBLISHes of 200 KB was 51 MB of work before any other client's turn. Counted so,
a turn reads at most ``TURN_BUDGET * TURN_BYTES`` (256 KB) plus the packet that goes past
it: the budget is only checked before a packet, so the first of a turn always goes through,
a ``max_packet_size`` one too.

A packet that comes in many small reads (a client may send its bytes one TLS record, even one
byte, at a time) is gathered in ``_tail`` until it is whole: appending each read to the bytes
kept before copied them all each time, so a 256 KiB PUBLISH sent a byte a read cost 34 GB of
copying (3.4 s of CPU; and 100 s for a 1 MiB one under a larger ``max_packet_size``).
"""

from typing import Final

from broker.mqtt.handshake import CONNECTED, Handshake

__all__ = ["KEEP_ALIVE_GRACE", "TURN_BUDGET", "TURN_BYTES", "Intake"]

KEEP_ALIVE_GRACE: Final = 1.5  # §3.1.2.10: one and a half times the keep-alive
# Packets one turn handles (``turn_over``): about 2-4 ms of broker work, SUBSCRIBEs of 100
# filters or QoS 1 PUBLISHes, before other connections get theirs; 1-byte PINGREQs fill 256 B.
TURN_BUDGET: Final = 256
# A packet counts one more against the turn per this many bytes of it (fixed header
# included): a 200 KB PUBLISH fills most of a turn. Copying, encrypting and storing a KB is
# a few µs, about a small packet's share of the 2-4 ms turn.
TURN_BYTES: Final = 1024


class Intake(Handshake):
    """The reading bounds of a ``Connection``, which sets these attributes up."""

    # And Handshake's and Outbound's.
    __slots__ = ("_pending", "_read_at", "_tail", "_turn_left", "_wanted", "last_received")

    # Bytes received and not processed yet: ``_pending`` from ``_read_at`` on (the start of a
    # packet not yet whole, or what waits for the next turn or an answer). The offset, rather
    # than a copy of the rest each time the engine stops (after every SUBSCRIBE, at each
    # turn's end), keeps a read of many small packets linear.
    _pending: bytes
    _read_at: int
    # The packet at ``_read_at`` is not whole and needs ``_wanted`` bytes from there (0: not
    # known); what came for it since waits in ``_tail`` (amortised appends), joined once.
    _wanted: int
    _tail: bytearray
    _turn_left: int  # packets (filters, KBs) this turn still handles
    last_received: float

    @property
    def more_to_read(self) -> bool:
        """Bytes are waiting that ``receive_data(b"", now)`` may turn into events."""
        return self.buffered > 0 and self.state == CONNECTED and not self.window_full

    @property
    def window_full(self) -> bool:
        """MQTT 3.1/3.1.1: ``max_awaiting_pubrel`` QoS 1 and 2 PUBLISHes of the client are
        not answered yet (PUBACK, PUBREC: they wait for the store); nothing more is read until
        one is. The I/O layer stops reading the socket meanwhile."""
        return self._unacknowledged + self._pubrec_due >= self._read_limit

    @property
    def turn_over(self) -> bool:
        """This turn handled its ``TURN_BUDGET``: what is left waits for ``new_turn``."""
        return self._turn_left <= 0

    def new_turn(self) -> None:
        """The I/O layer's next turn: ``TURN_BUDGET`` more packets (or their KBs) may be
        handled."""
        self._turn_left = TURN_BUDGET

    def keep(self, data: bytes) -> None:
        """Bytes that arrived while the I/O layer lets other connections have their turn, or
        before the packet they belong to is whole: kept, unread, for the next one."""
        if self._wanted:
            tail = self._tail
            tail += data
            if self.buffered < self._wanted:
                return  # still not whole: nothing to read, nothing copied
            self._tail, self._wanted = bytearray(), 0
            self._pending, self._read_at = self._pending[self._read_at :] + tail, 0
            return
        self._pending, self._read_at = self._pending[self._read_at :] + data, 0

    @property
    def buffered(self) -> int:
        """Bytes received and not processed yet (kept while authenticating)."""
        return len(self._pending) - self._read_at + len(self._tail)

    def keep_alive_expired(self, now: float) -> bool:
        """§3.1.2.10: nothing received within 1.5 x the keep-alive the client asked for. The
        deadline only: while the I/O layer does not read the client (``window_full`` among
        its reasons) whatever it sent waits unread, a PINGREQ too, and the I/O layer does not
        ask (``broker.keep_alive``)."""
        return 0 < self.keep_alive * KEEP_ALIVE_GRACE < now - self.last_received
