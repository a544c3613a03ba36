"""Nothing is acknowledged that the store cannot keep, on SQLite and on PostgreSQL.

The session tables bound a client id (255 characters) and a topic filter (1,024): they are
keys. PostgreSQL enforces VARCHAR lengths, SQLite does not, so on PostgreSQL a longer client
id or filter used to be accepted and acknowledged, then the session write failed and the
messages acknowledged meanwhile were lost with the next crash. The broker refuses both where
the packet arrives (CONNACK 2, SUBACK 0x80) on either store, and what it acknowledged is in
the database.
"""

from pathlib import Path

from auth.connack import ConnackCode
from storage.models import MQTT_CLIENT_ID_MAX, MQTT_TOPIC_FILTER_MAX
from tests.e2e.harness import BrokerThread, broker_settings, device_client, mqtt_client
from tests.e2e.stores import stored_sessions

PASSWORD = "backend-password-1"


def test_what_the_store_cannot_keep_is_refused_where_it_arrives(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    broker = BrokerThread(broker_settings(data_dir, database_url=database_url))
    try:
        broker.application("backend", "backend", PASSWORD)
        too_long = mqtt_client(
            broker.port, broker.server_cert, None, username="backend", password=PASSWORD,
            client_id="c" * (MQTT_CLIENT_ID_MAX + 45), clean_session=False,
        )  # fmt: skip
        try:
            assert too_long.wait_connack() == ConnackCode.IDENTIFIER_REJECTED
        finally:
            too_long.close()
        longest = "c" * MQTT_CLIENT_ID_MAX
        backend = mqtt_client(
            broker.port, broker.server_cert, None, username="backend", password=PASSWORD,
            client_id=longest, clean_session=False,
        )  # fmt: skip
        try:
            assert backend.wait_connack() == ConnackCode.ACCEPTED
            long_filter = "devices/" + "a" * MQTT_TOPIC_FILTER_MAX + "/#"
            assert [c.value for c in backend.subscribe(long_filter)] == [0x80]
            assert [c.value for c in backend.subscribe("devices/+/telemetry")] == [1]
        finally:
            backend.close()
        meter, _ = device_client(broker, tmp_path, "meter")
        try:
            assert meter.wait_connack() == ConnackCode.ACCEPTED
            meter.publish("v1/devices/me/telemetry", b'{"t": 21}', qos=1)  # PUBACK received
        finally:
            meter.close()
    finally:
        broker.stop()
    [session] = stored_sessions(database_url, data_dir)
    assert session.client_id == longest
    assert [s.topic_filter for s in session.subscriptions] == ["devices/+/telemetry"]
    assert [(m.topic, m.payload) for m in session.queued] == [
        ("devices/meter/telemetry", b'{"t": 21}')
    ]
