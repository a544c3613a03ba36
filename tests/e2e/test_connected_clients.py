"""``nanoiot_connected_clients`` in /metrics: live MQTT connections, not devices.

Benchmarks divide memory and CPU by the number of live connections; this gauge is how they
check that number from the broker's side. One device may hold several connections (one per
client id); a second connection with the same client id takes over the first (MQTT 3.1.1
§3.1.4), so it must not be counted twice.
"""

from pathlib import Path

from tests.e2e.harness import WAIT, BrokerThread, Client, device_client, mqtt_client, write_pem


def gauges(broker: BrokerThread) -> dict[str, float]:
    text = broker.metrics()
    wanted = ("nanoiot_connected_clients", "nanoiot_connected_devices")
    return {
        name: float(value)
        for name, value in (line.split() for line in text.splitlines() if line.startswith(wanted))
    }


def test_counts_each_live_connection_of_a_device_once(broker: BrokerThread, tmp_path: Path) -> None:
    first, issued = device_client(broker, tmp_path, "meter", client_id="meter-a")
    certfile = write_pem(tmp_path, issued, "meter")
    clients: list[Client] = [first]
    try:
        assert first.wait_connack() == 0
        second = mqtt_client(broker.port, broker.server_cert, certfile, client_id="meter-b")
        clients.append(second)
        assert second.wait_connack() == 0
        assert gauges(broker) == {
            "nanoiot_connected_clients": 2.0,
            "nanoiot_connected_devices": 1.0,
        }

        # Same client id again: the broker closes the first connection before CONNACK.
        again = mqtt_client(broker.port, broker.server_cert, certfile, client_id="meter-a")
        clients.append(again)
        assert again.wait_connack() == 0
        assert first.disconnected.wait(WAIT)
        assert gauges(broker)["nanoiot_connected_clients"] == 2.0
    finally:
        for client in clients:
            client.close()
    for client in clients:
        assert client.disconnected.wait(WAIT)


def test_is_zero_with_no_client(broker: BrokerThread) -> None:
    assert gauges(broker) == {"nanoiot_connected_clients": 0.0, "nanoiot_connected_devices": 0.0}
