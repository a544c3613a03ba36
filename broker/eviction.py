"""Who gives up a place when ``max_connections`` are open: the oldest connection not admitted.

Until its CONNECT is accepted no credential vouches for a connection, and holding one costs
nothing but a socket: idle TLS handshakes (``tls_handshake_timeout``) or idle connections
before CONNECT (``connect_timeout``), re-opened as they are closed. ``max_connecting_per_
address`` bounds a host's share, yet 1,563 hosts (one IPv6 /48 is 65,536 /64 hosts) holding
64 each filled the default 100,000 places, and then every device was turned away.

So once ``max_connections`` are open a new connection takes the place of the oldest one not
admitted yet (in its TLS handshake, or before its CONNECT is accepted): admitted devices are
never closed for a newcomer, and a device reconnecting gets a place while any connection not
admitted holds one. The oldest first: a device's own connection is admitted within a round
trip or two of its arrival, while whoever fills the places has to hold them. Only when every
place is held by an admitted client is the new connection refused (``ConnectionLimit``).

An eviction counts as a hit of ``max_connections``; its log line is limited per host and
interval (``broker.repeats.LogLimiter``), and past a few hosts an interval the rest are
only counted (a flood from many hosts would otherwise write a line for each).
"""

import logging
from collections import OrderedDict
from typing import Final, Protocol

from broker.connection_limit import ConnectionLimit, host_of
from broker.repeats import LogLimiter

log = logging.getLogger(__name__)

# Hosts named one by one in an interval; the others share one summary line.
_HOSTS_NAMED: Final = 16
_WHAT: Final = "connections not admitted yet closed for newer ones (max_connections)"


class Evictable(Protocol):
    def abort(self) -> None: ...


class Unadmitted:
    """A listener's connections not admitted yet, in the order they were accepted: O(1) to
    add, to drop (admitted or closed) and to close the oldest (an ``OrderedDict``; a plain
    dict's first key costs a walk past every key deleted before it)."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[Evictable, str] = OrderedDict()  # -> its client's address
        self._lines = LogLimiter(log, max_keys=_HOSTS_NAMED)

    def add(self, connection: Evictable, address: str) -> None:
        self._waiting[connection] = address

    def discard(self, connection: Evictable) -> None:
        """``connection`` is admitted or closed (any number of times)."""
        self._waiting.pop(connection, None)

    def evict_oldest(self, limit: ConnectionLimit) -> bool:
        """Close the oldest connection not admitted yet, for a new one past ``limit``; False
        (nothing closed) if every connection is admitted."""
        if not self._waiting:
            return False
        oldest, address = self._waiting.popitem(last=False)
        limit.hit()
        host = host_of(address)
        self._lines.warning(
            host, _WHAT,
            "max_connections (%d) reached: closed a connection from %s not admitted yet, the "
            "oldest, for a new one", limit.maximum, host,
        )  # fmt: skip
        oldest.abort()
        return True

    def flush(self) -> None:
        """Write the counts of lines held back (the listener stops)."""
        self._lines.flush()

    def __len__(self) -> int:
        return len(self._waiting)
