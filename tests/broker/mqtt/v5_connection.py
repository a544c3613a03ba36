"""One MQTT 5 connection driven bytes in, bytes out: the set-up the MQTT 5 tests
(``test_v5_*``) share."""

from broker.mqtt.connection import Connection
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_5, Connack, Connect
from broker.mqtt.properties import NO_PROPERTIES, Properties
from broker.mqtt.session import Session
from tests.broker.mqtt.wire_helpers import packets_in, wire


def v5_connect(
    limits: Limits | None = None, properties: Properties = NO_PROPERTIES, keep_alive: int = 60
) -> Connection:
    connection = Connection(limits or Limits())
    connect = Connect(MQTT_5, "c", True, keep_alive, properties=properties)
    [event] = connection.receive_data(wire(connect, level=MQTT_5), 0)
    assert isinstance(event, Connect)
    return connection


def v5_accepted(
    limits: Limits | None = None,
    properties: Properties = NO_PROPERTIES,
    *,
    assigned_client_id: str | None = None,
    response_information: str | None = None,
) -> tuple[Connection, Connack]:
    connection = v5_connect(limits, properties)
    connection.accept(
        Session("c", persistent=False), session_present=False,
        assigned_client_id=assigned_client_id, response_information=response_information,
    )  # fmt: skip
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    return connection, connack


def v5_sent(connection: Connection) -> list[object]:
    return list(packets_in(connection.data_to_send(), MQTT_5))
