"""One load-generator process: ``python -m bench.load_worker SPEC.json``.

Modes (``spec["mode"]``), each printing one JSON result line (with this process's own CPU
seconds, so the table can show whether the generator was the bottleneck):

- ``connect``: ``count`` mTLS connects (CONNECT, CONNACK 0, DISCONNECT), ``concurrency`` in
  flight, devices taken in turn, a new TLS session every time (no resumption).
- ``pubsub``: one subscriber on ``bench/t`` and ``publishers`` publishers. With ``rate`` 0 it
  publishes ``count`` messages as fast as delivery allows: at most ``window`` messages sent
  and not yet delivered, so no broker queue grows without bound and a loss is a loss. With a
  ``rate`` it publishes that many messages a second for ``seconds`` and records every
  message's publish-to-delivery latency (send time in the payload; one monotonic clock).
- ``idle``: opens ``count`` connections, prints ``ready``, holds them until stdin closes.

Uses uvloop when it is installed: the generator must not be the slower side.
"""

import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
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

TOPIC = b"bench/t"
BATCH = 64  # PUBLISH packets per write, per publisher


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


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- connect ------------------------------------------------------------------------------


async def run_connects(spec: dict[str, Any]) -> dict[str, Any]:
    contexts = [(name, client_context(spec["ca"], pem)) for name, pem in spec["devices"]]
    jobs = iter(range(spec["count"]))
    result: dict[str, Any] = {"connects": 0, "failures": 0, "first_error": ""}
    started = time.perf_counter()

    async def worker() -> None:
        for number in jobs:
            name, context = contexts[number % len(contexts)]
            try:
                async with asyncio.timeout(30):
                    client = await connect(spec["port"], context, name)
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


@dataclass
class Delivery:
    expected_next: list[int]
    received: int = 0
    out_of_order: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    keep_latency: bool = False
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def on_publish(self, topic: bytes, payload: bytes) -> None:
        publisher, seq, sent_ns = PAYLOAD.unpack(payload)
        if self.keep_latency:
            self.latencies_ns.append(time.perf_counter_ns() - sent_ns)
        if seq != self.expected_next[publisher]:
            self.out_of_order += 1  # MQTT 3.1.1 §4.6: one publisher's order must hold
        self.expected_next[publisher] = seq + 1
        self.received += 1
        self.progress.set()


async def run_pubsub(spec: dict[str, Any]) -> dict[str, Any]:
    qos, port, ca = spec["qos"], spec["port"], spec["ca"]
    devices = spec["devices"]
    delivery = Delivery([0] * spec["publishers"], keep_latency=bool(spec.get("rate")))
    sub_name, sub_pem = devices[0]
    subscriber = await connect(port, client_context(ca, sub_pem), sub_name, delivery.on_publish)
    subscriber.write(subscribe_packet(TOPIC.decode(), qos))
    if await subscriber.suback != qos:
        raise RuntimeError("subscription refused or downgraded")
    publishers = [
        await connect(port, client_context(ca, pem), name)
        for name, pem in devices[1 : 1 + spec["publishers"]]
    ]
    seqs = [0] * len(publishers)
    broker_cpu = await settled_cpu(spec["broker_pid"])  # the connects are not measured
    started, own = time.perf_counter(), own_cpu()
    if spec.get("rate"):
        sent = await _paced(publishers, seqs, qos, spec["rate"], spec["seconds"])
    else:
        sent = await _windowed(publishers, seqs, qos, spec["count"], spec["window"], delivery)
    publish_wall = time.perf_counter() - started
    await _settle(delivery, sent, spec.get("drain_s", 10.0))
    wall, own = time.perf_counter() - started, own_cpu() - own
    broker_cpu = await settled_cpu(spec["broker_pid"]) - broker_cpu
    for client in [subscriber, *publishers]:
        client.write(DISCONNECT)
        assert client.transport is not None
        client.transport.close()
    latencies = sorted(delivery.latencies_ns)
    return {
        "sent": sent,
        "received": delivery.received,
        "out_of_order": delivery.out_of_order,
        "pubacks": sum(p.pubacks for p in publishers),
        "publish_wall_s": publish_wall,
        "wall_s": wall,
        "broker_cpu_s": broker_cpu,
        "phase_cpu_s": own,  # this process, publishing and receiving only
        "latency_ms": _percentiles(latencies),
    }


def _batch(publisher: int, seqs: list[int], qos: int, client: MqttClient, n: int) -> bytes:
    now = time.perf_counter_ns()
    seq = seqs[publisher]
    packets = [
        publish_packet(TOPIC, PAYLOAD.pack(publisher, seq + i, now), qos, client.packet_id())
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
    delivery: Delivery,
) -> int:
    sent, turn = 0, 0
    while sent < count:
        room = min(window - (sent - delivery.received), count - sent)
        if room <= 0:
            delivery.progress.clear()
            await delivery.progress.wait()
            continue
        while room > 0:
            n = min(BATCH, room)
            index = turn % len(publishers)
            publishers[index].write(_batch(index, seqs, qos, publishers[index], n))
            sent += n
            room -= n
            turn += 1
        await asyncio.sleep(0)  # let the sockets and the subscriber run
    return sent


async def _paced(
    publishers: list[MqttClient], seqs: list[int], qos: int, rate: float, seconds: float
) -> int:
    """``rate`` messages a second, spread over the publishers, every millisecond or so."""
    started = time.perf_counter()
    sent, turn = 0, 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            index = turn % len(publishers)
            publishers[index].write(_batch(index, seqs, qos, publishers[index], 1))
            turn += 1
        sent += max(due, 0)
        await asyncio.sleep(0.001)
    return sent


async def _settle(delivery: Delivery, sent: int, limit_s: float) -> None:
    """Wait until everything sent is delivered, or nothing arrived for ``limit_s``."""
    while delivery.received < sent:
        delivery.progress.clear()
        try:
            await asyncio.wait_for(delivery.progress.wait(), limit_s)
        except TimeoutError:
            return


def _percentiles(ordered: list[int]) -> dict[str, float]:
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50": at(0.50), "p99": at(0.99), "max": ordered[-1] / 1e6}


# --- idle connections ---------------------------------------------------------------------


async def run_idle(spec: dict[str, Any]) -> dict[str, Any]:
    contexts = [(name, client_context(spec["ca"], pem)) for name, pem in spec["devices"]]
    clients: list[MqttClient] = []
    failures, first_error = 0, ""
    jobs = iter(range(spec["count"]))

    async def opener() -> None:
        nonlocal failures, first_error
        for number in jobs:
            name, context = contexts[number % len(contexts)]
            try:
                clients.append(await connect(spec["port"], context, f"{name}-{number}"))
            except (OSError, RuntimeError) as exc:
                failures += 1
                first_error = first_error or repr(exc)

    await asyncio.gather(*(opener() for _ in range(spec["concurrency"])))
    print(json.dumps({"ready": len(clients), "failures": failures}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    alive = sum(1 for c in clients if not c.closed.done())
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    return {"open": len(clients), "alive_at_end": alive, "failures": failures, "error": first_error}


MODES = {"connect": run_connects, "pubsub": run_pubsub, "idle": run_idle}


async def _main(spec: dict[str, Any]) -> None:
    cpu = own_cpu()
    result = await MODES[spec["mode"]](spec)
    result["cpu_s"] = own_cpu() - cpu
    print(json.dumps(result), flush=True)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_main(spec))


if __name__ == "__main__":
    main()
