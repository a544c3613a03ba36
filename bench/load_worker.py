"""One load-generator process: ``python -m bench.load_worker SPEC.json``.

Modes (``spec["mode"]``), each printing one JSON result line at the end (with this process's
own CPU seconds, so the table can show whether the generator was the bottleneck):

- ``connect``: ``count`` mTLS connects (CONNECT, CONNACK 0, DISCONNECT), ``concurrency`` in
  flight, devices taken in turn, a new TLS session every time (no resumption); client id
  ``<prefix><n>``, never used twice.
- ``pubsub``: ``subscribers`` subscribers on ``bench/t`` and ``publishers`` publishers, client
  ids ``<prefix>s<n>`` and ``<prefix>p<n>``. Once all are connected it announces
  ``{"ready": connections}`` and waits for a command line (the benchmark checks the broker's
  count of live connections meanwhile). With ``rate`` 0 it publishes ``count`` messages as
  fast as delivery allows: at most ``window`` messages sent and not yet delivered to every
  subscriber, so no broker queue grows without bound and a loss is a loss. With a ``rate`` it
  publishes that many messages a second for ``seconds``, one PUBLISH per write, and records
  every delivery's publish-to-delivery latency (send time in the payload). Subscribers
  connect to ``subscriber_port`` when given (another node of a cluster), else to ``port``;
  the topic is ``topic`` when given, else ``bench/t``.

Uses uvloop when it is installed: the generator must not be the slower side.
"""

import asyncio
import time
from typing import Any

from bench._report import CLK_TCK, process_cpu_seconds
from bench.mqtt_wire import (
    DISCONNECT,
    PAYLOAD,
    MqttClient,
    client_context,
    connect,
    publish_packet,
    subscribe_packet,
)
from bench.worker_io import Tally, announce, next_command, now_ns, own_cpu, run_worker

TOPIC = b"bench/t"
BATCH = 64  # PUBLISH packets per write, per publisher, when not paced


async def settled_cpu(pid: int, quiet_s: float = 0.3, limit_s: float = 5.0) -> float:
    """The broker's CPU seconds once it is idle (at most ``limit_s`` later): NanoIoT writes
    auth events after CONNACK, and that work belongs to the connects."""
    last = process_cpu_seconds(pid)
    for _ in range(int(limit_s / quiet_s)):
        await asyncio.sleep(quiet_s)
        now = process_cpu_seconds(pid)
        if now - last <= 1.001 / CLK_TCK:
            return now
        last = now
    return last


# --- connect ------------------------------------------------------------------------------


async def run_connects(spec: dict[str, Any]) -> dict[str, Any]:
    contexts = [(name, client_context(spec["ca"], pem)) for name, pem in spec["devices"]]
    jobs = iter(range(spec["count"]))
    result: dict[str, Any] = {"connects": 0, "failures": 0, "first_error": ""}
    started = time.perf_counter()

    async def worker() -> None:
        for number in jobs:
            name, context = contexts[number % len(contexts)]
            client_id = f"{spec['prefix']}{number}"
            try:
                async with asyncio.timeout(30):
                    client = await connect(spec["port"], context, client_id)
                    client.write(DISCONNECT)
                    assert client.transport is not None
                    client.transport.close()
                    await client.closed
            except (OSError, RuntimeError, TimeoutError) as exc:
                result["failures"] += 1
                result["first_error"] = result["first_error"] or f"{name}: {exc!r}"
            result["connects"] += 1

    await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    result["wall_s"] = time.perf_counter() - started
    return result


# --- publish / subscribe ------------------------------------------------------------------


async def run_pubsub(spec: dict[str, Any]) -> dict[str, Any]:
    qos, port, ca, prefix = spec["qos"], spec["port"], spec["ca"], spec["prefix"]
    topic = spec.get("topic", TOPIC.decode()).encode()
    devices = spec["devices"]  # taken in turn: a device may hold several connections
    tally = Tally(keep_latency=bool(spec.get("rate")))
    subscribers = []
    for number in range(spec.get("subscribers", 1)):
        _, pem = devices[number % len(devices)]
        subscriber = tally.subscriber()
        client = await connect(spec.get("subscriber_port", port), client_context(ca, pem),
                               f"{prefix}s{number}", subscriber.on_publish)  # fmt: skip
        client.write(subscribe_packet(topic.decode(), qos))
        if await client.suback != qos:
            raise RuntimeError("subscription refused or downgraded")
        subscribers.append(client)
    publishers = []
    for number in range(spec["publishers"]):
        _, pem = devices[(len(subscribers) + number) % len(devices)]
        publishers.append(await connect(port, client_context(ca, pem), f"{prefix}p{number}"))
    announce({"ready": len(subscribers) + len(publishers)})
    await next_command()  # "go": the benchmark has checked the broker's count
    seqs = [0] * len(publishers)
    fan_out = len(subscribers)
    broker_cpu = await settled_cpu(spec["broker_pid"], spec.get("quiet_s", 0.3))
    started, own = time.perf_counter(), own_cpu()
    if spec.get("rate"):
        sent = await _paced(publishers, seqs, qos, spec["rate"], spec["seconds"], topic)
    else:
        sent = await _windowed(publishers, seqs, qos, spec["count"], spec["window"], tally,
                               fan_out, topic)  # fmt: skip
    publish_wall = time.perf_counter() - started
    await tally.settle(sent * fan_out, spec.get("drain_s", 10.0))
    wall, own = time.perf_counter() - started, own_cpu() - own
    broker_cpu = await settled_cpu(spec["broker_pid"], spec.get("quiet_s", 0.3)) - broker_cpu
    for client in [*subscribers, *publishers]:
        client.write(DISCONNECT)
        assert client.transport is not None
        client.transport.close()
    return {
        "sent": sent * fan_out,  # deliveries due
        "received": tally.received,
        "out_of_order": tally.out_of_order,
        "pubacks": sum(p.pubacks for p in publishers),
        "publish_wall_s": publish_wall,
        "wall_s": wall,
        "broker_cpu_s": broker_cpu,
        "phase_cpu_s": own,  # this process, publishing and receiving only
        "latency_ms": tally.percentiles(),
    }


def _batch(
    publisher: int, seqs: list[int], qos: int, client: MqttClient, n: int, topic: bytes = TOPIC
) -> bytes:
    now = now_ns()
    seq = seqs[publisher]
    packets = [
        publish_packet(topic, PAYLOAD.pack(publisher, seq + i, now), qos, client.packet_id())
        for i in range(n)
    ]
    seqs[publisher] = seq + n
    return b"".join(packets)


async def _windowed(
    publishers: list[MqttClient],
    seqs: list[int],
    qos: int,
    count: int,
    window: int,
    tally: Tally,
    fan_out: int,
    topic: bytes = TOPIC,
) -> int:
    """``count`` messages, at most ``window`` of them not yet delivered to every subscriber."""
    sent, turn = 0, 0
    while sent < count:
        room = min(window - (sent - tally.received // fan_out), count - sent)
        if room <= 0:
            tally.progress.clear()
            await tally.progress.wait()
            continue
        while room > 0:
            n = min(BATCH, room)
            index = turn % len(publishers)
            publishers[index].write(_batch(index, seqs, qos, publishers[index], n, topic))
            sent += n
            room -= n
            turn += 1
        await asyncio.sleep(0)  # let the sockets and the subscribers run
    return sent


async def _paced(
    publishers: list[MqttClient],
    seqs: list[int],
    qos: int,
    rate: float,
    seconds: float,
    topic: bytes = TOPIC,
) -> int:
    """``rate`` messages a second, spread over the publishers, one PUBLISH per write, every
    millisecond or so (the event loop's timer resolution: at 2,000 msg/s two writes leave in
    the same loop iteration)."""
    started = time.perf_counter()
    sent, turn = 0, 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            index = turn % len(publishers)
            publishers[index].write(_batch(index, seqs, qos, publishers[index], 1, topic))
            turn += 1
        sent += max(due, 0)
        await asyncio.sleep(0.001)
    return sent


MODES = {"connect": run_connects, "pubsub": run_pubsub}


if __name__ == "__main__":
    run_worker(lambda spec: MODES[spec["mode"]])
