"""One application holding many shared subscriptions with long names on one node, all
matching what devices on another node publish: every message for that node names each
group, and a NATS message holds 1 MiB (max_payload). Before the share name and the bytes of
a node's shared subscriptions were bounded, 1,100 names of 990 characters made each such
message too large to cross: it was dropped, and every QoS 1/2 publisher of a matching topic
was disconnected unacknowledged, over and over. Now the long names are refused at
SUBSCRIBE, shared subscriptions past what a node holds too, and the publishers go on. Real
``nanoiot serve`` processes on the machine's NATS, real paho clients over mutual TLS."""

import re
from pathlib import Path

import pytest

from tests.cluster.nodes import cluster, metrics, until_routed, wait_for
from tests.e2e.harness import Client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

FILTER = "devices/+/telemetry"
LONG = [f"long{n:04}" + "n" * 982 for n in range(1100)]  # 990 characters: 1.1 MB named
SHORT = [f"short{n:04}" + "s" * 118 for n in range(2000)]  # 127 characters: 294 KB named
REFUSED = 0x80  # MQTT 3.1.1 §3.9.3 (paho's clients here speak 3.1.1)


def _subscribe_all(client: Client, names: list[str]) -> list[int]:
    """SUBSCRIBE ``$share/{name}/FILTER`` for each name, 100 to a packet (QoS 0: the copies
    to count are not queued); the SUBACK codes."""
    codes: list[int] = []
    for start in range(0, len(names), 100):
        batch = [(f"$share/{name}/{FILTER}", 0) for name in names[start : start + 100]]
        client.paho.subscribe(batch)
        codes += [code.value for code in client.subacks.get(timeout=WAIT)]
    return codes


def _routes_of_b(text: str) -> int:
    found = re.search(r'^nanoiot_cluster_routes\{member="b"\} (\S+)$', text, re.MULTILINE)
    return 0 if found is None else int(float(found.group(1)))


def test_long_share_names_and_many_groups_cannot_stall_another_nodes_publishers(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a")
        # One session may hold all of them (by default 30 sessions of one device could), and
        # one application name all the bytes b holds (by default 16 devices' shares would:
        # tests/e2e/test_shared_limits.py).
        nodes.start(
            "b",
            NANOIOT_MAX_SUBSCRIPTIONS="5000",
            NANOIOT_MAX_SUBSCRIPTION_BYTES=str(16 * 1024 * 1024),  # 2.1 KB counted a filter
            NANOIOT_MAX_SUBSCRIPTION_BYTES_PER_DEVICE=str(16 * 1024 * 1024),
            NANOIOT_MAX_SHARED_SUBSCRIPTION_BYTES_PER_DEVICE=str(256 * 1024),
        )
        watcher = nodes.connect("b", app="backend", client_id="watcher")
        assert watcher.subscribe(FILTER, qos=1) == [1]
        greedy = nodes.connect("b", app="backend", client_id="greedy")
        long_codes = _subscribe_all(greedy, LONG)
        short_codes = _subscribe_all(greedy, SHORT)
        accepted = sum(code != REFUSED for code in long_codes + short_codes)
        device = nodes.connect("a", sensor, client_id="sensor")
        # Node a has every route of b's accepted subscriptions (the watcher's too).
        assert wait_for(lambda: _routes_of_b(metrics(nodes, "a")) == accepted + 1, WAIT * 4)
        until_routed(device, "v1/devices/me/telemetry", watcher)
        while not greedy.no_message(within=0.5):
            pass  # the probes' copies

        device.publish("v1/devices/me/telemetry", b"21.5", qos=1)  # its PUBACK came
        assert bytes(watcher.next_message().payload) == b"21.5"
        assert not device.disconnected.is_set()
        copies = 0
        while not greedy.no_message(within=1.0):
            copies += 1
        assert copies == accepted  # one for each group

        assert long_codes == [REFUSED] * len(LONG)  # max_share_name_length
        # max_shared_subscription_bytes (256 KiB): 1,783 names of 127 characters with the filter
        assert 1500 < accepted < len(SHORT)
        assert short_codes[:accepted] == [0] * accepted
        assert short_codes[accepted:] == [REFUSED] * (len(SHORT) - accepted)
