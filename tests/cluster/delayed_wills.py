"""The device "sensor"'s MQTT 5 connections with a delayed will, for the tests of what becomes
of that will when its node dies, is fenced off or its departure is taken over: raw clients
(exact CONNECT flags and properties) with a persistent session, and what a watcher then sees."""

from broker.mqtt.packets import (
    MQTT_5,
    Connect,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
    Will,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import Client
from tests.e2e.peers import Raw
from tests.output import Output

STATUS = "v1/devices/me/status"
EXPIRY = 600  # seconds (5.0 §3.1.2.11.2): longer than the test
DELAY = 300  # a Will Delay Interval the test never waits out: a will that comes is not late


def connect(raw: Raw, clean: bool, will: Will | None = None) -> None:
    """The device's CONNECT with Clean Start ``clean``, a session kept ``EXPIRY`` seconds."""
    expiry = Properties([(Property.SESSION_EXPIRY_INTERVAL, EXPIRY)])
    raw.connect(Connect(MQTT_5, "sensor", clean, 60, will=will, properties=expiry))


def connect_with_delayed_will(raw: Raw, delay: int = DELAY) -> None:
    """``connect`` with Clean Start 0 and the will "gone" to ``STATUS``, its Will Delay
    Interval ``delay`` seconds (5.0 §3.1.3.2.2)."""
    delayed = Properties([(Property.WILL_DELAY_INTERVAL, delay)])
    connect(raw, False, Will(STATUS, b"gone", properties=delayed))


def stored(raw: Raw) -> None:
    """Once the node's store committed the session: a message queued for it (to its own
    status, subscribed) is acknowledged once committed, after the session's own row."""
    raw.send(Subscribe(1, (SubscribeRequest(STATUS, 1),)))
    assert raw.read() == Suback(1, (1,))
    raw.send(Publish(STATUS, b"up", 1, packet_id=2))
    while not isinstance(packet := raw.read(), Puback):
        assert isinstance(packet, Publish)  # its own message, delivered


def at_once_or_never(watcher: Client, log: Output, clean: bool) -> None:
    """After the device connected again with Clean Start ``clean``: 1 ended the session, so
    the will comes at once (within seconds, not its delay), once; 0 took the session on, so
    the node that held the will (its ``log``) dropped it, and it never comes."""
    if clean:
        will = watcher.next_message()
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
    else:
        log.wait_for(r"will of session \S+/sensor dropped: its client took the session")
    assert watcher.no_message(within=1.0)  # once, or never
