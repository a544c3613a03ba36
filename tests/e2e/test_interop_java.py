"""A Java device, as the product text's last line has it ("To run Java client, import
CLIENT_FILE_PREFIX.jks"): tests/e2e/java/KeystoreMqttClient.java loads the keystore that
client.keygen.sh wrote (PKCS#12, password 'password') as both key store and trust store, and
talks MQTT 3.1.1 over TLS with Debian's libmqtt-client-java (org.fusesource.mqtt-client).

The source is compiled with javac into a temporary folder at test time; nothing compiled is
kept in the repository.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import BrokerThread, mqtt_client
from tests.e2e.interop import (
    JAVA_SOURCES,
    DeviceKeys,
    checked,
    make_keys,
    provision_pem,
    require_java_mqtt_client,
    run,
    running_broker,
)

MAIN_CLASS = "KeystoreMqttClient"
PASSWORD = "password"  # CLIENT_KEYSTORE_PASSWORD in the shipped keygen.properties
BACKEND = ("backend", "backend-password")


@dataclass(frozen=True)
class JavaSetup:
    java: str
    classpath: str  # the compiled client, then the library jars
    broker: BrokerThread
    device: DeviceKeys  # provisioned
    stranger: DeviceKeys  # made by the same script, never provisioned


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JavaSetup]:
    javac, java, jars = require_java_mqtt_client()
    classes = tmp_path_factory.mktemp("java-classes")
    sources = sorted(JAVA_SOURCES.glob("*.java"))
    checked([javac, "-Xlint:all", "-Werror", "-d", classes, "-cp", jars, *sources], timeout=120)
    keys = make_keys(tmp_path_factory.mktemp("java-keys"))
    device = keys.device("java-device", prefix="java-device")
    stranger = keys.device("java-stranger", prefix="java-stranger")
    with running_broker(keys, tmp_path_factory.mktemp("java-broker") / "data") as broker:
        provision_pem(broker, device)
        broker.application(BACKEND[0], *BACKEND)
        yield JavaSetup(java, f"{classes}:{jars}", broker, device, stranger)


def run_java(setup: JavaSetup, keystore: Path, client_id: str, payload: str) -> tuple[int, str]:
    args = [str(keystore), PASSWORD, "localhost", str(setup.broker.port), client_id]
    return run(
        [setup.java, "-cp", setup.classpath, MAIN_CLASS, *args, "v1/devices/me/telemetry", payload],
        timeout=60,
    )


@pytest.mark.slow
def test_java_client_with_the_client_keystore_publishes_and_gets_its_message_back(
    setup: JavaSetup,
) -> None:
    backend = mqtt_client(
        setup.broker.port, setup.broker.server_cert, None, username=BACKEND[0], password=BACKEND[1]
    )
    try:
        assert backend.wait_connack() == 0
        assert backend.subscribe(f"devices/{setup.device.name}/telemetry") == [1]

        code, output = run_java(setup, setup.device.jks, "java-1", '{"java": true}')
        assert code == 0, output
        assert output.splitlines() == [
            "connected",
            "subscribed 1",
            "published",
            'received v1/devices/me/telemetry {"java": true}',
        ], output

        seen = backend.next_message()  # the same message, under the device's own name
        assert (seen.topic, seen.payload) == (
            f"devices/{setup.device.name}/telemetry",
            b'{"java": true}',
        )
    finally:
        backend.close()


@pytest.mark.slow
def test_java_client_with_an_unprovisioned_keystore_is_not_authorised(setup: JavaSetup) -> None:
    """The broker refuses with CONNACK 5 and closes. fusesource's client then reports either
    that CONNACK or, in about a third of the runs, the close that follows it ("Peer
    disconnected"): it does the same against Eclipse Mosquitto 2.0.11 refusing a client, so
    it is the client library's race, not ours. The broker's auth log is the proof."""
    before = setup.broker.running.auth_log.counts["unknown_key"]
    code, output = run_java(setup, setup.stranger.jks, "java-2", "never delivered")
    assert code == 2, output
    assert output.startswith("connect failed: "), output
    assert (
        "CONNECTION_REFUSED_NOT_AUTHORIZED" in output
        or "java.io.EOFException: Peer disconnected" in output
    ), output
    assert setup.broker.running.auth_log.counts["unknown_key"] == before + 1
