"""MQTT 5 with command-line clients other people use: ``mosquitto_pub``/``mosquitto_sub -V mqttv5``
(properties with ``-D``, printed with ``-F``) and MQTT.js 5 with ``protocolVersion: 5``, over
mutual TLS with the keys the shipped scripts make (as ``test_interop_cli_clients``)."""

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.harness import BrokerThread
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

V5 = ["-V", "mqttv5"]


@dataclass(frozen=True)
class Fleet:
    keys: Keys
    broker: BrokerThread
    device: DeviceKeys  # provisioned
    stranger: DeviceKeys  # made by the same script, never provisioned


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    keys = make_keys(tmp_path_factory.mktemp("cli5-clients"))
    device, stranger = (keys.device(name, prefix=name) for name in ("five-device", "stranger5"))
    with running_broker(keys, tmp_path_factory.mktemp("cli5-broker") / "data") as broker:
        provision_pem(broker, device)
        yield Fleet(keys, broker, device, stranger)


def tls_options(fleet: Fleet, device: DeviceKeys, ca: str = "--cafile") -> list[str]:
    return [
        "-h", "localhost", "-p", str(fleet.broker.port), ca, str(fleet.keys.server_cert),
        "--cert", str(device.nopass), "--key", str(device.nopass),
    ]  # fmt: skip


def test_mosquitto_5_properties_and_identifiers(fleet: Fleet) -> None:
    """User properties in order, content type, message expiry (what is left of it) and the
    subscription identifier reach ``mosquitto_sub -V mqttv5``; ``mosquitto_pub`` sets a topic
    alias (5.0 §3.3.2.3.4). (libmosquitto 2.0 refuses a PUBLISH whose topic is only an alias,
    so this subscriber allows none: MQTT.js shows the broker's aliases below.)"""
    pub = require_tool("mosquitto_pub", "mosquitto-clients")
    sub = require_tool("mosquitto_sub", "mosquitto-clients")
    stdbuf = require_tool("stdbuf", "coreutils")
    options = tls_options(fleet, fleet.device)
    topic = "v1/devices/me/telemetry"
    subscriber = Process([
        stdbuf, "-oL", sub, "-d", *V5, *options, "-q", "1", "-t", topic, "-C", "2", "-W", "10",
        "-i", "five-sub", "-D", "subscribe", "subscription-identifier", "42",
        "-F", "%t|%p|%P|%C|%E|%S",
    ])  # fmt: skip
    with subscriber:
        assert subscriber.wait_for("Subscribed (mid:").endswith(": 1")
        for payload in ("first", "second"):
            code, output = run(
                [pub, "-d", *V5, *options, "-q", "1", "-t", topic, "-m", payload,
                 "-i", f"five-pub-{payload}",
                 "-D", "publish", "user-property", "b", "2",
                 "-D", "publish", "user-property", "a", "1",
                 "-D", "publish", "content-type", "text/plain",
                 "-D", "publish", "message-expiry-interval", "3600",
                 "-D", "publish", "topic-alias", "1"],
                timeout=15,
            )  # fmt: skip
            assert code == 0, output
            assert "received CONNACK (0)" in output
            assert "received PUBACK" in output
        first = subscriber.wait_for(lambda line: line.startswith(f"{topic}|first"))
        second = subscriber.wait_for(lambda line: line.startswith(f"{topic}|second"))
        assert subscriber.finish(15) == 0, subscriber.text
    for line in (first, second):
        _, _, users, content_type, expiry, identifier = line.split("|")
        assert users == "b:2 a:1"
        assert content_type == "text/plain"
        assert 3590 <= int(expiry) <= 3600
        assert identifier == "42"


def test_mosquitto_5_refused_reads_the_reason_code(fleet: Fleet) -> None:
    """A refused 5.0 client gets 0x87 not authorised (5.0 §3.2.2.2), not 3.1.1's 5."""
    pub = require_tool("mosquitto_pub", "mosquitto-clients")
    code, output = run(
        [pub, "-d", *V5, *tls_options(fleet, fleet.stranger), "-t", "t", "-m", "never"],
        timeout=15,
    )
    assert code != 0, output
    assert "received CONNACK (135)" in output
    assert "Connection error: Not authorized" in output


# One MQTT.js 5 client that subscribes with an identifier, publishes a message with
# properties to itself and prints what came back; or, refused, the CONNACK's reason.
MQTTJS_ROUND_TRIP = """
const mqtt = require(process.env.MQTTJS_MODULE);
const fs = require("fs");
const [host, port, ca, cert] = process.argv.slice(1);
setTimeout(() => { console.log("timeout"); process.exit(3); }, 10000).unref();
const client = mqtt.connect({
  protocol: "mqtts", host, port: Number(port), protocolVersion: 5, reconnectPeriod: 0,
  ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(cert),
  properties: { sessionExpiryInterval: 0, topicAliasMaximum: 3 },
});
client.on("packetreceive", (packet) => {
  if (packet.cmd === "connack") {
    console.log("connack " + packet.reasonCode + " " + JSON.stringify(packet.properties || {}));
  }
});
client.on("connect", () => {
  const topic = "v1/devices/me/rpc/request/1";
  client.subscribe(topic, { qos: 1, properties: { subscriptionIdentifier: 7 } }, (err) => {
    if (err) { console.log("error " + err.message); process.exit(1); }
    for (const payload of ["hello", "again"]) {
      client.publish(topic, payload, { qos: 1, properties: {
        userProperties: { k: "v", d: ["1", "1"] }, contentType: "text/plain",
        payloadFormatIndicator: true, messageExpiryInterval: 3600,
        correlationData: Buffer.from("c1"), responseTopic: "v1/devices/me/rpc/response/1",
      } });
    }
  });
});
let received = 0;
client.on("packetreceive", (packet) => {
  if (packet.cmd === "publish") {
    const alias = packet.properties && packet.properties.topicAlias;
    console.log("wire " + JSON.stringify(packet.topic) + " alias " + alias);
  }
});
client.on("message", (t, payload, packet) => {
  const p = packet.properties || {};
  console.log("message " + t + " " + payload.toString() + " " + JSON.stringify({
    user: p.userProperties, type: p.contentType, id: p.subscriptionIdentifier,
    correlation: p.correlationData && p.correlationData.toString(), response: p.responseTopic,
    format: p.payloadFormatIndicator, expiry: p.messageExpiryInterval,
  }));
  if (++received === 2) client.end(false, () => process.exit(0));
});
client.on("error", (err) => { console.log("error " + err.message); process.exit(1); });
"""


def mqttjs(fleet: Fleet, device: DeviceKeys) -> Process:
    require_mqttjs()
    node = require_tool("node", "nodejs")
    files = [str(fleet.keys.server_cert), str(device.nopass)]
    return Process(
        [node, "-e", MQTTJS_ROUND_TRIP, "localhost", str(fleet.broker.port), *files],
        env={**os.environ, "MQTTJS_MODULE": str(MQTTJS_MODULE)},
    )


def test_mqttjs_5_round_trip_with_properties(fleet: Fleet) -> None:
    with mqttjs(fleet, fleet.device) as client:
        connack = client.wait_for(lambda line: line.startswith(("connack", "error")))
        assert connack.startswith("connack 0 "), connack
        assert '"topicAliasMaximum":10' in connack  # the server's limits, announced
        ended = ("error", "timeout")
        wires, lines = [], []
        for payload in ("hello", "again"):
            wires.append(client.wait_for(lambda line: line.startswith(("wire", *ended))))
            lines.append(client.wait_for(lambda line: line.startswith(("message", *ended))))
            line = lines[-1]
            assert line.startswith(f"message v1/devices/me/rpc/request/1 {payload} "), line
            # 5.0 §3.3.2.3.7: a repeated user property stays repeated (MQTT.js: a list).
            assert '"user":{"k":"v","d":["1","1"]}' in line
            assert '"format":true' in line
            expiry = int(line.split('"expiry":')[1].split("}")[0])
            assert 3590 <= expiry <= 3600  # 5.0 §3.3.2.3.3 [MQTT-3.3.2-6]: what is left
            assert '"type":"text/plain"' in line
            assert '"id":7' in line
            assert '"correlation":"c1"' in line
            assert '"response":"v1/devices/me/rpc/response/1"' in line
        assert client.finish(15) == 0, client.text
    # 5.0 §3.3.2.3.4: the broker gave the topic an alias, then sent the alias alone.
    assert wires == ['wire "v1/devices/me/rpc/request/1" alias 1', 'wire "" alias 1']


def test_mqttjs_5_refused_reads_the_reason_code_and_string(fleet: Fleet) -> None:
    with mqttjs(fleet, fleet.stranger) as client:
        connack = client.wait_for(lambda line: line.startswith(("connack", "timeout")))
        assert connack.startswith("connack 135 "), connack
        assert "unknown certificate key" in connack  # the Reason String
        client.finish(15)
