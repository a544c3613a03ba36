"""``broker.listen``: the TCP keepalive options the MQTT listening socket hands to every
connection it accepts, read back from an accepted connection (``ss`` cannot show
TCP_KEEPINTVL, TCP_KEEPCNT or TCP_USER_TIMEOUT: tests/cli/test_tcp_keepalive.py shows the
rest from outside)."""

import socket

import pytest

from broker.listen import KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, bind_mqtt_socket

TCP = socket.IPPROTO_TCP
pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_KEEPIDLE .. TCP_USER_TIMEOUT: Linux"
)


def accepted_options(idle: int) -> dict[str, int]:
    """The keepalive options of a connection accepted by a listener bound with ``idle``."""
    with bind_mqtt_socket("127.0.0.1", 0, keepalive_idle=idle) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        with client, accepted:
            return {
                "SO_KEEPALIVE": accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                **{
                    name: accepted.getsockopt(TCP, getattr(socket, name))
                    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")
                },
                "TCP_USER_TIMEOUT": accepted.getsockopt(TCP, socket.TCP_USER_TIMEOUT),
            }


def test_accepted_connections_get_keepalive_and_a_matching_user_timeout() -> None:
    assert accepted_options(45) == {
        "SO_KEEPALIVE": 1,
        "TCP_KEEPIDLE": 45,
        "TCP_KEEPINTVL": KEEPALIVE_INTERVAL,
        "TCP_KEEPCNT": KEEPALIVE_PROBES,
        # Unacknowledged data is given up on when keepalive would give up: 45 + 4 x 30 s.
        "TCP_USER_TIMEOUT": (45 + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES) * 1000,
    }


def test_idle_0_leaves_the_kernel_defaults() -> None:
    options = accepted_options(0)
    assert options["SO_KEEPALIVE"] == 0
    assert options["TCP_USER_TIMEOUT"] == 0  # 0: the kernel's retransmission limits
