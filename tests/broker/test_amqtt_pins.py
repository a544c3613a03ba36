"""What broker/ relies on in amqtt internals, pinned: this fails when an upgrade changes it.

The behaviour of each override is tested end to end (tests/e2e/test_sessions.py and
test_revocation.py); here we pin the names and signatures we override or call, so an amqtt
upgrade fails loudly here first instead of silently skipping an override.
"""

import inspect
from importlib.metadata import version

import pytest
from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler

from broker.core import NanoIoTBroker
from broker.handler import DeviceHandler

OVERRIDDEN = {
    # broker/message_loop.py
    "_client_message_loop": ["self", "client_session", "handler"],
    # broker/routing.py
    "add_subscription": ["self", "subscription", "session"],
    "_del_subscription": ["self", "a_filter", "session"],
    "_handle_message_delivery": ["self", "client_session", "handler", "wait_deliver"],
    "_run_broadcast": ["self", "running_tasks"],
    "_publish_retained_messages_for_subscription": ["self", "subscription", "session"],
    # broker/persistence.py
    "_handle_unsubscription": ["self", "client_session", "handler", "unsubscribe_waiter"],
    "_publish_session_retained_messages": ["self", "session"],
}
CALLED = {
    # broker/message_loop.py calls these with a finished waiter, as amqtt's loop does.
    "_handle_disconnect": ["self", "client_session", "handler", "disconnect_waiter"],
    "_handle_subscription": ["self", "client_session", "handler", "subscribe_waiter"],
    "_delete_session": ["self", "client_id"],
    # Wills still travel amqtt's broadcast queue to our _run_broadcast.
    "_broadcast_message": ["self", "session", "topic", "data", "force_qos"],
    "_get_handler": ["self", "session"],
    "shutdown": ["self"],
    "start": ["self"],
}
# broker/delivery.py: the handler methods we replace, and what our replacements call.
HANDLER_OVERRIDDEN = {
    "start": ["self"],
    "_reader_loop": ["self"],
    "handle_publish": ["self", "publish_packet"],
    "handle_puback": ["self", "puback"],
    "_retry_deliveries": ["self"],
    "_init_session": ["self", "session"],  # broker/handler.py: a plain logger
    "_stop_waiters": ["self"],
}
HANDLER_CALLED = {
    "mqtt_publish": ["self", "topic", "data", "qos", "retain", "ack_timeout"],
    "_handle_message_flow": ["self", "app_message"],
}


def test_amqtt_is_the_pinned_release() -> None:
    assert version("amqtt") == "0.12.1"


@pytest.mark.parametrize(("name", "parameters"), [*OVERRIDDEN.items(), *CALLED.items()])
def test_broker_internals_keep_their_signatures(name: str, parameters: list[str]) -> None:
    assert list(inspect.signature(getattr(Broker, name)).parameters) == parameters


@pytest.mark.parametrize("name", list(OVERRIDDEN))
def test_our_overrides_replace_amqtt(name: str) -> None:
    assert getattr(NanoIoTBroker, name) is not getattr(Broker, name)
    ours = list(inspect.signature(getattr(NanoIoTBroker, name)).parameters)
    assert ours == OVERRIDDEN[name]


def test_keep_alive_hook_is_still_called_by_the_reader_loop() -> None:
    # MQTT 3.1.1 §3.1.2.10 enforcement rests on amqtt calling handle_read_timeout on a read
    # timeout of session.keep_alive seconds; the no-op it replaces must still exist.
    source = inspect.getsource(ProtocolHandler._reader_loop)
    assert "self.handle_read_timeout()" in source
    assert "timeout=keepalive_timeout" in source
    assert DeviceHandler.handle_read_timeout is not BrokerProtocolHandler.handle_read_timeout


def test_session_attributes_exist_for_our_peer() -> None:
    from amqtt.session import Session

    assert Session().attributes == {}


@pytest.mark.parametrize(
    ("name", "parameters"), [*HANDLER_OVERRIDDEN.items(), *HANDLER_CALLED.items()]
)
def test_handler_internals_keep_their_signatures(name: str, parameters: list[str]) -> None:
    assert list(inspect.signature(getattr(ProtocolHandler, name)).parameters) == parameters


@pytest.mark.parametrize("name", list(HANDLER_OVERRIDDEN))
def test_our_handler_overrides_replace_amqtt(name: str) -> None:
    assert getattr(DeviceHandler, name) is not getattr(BrokerProtocolHandler, name)


def test_our_reader_loop_keeps_amqtts_contract() -> None:
    # broker/packet_loop.py replaces ProtocolHandler._reader_loop: it must still signal
    # readiness, dispatch the other packets to the same handlers, and end the same way.
    from broker.packet_loop import _HANDLERS

    assert DeviceHandler._reader_loop is not ProtocolHandler._reader_loop
    source = inspect.getsource(ProtocolHandler._reader_loop)
    for step in (
        "self._reader_ready.set()",
        "MQTTEvents.PACKET_RECEIVED",
        "await self.handle_connection_closed()",
        "self._reader_stopped.set()",
        "await self.stop()",
        "await self.handle_connect(packet)",
    ):
        assert step in source
    for name in _HANDLERS.values():
        assert f"asyncio.create_task(self.{name}(packet))" in source


def test_what_direct_delivery_writes_into_amqtt_state() -> None:
    from amqtt.broker import RetainedApplicationMessage
    from amqtt.session import OutgoingApplicationMessage, Session

    # Offline QoS 1/2 messages go where _publish_session_retained_messages reads them.
    assert "session.retained_messages.get()" in inspect.getsource(
        Broker._publish_session_retained_messages
    )
    assert list(inspect.signature(RetainedApplicationMessage).parameters) == [
        "source_session", "topic", "data", "qos",
    ]  # fmt: skip
    assert list(inspect.signature(OutgoingApplicationMessage).parameters) == [
        "packet_id", "topic", "qos", "data", "retain",
    ]  # fmt: skip
    session = Session()
    assert session.next_packet_id == 1
    assert dict(session.inflight_out) == {}
    # A retry re-sends with DUP only when the message has a packet object (we add one).
    assert "app_message.publish_packet is not None" in inspect.getsource(
        ProtocolHandler._handle_qos1_message_flow
    )


def test_broker_handler_start_only_adds_the_disconnect_waiter() -> None:
    # broker/packet_loop.py's start() calls ProtocolHandler.start itself and makes the
    # disconnect waiter first; amqtt's BrokerProtocolHandler.start must do no more than that.
    source = inspect.getsource(BrokerProtocolHandler.start)
    body = [line.strip() for line in source.splitlines()[1:] if line.strip()]
    assert body == [
        "await super().start()",
        "# Ensure the disconnect waiter is reset",
        "if self._disconnect_waiter is None or self._disconnect_waiter.done():",
        "self._disconnect_waiter = asyncio.Future()",
    ]


def test_the_queues_our_message_loop_waits_on_are_amqtts() -> None:
    # broker/message_loop.py replaces these queues with WakingQueues and reads them itself:
    # amqtt must still put SUBSCRIBE, UNSUBSCRIBE and QoS 2 messages into them.
    handler_source = inspect.getsource(BrokerProtocolHandler)
    assert "self._pending_subscriptions.put(" in handler_source
    assert "self._pending_unsubscriptions.put(" in handler_source
    assert "self.session.delivered_message_queue.put" in inspect.getsource(ProtocolHandler)
