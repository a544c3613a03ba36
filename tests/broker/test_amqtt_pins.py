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
    # broker/routing.py
    "add_subscription": ["self", "subscription", "session"],
    "_del_subscription": ["self", "a_filter", "session"],
    "_handle_message_delivery": ["self", "client_session", "handler", "wait_deliver"],
    "_run_broadcast": ["self", "running_tasks"],
    "_publish_retained_messages_for_subscription": ["self", "subscription", "session"],
}
CALLED = {
    "_client_message_loop": ["self", "client_session", "handler"],
    "_publish_session_retained_messages": ["self", "session"],
    "_delete_session": ["self", "client_id"],
    "_broadcast_message": ["self", "session", "topic", "data", "force_qos"],
    "_retain_broadcast_message": ["self", "broadcast", "qos", "target_session"],
    "retain_message": ["self", "source_session", "topic_name", "data", "qos"],
    "_get_handler": ["self", "session"],
    "shutdown": ["self"],
    "start": ["self"],
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
