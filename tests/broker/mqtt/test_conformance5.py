"""MQTT 5.0 statements binding a Server checked bytes in, bytes out, that no other pure test
names (``docs/conformance-5.0.md`` maps every statement to its test)."""

from broker.mqtt.connection import Connection
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_5, Connack, Connect, Publish
from broker.mqtt.properties import Property
from tests.broker.mqtt.v5_connection import v5_accepted, v5_sent
from tests.broker.mqtt.wire_helpers import feed, wire

BOM = "\ufeff"  # encoded 0xEF 0xBB 0xBF


def test_a_zero_width_no_break_space_is_kept_where_it_is() -> None:
    # §1.5.4 [MQTT-1.5.4-3]: 0xEF 0xBB 0xBF is U+FEFF wherever it is, never skipped or
    # stripped: in a client identifier and in a topic name, first or not.
    connection = Connection(Limits())
    [connect] = connection.receive_data(wire(Connect(MQTT_5, BOM + "c", True, 60), level=MQTT_5), 0)
    assert isinstance(connect, Connect)
    assert connect.client_id.encode() == b"\xef\xbb\xbfc"
    accepted, _ = v5_accepted()
    for topic in (BOM + "t", "a/" + BOM + "/b"):
        [publish] = feed(accepted, Publish(topic, b"x"))
        assert isinstance(publish, Publish)
        assert publish.topic == topic


def test_no_authentication_is_offered_to_a_client_that_asked_for_none() -> None:
    # §4.12 [MQTT-4.12.0-6]: without an Authentication Method in the CONNECT the server sends
    # no AUTH and no Authentication Method (or Data) in the CONNACK; [MQTT-3.2.0-2] one
    # CONNACK only, [MQTT-3.2.2-1] its reserved flag bits 0.
    connection, connack = v5_accepted()
    assert isinstance(connack, Connack)
    assert connack.properties.get(Property.AUTHENTICATION_METHOD) is None
    assert connack.properties.get(Property.AUTHENTICATION_DATA) is None
    assert not connack.session_present
    assert v5_sent(connection) == []
