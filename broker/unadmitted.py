"""``max_unadmitted_bytes``: what all connections not admitted yet may make the broker hold.

Until its CONNECT is accepted no credential vouches for a connection, yet it may send up to
``max_packet_size`` of a CONNECT (MQTT 3.1.1 §3.1.3 and 5.0 §3.1.3: a will payload may be
large) and the start of what follows it, which wait in the protocol core until the broker has
decided (the core stops reading past a packet's worth). Bounded per connection only, all of
them together held ``max_connections`` times that: 25 GiB at 100,000 connections, and one host
could fill half of them before ``max_connecting_per_address`` applies. So every byte read from
a connection before it is admitted is charged to one budget for the whole broker process,
whether still a partial CONNECT, a CONNECT being authenticated, or what was sent behind it.

When a read would take the total past the bound, the connection charged the most is closed
(counted as a hit of ``max_unadmitted_bytes``, logged at most once a minute while it goes on),
as many as it takes; the reader itself if it would be charged the most. Closing the reader
instead would let whoever filled the budget (trickling partial CONNECTs up to the connect
deadline, reconnecting as each ends) keep every device out, while a device's CONNECT is a few
hundred bytes and never the largest: the others keep going.

A connection's bytes are charged as they arrive and given back all at once when it is
admitted (``broker.connecting.accept``: the admitted client's packets are bounded as any
connected client's) or when it ends, whatever ends it (``MqttClient._end``: refusal, deadline,
peer close, TLS error, take-over, kick, shutdown). A charge never given back would keep
every client out in time: ``held`` is in ``/metrics`` (``nanoiot_unadmitted_bytes``).

Imports the client for its type only (the client imports this module).
"""

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.connection_limit import ConnectionLimit
from broker.mqtt.connection import AUTHENTICATING

if TYPE_CHECKING:
    from broker.client import MqttClient

# The heap of charges is rebuilt from the live ones when it holds more than twice as many
# entries as there are holders, plus this: each take leaves the holder's previous entry
# behind, each release its last.
_SLACK = 1024


class UnadmittedBytes(ConnectionLimit):
    """The bytes each connection not admitted yet was charged, and their total; the
    connections closed to keep it within ``maximum`` counted and logged as
    ``ConnectionLimit``'s."""

    setting = "max_unadmitted_bytes"
    closed = "connection(s) not admitted yet closed, the last"
    log = logging.getLogger(__name__)

    def __init__(
        self,
        maximum: int,
        count: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(maximum, count, clock)
        self.held = 0  # bytes charged, all connections together
        self._charged: dict[MqttClient, int] = {}
        # (-charge, order, holder) for each take: the largest charge on top. An entry whose
        # charge is no longer its holder's (charged since, or given back) is stale, dropped
        # when it comes to the top; ``order`` breaks ties (the earlier first), never comparing
        # holders. A scan of all holders instead cost 5.4 ms per read past the bound with
        # 100,000 of them: quadratic work under a flood of small unadmitted connections.
        self._heap: list[tuple[int, int, MqttClient]] = []
        self._order = itertools.count()

    def take(self, holder: "MqttClient", size: int) -> bool:
        """Charge ``size`` more bytes to ``holder``; False (nothing charged) if the total
        would pass ``maximum``."""
        held = self.held + size
        if held > self.maximum:
            return False
        self.held = held
        charged = self._charged[holder] = self._charged.get(holder, 0) + size
        heapq.heappush(self._heap, (-charged, next(self._order), holder))
        self._compact()
        return True

    def release(self, holder: "MqttClient") -> None:
        """``holder`` is admitted or gone: what it was charged is free (any number of times)."""
        self.held -= self._charged.pop(holder, 0)
        self._compact()

    def _compact(self) -> None:
        """Rebuild the heap from the live charges once stale entries outnumber them (O(N)
        every N changes or more): they would also keep connections that ended alive."""
        if len(self._heap) > 2 * len(self._charged) + _SLACK:
            self._heap = [(-c, next(self._order), h) for h, c in self._charged.items()]
            heapq.heapify(self._heap)

    def charged(self, holder: "MqttClient") -> int:
        return self._charged.get(holder, 0)

    def largest(self, above: int) -> "MqttClient | None":
        """The connection charged the most, if that is more than ``above``: the heap's top
        once the stale entries above it are dropped (each dropped once: amortized
        O(log N) a take)."""
        heap = self._heap
        while heap:
            negative, _, holder = heap[0]
            if self._charged.get(holder) == -negative:
                return holder if -negative > above else None
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        """Connections holding a charge."""
        return len(self._charged)


def hold(client: "MqttClient", size: int) -> bool:
    """``size`` bytes read from ``client``: charged if it is not admitted yet, after closing
    the connections charged more than it would be, as long as the total would pass
    ``max_unadmitted_bytes``. False: ``client`` itself was closed, and its bytes dropped."""
    if client.session is not None:
        return True
    budget = client.broker.unadmitted
    while not budget.take(client, size):
        victim = budget.largest(above=budget.charged(client) + size)
        _close(budget, client if victim is None else victim)
        if victim is None:
            return False
    return True


def _close(budget: UnadmittedBytes, client: "MqttClient") -> None:
    """Close ``client`` without a will (it has no session yet)."""
    budget.refused(client.label)
    client._end(will=False)
    budget.release(client)  # ``_end`` did; found again, it would be closed for ever


def pause_past_connect(client: "MqttClient") -> None:
    """A client authenticating with more than a packet behind its CONNECT: the rest waits in
    the socket until it is admitted (what it holds stays within a packet or two)."""
    core = client.core
    if core.state == AUTHENTICATING and core.buffered > client.broker.limits.max_packet_size:
        client._paused = True
        client.tls.pause_reading()
