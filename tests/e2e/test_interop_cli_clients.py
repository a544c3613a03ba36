"""Command-line MQTT clients other people use, against a real broker: mosquitto_pub/_sub
(Debian's mosquitto-clients, libmosquitto + OpenSSL) and MQTT.js 5 (npm ``mqtt``, Node's TLS).

Keys come from the shipped scripts; every client gets the files the docs tell it to use:
``--cafile mqttserver.pub.pem`` (``--ca`` for MQTT.js), and the device's
``mqttclient.nopass.pem`` as both ``--cert`` and ``--key``. Clients connect to ``localhost``,
so the broker certificate's host name is checked as in production.

Neither subscriber CLI says when its subscription is in place: ``mosquitto_sub -d`` prints
the SUBACK it got, and MQTT.js's subscriber is a short inline script printing one line when
its SUBACK arrives. Tests publish only after that line.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.harness import BrokerThread, mqtt_client
from tests.e2e.interop import (
    MQTTJS_MODULE,
    DeviceKeys,
    Keys,
    Process,
    make_keys,
    provision_pem,
    require_mqttjs,
    require_tool,
    run,
    running_broker,
)

BACKEND = ("backend", "backend-password")
TELEMETRY = ["-t", "v1/devices/me/telemetry", "-m"]  # then the payload
V311 = ["--protocolVersion", "4"]  # MQTT.js 5 defaults to 4 too; say it: the broker speaks 3.1.1


@dataclass(frozen=True)
class Fleet:
    keys: Keys
    broker: BrokerThread
    mosquitto: DeviceKeys  # provisioned
    mqttjs: DeviceKeys  # provisioned
    stranger: DeviceKeys  # made by the same script, never provisioned


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    keys = make_keys(tmp_path_factory.mktemp("cli-clients"))
    devices = [
        keys.device(name, prefix=name) for name in ("mosquitto-device", "mqttjs-device", "stranger")
    ]
    with running_broker(keys, tmp_path_factory.mktemp("cli-broker") / "data") as broker:
        provision_pem(broker, devices[0])
        provision_pem(broker, devices[1])
        broker.application(BACKEND[0], *BACKEND)
        yield Fleet(keys, broker, *devices)


def tls_options(fleet: Fleet, device: DeviceKeys, ca: str = "--cafile") -> list[str]:
    return [
        "-h",
        "localhost",
        "-p",
        str(fleet.broker.port),
        ca,
        str(fleet.keys.server_cert),
        "--cert",
        str(device.nopass),
        "--key",
        str(device.nopass),
    ]


# --- mosquitto -------------------------------------------------------------------------------


def mosquitto_sub(fleet: Fleet, device: DeviceKeys, topic: str, *extra: str) -> Process:
    """``mosquitto_sub`` for one message (``-C 1``), at most 10 s (``-W 10``), with debug
    output (``-d``), which shows its SUBACK: the test waits for that line."""
    sub = require_tool("mosquitto_sub", "mosquitto-clients")
    # Its stdout is a pipe here, so stdio would hold the SUBACK line back: line-buffer it.
    stdbuf = require_tool("stdbuf", "coreutils")
    options = [*tls_options(fleet, device), "-q", "1", "-t", topic, "-C", "1", "-W", "10"]
    return Process([stdbuf, "-oL", sub, "-d", "-v", *extra, *options])


def test_mosquitto_sub_receives_what_mosquitto_pub_sends_for_the_same_device(
    fleet: Fleet,
) -> None:
    pub = require_tool("mosquitto_pub", "mosquitto-clients")
    device = fleet.mosquitto
    with mosquitto_sub(fleet, device, "v1/devices/me/telemetry") as subscriber:
        assert subscriber.wait_for("Subscribed (mid:").endswith(": 1")  # granted QoS 1
        code, output = run(
            [pub, "-d", *tls_options(fleet, device), "-q", "1", *TELEMETRY, '{"temperature": 21}'],
            timeout=15,
        )
        assert code == 0, output
        assert "received CONNACK (0)" in output
        assert "received PUBACK" in output
        subscriber.wait_for('v1/devices/me/telemetry {"temperature": 21}')
        assert subscriber.finish(15) == 0, subscriber.text


def test_mqtt_3_1_clients_publish_and_subscribe(fleet: Fleet) -> None:
    """Old firmware speaks MQTT 3.1 ("MQIsdp", level 3): ``-V mqttv31`` on both sides."""
    pub = require_tool("mosquitto_pub", "mosquitto-clients")
    device = fleet.mosquitto
    topic = "v1/devices/me/rpc/request/1"
    version = ["-V", "mqttv31", "-i", "old-firmware-sub"]
    with mosquitto_sub(fleet, device, "v1/devices/me/rpc/request/+", *version) as subscriber:
        assert subscriber.wait_for("Subscribed (mid:").endswith(": 1")
        code, output = run(
            [pub, "-d", "-V", "mqttv31", "-i", "old-firmware-pub", *tls_options(fleet, device),
             "-q", "1", "-t", topic, "-m", "from 3.1"],
            timeout=15,
        )  # fmt: skip
        assert code == 0, output
        assert "received CONNACK (0)" in output
        assert "received PUBACK" in output
        subscriber.wait_for(f"{topic} from 3.1")
        assert subscriber.finish(15) == 0, subscriber.text


def test_mosquitto_device_receives_attributes_from_a_backend_application(fleet: Fleet) -> None:
    backend = mqtt_client(
        fleet.broker.port,
        fleet.broker.server_cert,
        None,
        username=BACKEND[0],
        password=BACKEND[1],
    )
    try:
        assert backend.wait_connack() == 0
        with mosquitto_sub(fleet, fleet.mosquitto, "v1/devices/me/attributes") as subscriber:
            assert subscriber.wait_for("Subscribed (mid:").endswith(": 1")
            backend.publish(f"devices/{fleet.mosquitto.name}/attributes", b'{"interval": 30}')
            subscriber.wait_for('v1/devices/me/attributes {"interval": 30}')
            assert subscriber.finish(15) == 0, subscriber.text
    finally:
        backend.close()


@pytest.mark.parametrize("tool", ["mosquitto_pub", "mosquitto_sub"])
def test_mosquitto_with_an_unprovisioned_certificate_is_not_authorised(
    fleet: Fleet, tool: str
) -> None:
    program = require_tool(tool, "mosquitto-clients")
    extra = ["-m", "never delivered"] if tool == "mosquitto_pub" else ["-C", "1", "-W", "10"]
    before = fleet.broker.running.auth_log.counts["unknown_key"]
    code, output = run(
        [program, *tls_options(fleet, fleet.stranger), *TELEMETRY[:2], *extra],
        timeout=15,
    )
    assert code != 0, output
    assert "Connection Refused: not authorised." in output
    assert fleet.broker.running.auth_log.counts["unknown_key"] == before + 1


# --- MQTT.js ---------------------------------------------------------------------------------

# A subscriber that says when it is subscribed: `mqtt sub` prints nothing until a message
# comes. Same library and connect options as the CLI; exits 0 after one message, 1 on any
# error, 3 if nothing came within 10 s.
MQTTJS_SUBSCRIBER = """
const mqtt = require(process.env.MQTTJS_MODULE);
const fs = require("fs");
const [host, port, ca, cert, topic] = process.argv.slice(1);
setTimeout(() => { console.log("timeout"); process.exit(3); }, 10000).unref();
const client = mqtt.connect({
  protocol: "mqtts", host, port: Number(port), protocolVersion: 4, reconnectPeriod: 0,
  ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(cert),
});
client.on("connect", () => client.subscribe(topic, { qos: 1 }, (err, granted) => {
  if (err) { console.log("error " + err.message); process.exit(1); }
  console.log("subscribed " + granted.map((g) => g.qos).join(","));
}));
client.on("message", (t, payload) => {
  console.log("message " + t + " " + payload.toString());
  client.end(false, () => process.exit(0));
});
client.on("error", (err) => { console.log("error " + err.message); process.exit(1); });
"""


def mqttjs_subscriber(fleet: Fleet, device: DeviceKeys, topic: str) -> Process:
    require_mqttjs()
    node = require_tool("node", "nodejs")
    files = [str(fleet.keys.server_cert), str(device.nopass)]
    return Process(
        [node, "-e", MQTTJS_SUBSCRIBER, "localhost", str(fleet.broker.port), *files, topic],
        env={**os.environ, "MQTTJS_MODULE": str(MQTTJS_MODULE)},
    )


def test_mqttjs_round_trip_on_me_topics(fleet: Fleet) -> None:
    cli = require_mqttjs()
    device = fleet.mqttjs
    payload = [*TELEMETRY, '{"humidity": 40}']
    with mqttjs_subscriber(fleet, device, "v1/devices/me/telemetry") as subscriber:
        assert subscriber.wait_for(lambda line: line.startswith(("subscribed", "error"))) == (
            "subscribed 1"
        )
        code, output = run(
            [cli, "pub", *tls_options(fleet, device, ca="--ca"), *V311, "-q", "1", *payload],
            timeout=15,
        )
        assert code == 0, output
        assert "Error" not in output, output
        line = subscriber.wait_for(lambda line: not line.startswith("subscribed"))
        assert line == 'message v1/devices/me/telemetry {"humidity": 40}'
        assert subscriber.finish(15) == 0, subscriber.text


@pytest.mark.parametrize("command", ["pub", "sub"])
def test_mqttjs_with_an_unprovisioned_certificate_is_not_authorised(
    fleet: Fleet, command: str
) -> None:
    """MQTT.js's CLI prints the refusal and exits 0 all the same: judge its output."""
    cli = require_mqttjs()
    extra = [*TELEMETRY, "never delivered"] if command == "pub" else TELEMETRY[:2]
    before = fleet.broker.running.auth_log.counts["unknown_key"]
    _code, output = run(
        [cli, command, *tls_options(fleet, fleet.stranger, ca="--ca"), *V311, *extra],
        timeout=15,
    )
    assert "Connection refused: Not authorized" in output
    assert "code: 5" in output
    assert fleet.broker.running.auth_log.counts["unknown_key"] == before + 1
