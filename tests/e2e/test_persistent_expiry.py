"""MQTT 3.1.1 persistent sessions expire ``persistent_session_expiry`` seconds after their client
left (3.1.1 §3.1.2.4 leaves their lifetime to the server), as an MQTT 5 session does after its
Session Expiry Interval (5.0 §3.1.2.11.2): its subscriptions, its queue and its row in the store
go, and its client's next CONNECT gets session present 0. With 0 a session stays. Real paho
3.1.1 clients over mutual TLS, on SQLite and PostgreSQL."""

import re
import time
from pathlib import Path

from tests.certgen import Issued
from tests.e2e.expiries import Expiries
from tests.e2e.harness import (
    WAIT,
    BrokerThread,
    Client,
    broker_settings,
    device_client,
    mqtt_client,
)
from tests.e2e.stores import stored_sessions

PASSWORD = "backend-password-1"
REQUEST = "v1/devices/me/rpc/request/+"
EXPIRY = 1  # seconds


def _meter(broker: BrokerThread, folder: Path, issued: Issued, *, clean: bool = False) -> Client:
    """The device "meter" connected as client "meter", CONNACK 0."""
    client, _ = device_client(
        broker, folder, "meter", issued, client_id="meter", clean_session=clean
    )
    assert client.wait_connack() == 0
    return client


def _backend(broker: BrokerThread) -> Client:
    client = mqtt_client(
        broker.port, broker.server_cert, None, username="backend", password=PASSWORD
    )
    assert client.wait_connack() == 0
    return client


def _nothing_queued(meter: Client, backend: Client) -> None:
    """The meter's queue is empty: a message published now is the first it gets."""
    assert meter.subscribe(REQUEST) == [1]
    backend.publish("devices/meter/rpc/request/2", b"now", qos=1)
    message = meter.next_message()
    assert (message.topic, message.payload) == ("v1/devices/me/rpc/request/2", b"now")


def _expired_total(broker: BrokerThread) -> str:
    """The value of ``nanoiot_sessions_expired_total`` on /metrics."""
    text = broker.metrics()
    found = re.search(r"^nanoiot_sessions_expired_total (\S+)$", text, re.MULTILINE)
    assert found is not None, text
    return found.group(1)


def _provisioned(broker: BrokerThread) -> tuple[Issued, str]:
    """The device "meter" and the application "backend"; the meter's certificate and the
    store key of its session."""
    broker.application("backend", "backend", PASSWORD)
    device, issued = broker.provision("meter")
    return issued, f"{device.id}/meter"


def test_a_persistent_session_expires_its_interval_after_its_client_left(
    database_url: str, tmp_path: Path, expiries: Expiries
) -> None:
    data_dir = tmp_path / "data"
    settings = broker_settings(
        data_dir, database_url=database_url, persistent_session_expiry=EXPIRY
    )
    with BrokerThread(settings) as broker:
        issued, key = _provisioned(broker)
        backend = _backend(broker)
        meter = _meter(broker, tmp_path, issued)
        assert meter.subscribe(REQUEST) == [1]
        left = time.monotonic()  # the broker releases the session after this
        meter.close()
        backend.publish("devices/meter/rpc/request/1", b"queued", qos=1)  # PUBACK: kept for it

        assert _expired_total(broker) == "0.0"
        assert expiries.keys.get(timeout=WAIT) == key
        assert time.monotonic() >= left + EXPIRY  # not before its interval
        assert _expired_total(broker) == "1.0"
        broker.call(broker.running.broker.store.flush())
        assert stored_sessions(database_url, data_dir) == []  # its row and its queue are gone

        again = _meter(broker, tmp_path, issued)
        assert again.session_present.get(timeout=WAIT) is False
        _nothing_queued(again, backend)
        again.close()
        backend.close()


def test_a_clean_session_is_not_kept_whatever_the_expiry(
    tmp_path: Path, expiries: Expiries
) -> None:
    settings = broker_settings(tmp_path / "data", persistent_session_expiry=3600)
    with BrokerThread(settings) as broker:
        issued, _ = _provisioned(broker)
        meter = _meter(broker, tmp_path, issued, clean=True)
        assert meter.subscribe(REQUEST) == [1]
        meter.close()
        again = _meter(broker, tmp_path, issued)
        assert again.session_present.get(timeout=WAIT) is False
        again.close()
        assert _expired_total(broker) == "0.0"
    assert expiries.keys.empty()  # it ended with its connection, not by an expiry


def test_without_an_expiry_a_persistent_session_stays(tmp_path: Path, expiries: Expiries) -> None:
    with BrokerThread(broker_settings(tmp_path / "data")) as broker:
        issued, _ = _provisioned(broker)
        backend = _backend(broker)
        meter = _meter(broker, tmp_path, issued)
        assert meter.subscribe(REQUEST) == [1]
        meter.close()
        backend.publish("devices/meter/rpc/request/1", b"queued", qos=1)
        again = _meter(broker, tmp_path, issued)
        assert again.session_present.get(timeout=WAIT) is True
        message = again.next_message()
        assert (message.topic, message.payload) == ("v1/devices/me/rpc/request/1", b"queued")
        again.close()
        backend.close()
    assert expiries.keys.empty()


def test_a_session_kept_before_the_expiry_was_set_expires_after_a_restart(
    database_url: str, tmp_path: Path, expiries: Expiries
) -> None:
    """Stored while 3.1.1 sessions never expired (no interval in its row): read back by a broker
    with ``persistent_session_expiry``, it expires that long after its client left."""
    data_dir = tmp_path / "data"
    with BrokerThread(broker_settings(data_dir, database_url=database_url)) as broker:
        issued, key = _provisioned(broker)
        backend = _backend(broker)
        meter = _meter(broker, tmp_path, issued)
        assert meter.subscribe(REQUEST) == [1]
        left = time.monotonic()
        meter.close()
        backend.publish("devices/meter/rpc/request/1", b"queued", qos=1)
        backend.close()
    [stored] = stored_sessions(database_url, data_dir)
    assert (stored.expiry_interval, len(stored.queued)) == (None, 1)

    later = broker_settings(
        data_dir, database_url=database_url, persistent_session_expiry=2 * EXPIRY
    )
    with BrokerThread(later) as broker:
        assert expiries.keys.get(timeout=WAIT) == key
        assert time.monotonic() >= left + 2 * EXPIRY  # counted from when its client left
        assert _expired_total(broker) == "1.0"
        backend = _backend(broker)
        again = _meter(broker, tmp_path, issued)
        assert again.session_present.get(timeout=WAIT) is False
        _nothing_queued(again, backend)
        again.close()
        backend.close()
