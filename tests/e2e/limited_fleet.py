"""A broker with small limits for the tests that try them, a device that reaches past them,
a bystander device that must go on as before, and a backend application that reads ``$SYS``."""

from pathlib import Path

from broker.mqtt.packets import Connack, Connect
from tests.e2e.harness import BrokerThread, Client, broker_settings, mqtt_client, write_pem
from tests.e2e.peers import Paho, Raw


class Fleet:
    """A broker with small limits, a device's certificate and a backend application."""

    def __init__(self, tmp_path: Path, **limits: int) -> None:
        self.broker = BrokerThread(broker_settings(tmp_path / "data", sys_interval=0.1, **limits))
        self.device, issued = self.broker.provision("greedy")
        self.certfile = write_pem(tmp_path, issued, "greedy")
        self.bystander, other = self.broker.provision("bystander")
        self.other_certfile = write_pem(tmp_path, other, "bystander")
        self.broker.application("backend", "backend", "backend-pass")

    def backend(self, client_id: str = "backend") -> Client:
        client = mqtt_client(self.broker.port, self.broker.server_cert, None, client_id=client_id,
                             username="backend", password="backend-pass")  # fmt: skip
        assert client.wait_connack() == 0
        return client

    def paho(self, client_id: str, *, clean_session: bool = True) -> Paho:
        client = Paho(self.broker.port, self.broker.server_cert, self.certfile, client_id,
                      clean_session=clean_session)  # fmt: skip
        assert client.connack()[0] == 0
        return client

    def raw(self, client_id: str) -> Raw:
        raw = Raw(self.broker.port, self.broker.server_cert, self.certfile)
        raw.send(Connect(4, client_id, False, 0))
        assert raw.read() == Connack(False, 0)
        return raw

    def hits(self, limit: str) -> int:
        return self.broker.running.broker.metrics.limit_hits[limit]

    def bystander_round_trip(self) -> None:
        other = Paho(self.broker.port, self.broker.server_cert, self.other_certfile, "b")
        try:
            assert other.connack()[0] == 0
            assert other.subscribe(("v1/devices/me/telemetry", 1)) == [1]
            other.publish("v1/devices/me/telemetry", b"unaffected", 1)
            assert other.receive(1)[0].payload == b"unaffected"
        finally:
            other.close()

    def sys_value(self, topic: str) -> bytes:
        backend = self.backend("sys-reader")
        try:
            assert backend.subscribe(topic, qos=0) == [0]
            return bytes(backend.next_message().payload)
        finally:
            backend.close()
