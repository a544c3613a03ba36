"""``$SYS/broker/clients/disconnected`` and ``clients/connected`` stay right as they are
counted (not scanned, ``broker.session_table``): across connects, disconnects, a take-over,
a session's expiry and a restart that reads sessions back. Each step waits for the figure
``$SYS`` publishes (every 0.1 s here), then checks it, in the broker's thread, against a
count of the sessions and connections themselves. A real broker over mutual TLS, paho MQTT
5 clients, SQLite.

A step's ``_until`` must not be met by a figure published before the step: a take-over
leaves the session without a client while its old connection closes (``Registry.take_over``
detaches it before the new CONNACK), and a figure published then says 1 for a moment. So
before a step whose figures follow a take-over, the watcher reads up to a mark the broker
routes after it (``_caught_up``): what comes after the mark was published after it."""

import time
from pathlib import Path

from paho.mqtt.packettypes import PacketTypes

from broker.router import Message
from tests.e2e.harness import WAIT
from tests.e2e.test_queue_expiry import Site
from tests.e2e.v5_client import V5Client, make_properties, v5_client, v5_watcher

DISCONNECTED = "$SYS/broker/clients/disconnected"
MARK = "$SYS/test/mark"


def _until(watcher: V5Client, value: int) -> None:
    """Wait for ``$SYS`` to show ``value`` sessions without a client."""
    deadline = time.monotonic() + WAIT
    seen = b""
    while seen != str(value).encode():
        assert time.monotonic() < deadline, f"$SYS still shows {seen!r}, not {value}"
        seen = bytes(watcher.next_message().payload)


def _caught_up(site: Site, watcher: V5Client) -> None:
    """Read the watcher's figures up to a mark routed now, in the broker's thread: each
    later one was published after this call (one connection's messages leave in order)."""

    async def mark() -> None:
        site.running.broker.router.publish(Message(MARK, b"", 0, False))

    site.broker.call(mark())
    deadline = time.monotonic() + WAIT
    while watcher.next_message().topic != MARK:
        assert time.monotonic() < deadline, "the mark did not come"


def _figures(site: Site) -> tuple[int, int]:
    """(connected, disconnected) as ``$SYS`` has them, checked against a scan."""

    async def read() -> tuple[int, int]:
        registry = site.running.broker.registry
        figures = dict(site.running.sys_topics.figures())
        connected = int(figures["$SYS/broker/clients/connected"])
        away = int(figures[DISCONNECTED])
        assert away == sum(1 for s in registry.sessions.values() if s.client is None)
        assert connected == sum(len(clients) for clients in registry.live.values())
        return connected, away

    return site.broker.call(read())


def _short_lived(site: Site, client_id: str) -> V5Client:
    """The meter's session ``client_id`` with a Session Expiry Interval of 1 s."""
    connect = make_properties(PacketTypes.CONNECT, SessionExpiryInterval=1)
    client = v5_client(site.broker.port, site.broker.server_cert, site.certfile,
                       client_id=client_id, clean_start=False,
                       connect_properties=connect)  # fmt: skip
    assert client.wait_connack()[0] == 0
    return client


def test_the_session_figures_follow_connects_take_overs_expiries_and_a_restart(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path, sys_interval=0.1)
    try:
        watcher = v5_watcher(site.broker, DISCONNECTED)
        assert watcher.subscribe(MARK) == [1]
        first = site.meter("a")
        brief = _short_lived(site, "b")
        assert _figures(site) == (3, 0)  # the watcher's clean session has its client
        first.close()
        _until(watcher, 1)
        assert _figures(site) == (2, 1)
        again = site.meter("a")
        again.paho.reconnect_delay_set(60, 60)  # taken over, it stays away
        _until(watcher, 0)
        taking = site.meter("a")  # takes the session over: its CONNACK after the other's end
        assert _figures(site) == (3, 0)
        assert again.disconnected.wait(WAIT)
        again.close()
        _caught_up(site, watcher)  # not the take-over's moment without a client
        brief.close()  # away, then ended by its expiry (5.0 §3.1.2.11.2)
        _until(watcher, 1)
        _until(watcher, 0)
        assert _figures(site) == (2, 0)
        taking.close()
        _until(watcher, 1)
        watcher.close()
        site.restart()  # the session "a" read back, its client away
        assert _figures(site) == (0, 1)
    finally:
        site.broker.stop()
