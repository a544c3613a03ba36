"""The MQTT listening socket, bound before anything else of the broker is started.

Binding first means the most common start-up failure, a port already in use, is found before
the store, the engine and the change feed are running (nothing to unwind), and is reported as
one line naming the settings, like the admin HTTP port. The socket is handed to
``broker.transport.start_tls_server``, which starts accepting on it; connections that arrive
in between wait in the listen backlog.

TCP keepalive (``tcp_keepalive_idle``) is set here, on the listening socket: Linux copies a
listening socket's SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and TCP_USER_TIMEOUT
to every connection it accepts, so every MQTT connection of every worker gets them without
a system call of its own.

No asyncio, no TLS: just the socket.
"""

import errno
import os
import socket
from typing import Final

from nanoiot.errors import ConfigError
from nanoiot.sockets import listening_socket
from nanoiot.text import host_port

__all__ = ["KEEPALIVE_INTERVAL", "KEEPALIVE_PROBES", "bind_mqtt_socket", "keepalive_options"]

# After tcp_keepalive_idle seconds of silence, a probe every KEEPALIVE_INTERVAL seconds; a
# connection whose KEEPALIVE_PROBES probes all go unanswered is closed, 2 minutes after the
# first. Constants, not settings: idle is what a deployment weighs (NAT timeouts, a sleeping
# radio woken by each probe); these only say how sure the broker is that the host is gone,
# and 4 probes survive a lost packet or two (RFC 1122 §4.2.3.6).
KEEPALIVE_INTERVAL: Final = 30
KEEPALIVE_PROBES: Final = 4


def keepalive_options(idle: int) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` for ``setsockopt``: TCP keepalive after ``idle`` seconds of
    silence (none for 0), with the options this platform lacks left out.

    TCP_USER_TIMEOUT (RFC 5482; Linux) closes a connection whose sent data stays
    unacknowledged as long as keepalive would take to give up: keepalive probes only go out
    while nothing is in flight, so a vanished subscriber that messages are being sent to
    would otherwise be retransmitted to for about 15 minutes (tcp_retries2). It also closes
    a client whose receive window stays shut that long (it reads nothing; RFC 1122
    §4.2.2.17 would hold it for good), and Linux applies it to keepalive itself (tcp(7)),
    which then ends at the same moment.
    """
    if idle == 0:
        return []
    tcp = socket.IPPROTO_TCP
    user_timeout_ms = (idle + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES) * 1000
    wanted = [
        ("SO_KEEPALIVE", socket.SOL_SOCKET, 1),
        ("TCP_KEEPIDLE", tcp, idle),
        ("TCP_KEEPINTVL", tcp, KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", tcp, KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", tcp, user_timeout_ms),
    ]
    return [
        (level, getattr(socket, name), value)
        for name, level, value in wanted
        if hasattr(socket, name)
    ]


def bind_mqtt_socket(
    host: str, port: int, *, reuse_port: bool = False, keepalive_idle: int = 0
) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port), or a ``ConfigError``.

    ``reuse_port``: for the worker processes of one node (``nanoiot.supervisor``), which
    share the port and let the kernel spread connections over them (SO_REUSEPORT).
    ``keepalive_idle``: seconds of silence before the connections it accepts are probed with
    TCP keepalive (0: never; ``keepalive_options``).
    """
    where = f"{host_port(host, port)} (MQTT_SSL_BIND_ADDRESS / MQTT_SSL_BIND_PORT)"
    try:
        # reuse_port is off unless asked for: a second broker on the same port must fail,
        # not share it.
        listener = listening_socket(host, port, reuse_port=reuse_port)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen for MQTT on {where}: {exc.strerror}") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot listen for MQTT on {where}: "
            + (os.strerror(exc.errno) if exc.errno else str(exc))
            + (" (is another broker running?)" if exc.errno == errno.EADDRINUSE else "")
        ) from None
    for level, option, value in keepalive_options(keepalive_idle):
        listener.setsockopt(level, option, value)
    return listener
