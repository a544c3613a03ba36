"""An away session's expired messages are taken out soon after they expire (MQTT 5.0
§3.3.2.3.3), not kept until a bound, a reconnect or a restart: gone from the store and the
broker's memory, counted as ``message_expiry`` (seen on ``$SYS`` and ``/metrics``), while a
message that has not expired stays and is delivered. A real broker over mutual TLS, paho
MQTT 5 clients, SQLite."""

import time
from pathlib import Path

import pytest

from tests.e2e.harness import WAIT
from tests.e2e.test_queue_expiry import PASSWORD, SHORT, Site
from tests.e2e.v5_client import V5Client, publish_properties, v5_application, v5_watcher

HITS = "$SYS/broker/limits/message_expiry"
LONG = publish_properties(MessageExpiryInterval=3600)


def _until_hits(watcher: V5Client, count: int) -> None:
    """Wait for ``$SYS`` to show ``count`` expired messages (published every sys_interval):
    each figure it publishes is an event; none reaching ``count`` within WAIT fails."""
    deadline = time.monotonic() + WAIT
    seen = b""
    while seen != str(count).encode():
        assert time.monotonic() < deadline, f"$SYS still shows {seen!r} expired messages"
        seen = bytes(watcher.next_message().payload)


@pytest.mark.parametrize("restart", [False, True], ids=["kept", "read_back"])
def test_an_away_sessions_expired_message_is_swept(tmp_path: Path, restart: bool) -> None:
    """A message of expiry 1 s queued for a session away for an hour: swept (its row
    deleted) within moments of its deadline; one of an hour's expiry queued after it stays.
    ``read_back``: the broker restarted meanwhile, the queue read back from the store."""
    site = Site(tmp_path, sys_interval=0.1)
    try:
        site.away("m")
        backend = v5_application(site.broker, "backend", PASSWORD)
        try:
            backend.publish("devices/meter/rpc/request/1", b"short", properties=SHORT)
            backend.publish("devices/meter/rpc/request/1", b"live", properties=LONG)
        finally:
            backend.close()
        if restart:
            site.restart()
        assert site.stored() == {"m": [b"short", b"live"]}
        watcher = v5_watcher(site.broker, HITS)
        try:
            _until_hits(watcher, 1)
        finally:
            watcher.close()
        assert site.stored() == {"m": [b"live"]}
        assert site.queued()[0] == 1  # the device's tally and the queue itself
        assert site.scraped('limit_hits_total{limit="message_expiry"}') == 1
        assert site.received("m", 1) == [b"live"]
        assert site.stored() == {"m": []}
    finally:
        site.broker.stop()
