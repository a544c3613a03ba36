"""MQTT 5 against MQTT 3.1.1 on the same broker: broker CPU per delivered message.

    .venv/bin/python -m bench.mqtt5_bench                 # 20,000 messages a row, ~2 minutes
    .venv/bin/python -m bench.mqtt5_bench --messages 2000 # smoke run

One real ``nanoiot serve`` process (``bench.broker_process``), one device connected twice
over mutual TLS (EC P-256): a publisher and a subscriber of ``v1/devices/me/telemetry``,
1 -> 1, 64-byte payloads. Rows: QoS 0 and QoS 1, each as MQTT 3.1.1, as MQTT 5 with four
user properties on every message, and as MQTT 5 with those properties and topic aliases both
ways (the publisher sets alias 1 once and then sends the alias alone; the subscriber allows
10, so the broker sends the alias alone too), and as MQTT 5 with the four user properties
but one of them changing with every message (a sequence number: a device rarely sends the
same list twice, and the broker then checks each list anew). QoS 1 keeps at most ``WINDOW`` messages
unacknowledged; QoS 0 waits for each batch to arrive before the next, so nothing is dropped.
Broker CPU is its /proc user + system time over the row, divided by the messages delivered;
rows run in interleaved rounds (the median is reported), so drift hits all alike.

Goal (the MQTT 5 issue): the MQTT 5 rows within 1.2x of the same run's 3.1.1 rows.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._report import machine_lines, process_cpu_seconds
from bench.broker_process import running_broker
from bench.compare_setup import make_pki, prepare_nanoiot_store
from bench.mqtt_load import remaining_length
from bench.mqtt_wire import PAYLOAD, MqttClient, client_context

TOPIC = b"v1/devices/me/telemetry"
WINDOW = 100  # QoS 1 messages in flight; also the QoS 0 batch
USER_PROPERTIES = b"".join(
    b"\x26" + len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v
    for k, v in ((b"site", b"plant-7"), (b"line", b"3"), (b"unit", b"celsius"), (b"fw", b"2.1"))
)


@dataclass(frozen=True)
class Row:
    name: str
    level: int  # 4 or 5
    qos: int
    aliases: bool = False
    changing: bool = False  # the last user property's value differs from one message to the next


ROWS = (
    Row("3.1.1 QoS 0", 4, 0), Row("5 QoS 0, 4 user properties", 5, 0),
    Row("5 QoS 0, 4 user properties, topic aliases", 5, 0, aliases=True),
    Row("5 QoS 0, 4 user properties, one changing", 5, 0, changing=True),
    Row("3.1.1 QoS 1", 4, 1), Row("5 QoS 1, 4 user properties", 5, 1),
    Row("5 QoS 1, 4 user properties, topic aliases", 5, 1, aliases=True),
    Row("5 QoS 1, 4 user properties, one changing", 5, 1, changing=True),
)  # fmt: skip


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, level: int, alias_maximum: int = 0) -> bytes:
    """CONNECT, clean session/start, no keep-alive; for MQTT 5 the Topic Alias Maximum."""
    head = _field(b"MQTT") + bytes((level, 0x02)) + b"\x00\x00"
    if level == 5:
        props = b"\x22" + alias_maximum.to_bytes(2, "big") if alias_maximum else b""
        head += remaining_length(len(props)) + props
    body = head + _field(client_id.encode())
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet(level: int, qos: int) -> bytes:
    body = b"\x00\x01" + (b"\x00" if level == 5 else b"") + _field(TOPIC) + bytes((qos,))
    return b"\x82" + remaining_length(len(body)) + body


def publish_packet(row: Row, packet_id: int, payload: bytes, first: bool) -> bytes:
    topic = TOPIC if first or not row.aliases else b""
    head = _field(topic) + (packet_id.to_bytes(2, "big") if row.qos else b"")
    if row.level == 5:
        props = USER_PROPERTIES + (b"\x23\x00\x01" if row.aliases else b"")
        if row.changing:  # "fw" = "2.1" becomes a three-digit sequence number
            props = USER_PROPERTIES[:-3] + b"%03d" % (packet_id % 1000)
        head += remaining_length(len(props)) + props
    body = head + payload
    return bytes((0x30 | row.qos << 1,)) + remaining_length(len(body)) + body


async def _client(port: int, pem: Path, server_cert: Path, connect: bytes) -> MqttClient:
    loop = asyncio.get_running_loop()
    context = client_context(str(server_cert), str(pem))
    _, client = await loop.create_connection(
        MqttClient, "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    client.write(connect)
    code = await asyncio.wait_for(client.connack, 10)
    if code != 0:
        raise RuntimeError(f"CONNACK {code}")
    return client


async def measure(broker_port: int, cpu: "CpuReader", pem: Path, server_cert: Path, row: Row,
                  messages: int) -> float:  # fmt: skip
    """Broker CPU milliseconds per delivered message for one row."""
    sub = await _client(broker_port, pem, server_cert, connect_packet("sub", row.level, 10))
    pub = await _client(broker_port, pem, server_cert, connect_packet("pub", row.level))
    received = 0
    progress = asyncio.Event()

    def arrived(_topic: bytes, _payload: bytes) -> None:
        nonlocal received
        received += 1
        progress.set()

    sub.on_publish = arrived
    sub.write(subscribe_packet(row.level, row.qos))
    await asyncio.wait_for(sub.suback, 10)
    payload = PAYLOAD.pack(0, 0, 0)
    started = cpu.seconds()
    sent = 0
    while sent < messages:
        batch = min(WINDOW, messages - sent)
        pub.write(b"".join(
            publish_packet(row, pub.packet_id(), payload, first=sent + n == 0)
            for n in range(batch)
        ))  # fmt: skip
        sent += batch
        while received < sent:
            progress.clear()
            await asyncio.wait_for(progress.wait(), 10)
    used = cpu.seconds() - started
    for client in (pub, sub):
        client.write(b"\xe0\x00")
        if client.transport is not None:
            client.transport.close()
    return used * 1000 / received


class CpuReader:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def seconds(self) -> float:
        return process_cpu_seconds(self.pid)


async def run(messages: int, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {row.name: [] for row in ROWS}
    with tempfile.TemporaryDirectory(prefix="nanoiot-mqtt5-bench-") as folder:
        root = Path(folder)
        _, devices = make_pki(root / "pki", {"ec": 1})
        data_dir = root / "data"
        await prepare_nanoiot_store(data_dir, 0, devices["ec"])
        async with running_broker(data_dir) as broker:
            cpu = CpuReader(broker.pid)
            pem = devices["ec"][0].pem_file
            for row in ROWS:  # warm-up
                await measure(broker.port, cpu, pem, broker.server_cert, row, WINDOW * 5)
            for number in range(rounds):
                for row in ROWS:
                    value = await measure(broker.port, cpu, pem, broker.server_cert, row, messages)
                    results[row.name].append(value)
                print(f"round {number + 1} of {rounds} done", flush=True)
    return results


def report(results: dict[str, list[float]], messages: int, rounds: int) -> str:
    lines = [
        f"# MQTT 5 vs 3.1.1, broker CPU per message ({time.strftime('%Y-%m-%d')})", "",
        f"{messages:,} messages a row, {rounds} interleaved rounds, median; 1 -> 1 over "
        "mutual TLS (EC P-256), 64-byte payloads, `python -m bench.mqtt5_bench`.", "",
        "| row | broker CPU ms / message | vs 3.1.1 |", "|---|---:|---:|",
    ]  # fmt: skip
    for row in ROWS:
        value = statistics.median(results[row.name])
        base = statistics.median(results[f"3.1.1 QoS {row.qos}"])
        ratio = f"{value / base:.2f}x" if base else "n/a"  # a short run can measure 0 ticks
        lines.append(f"| {row.name} | {value:.4f} | {ratio} |")
    lines += ["", "Machine:", *machine_lines()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages a row and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.messages, args.rounds))
    table = report(results, args.messages, args.rounds)
    print(table)
    if args.output is not None:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
