"""The listening sockets of the MQTT and admin servers, made one way.

``host`` may be a name, an IPv4 or an IPv6 address. The IPv6 wildcard (``::``) takes IPv4
clients too where the system allows both on one socket, as ``0.0.0.0`` takes every IPv4
client: ``socket.create_server`` would otherwise make it IPv6-only (IPV6_V6ONLY) and turn
every IPv4 device away. An IPv4 client then shows as ``::ffff:a.b.c.d``; the servers map it
back where an address decides something (admin.http_guard).
"""

import ipaddress
import socket

__all__ = ["listening_socket"]


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket listening on ``host:port`` (port 0: a free one); ``OSError`` (and its
    ``socket.gaierror`` for a name that does not resolve) as the system gives it."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    wildcard = family == socket.AF_INET6 and ipaddress.ip_address(address[0]).is_unspecified
    return socket.create_server(
        address,
        family=family,
        reuse_port=reuse_port,
        dualstack_ipv6=wildcard and socket.has_dualstack_ipv6(),
    )
