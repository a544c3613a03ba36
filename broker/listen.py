"""The MQTT listening socket, bound before anything else of the broker is started.

Binding first means the most common start-up failure, a port already in use, is found before
the store, the engine and the change feed are running (nothing to unwind), and is reported as
one line naming the settings, like the admin HTTP port. The socket is handed to
``broker.transport.start_tls_server``, which starts accepting on it; connections that arrive
in between wait in the listen backlog.

No asyncio, no TLS: just the socket.
"""

import errno
import os
import socket

from nanoiot.errors import ConfigError

__all__ = ["bind_mqtt_socket"]


def bind_mqtt_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port), or a ``ConfigError``.

    ``reuse_port``: for the worker processes of one node (``nanoiot.supervisor``), which
    share the port and let the kernel spread connections over them (SO_REUSEPORT).
    """
    where = f"{host}:{port} (MQTT_SSL_BIND_ADDRESS / MQTT_SSL_BIND_PORT)"
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen for MQTT on {where}: {exc.strerror}") from None
    try:
        # reuse_port is off unless asked for: a second broker on the same port must fail,
        # not share it.
        return socket.create_server(address, family=family, reuse_port=reuse_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen for MQTT on {where}: "
            + (os.strerror(exc.errno) if exc.errno else str(exc))
            + (" (is another broker running?)" if exc.errno == errno.EADDRINUSE else "")
        ) from None
