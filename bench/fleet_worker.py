"""A share of a device fleet, or the application that listens to it:
``python -m bench.fleet_worker SPEC.json``.

``role: devices``: one mTLS connection per device of ``devices`` (its own certificate; client
id = device name + ``suffix``, so no two connections of the run share one), each subscribed to
its own RPC topic ``devices/<name>/rpc/request/+`` when ``subscribe`` is set, the way a fleet
waits for commands. Announces ``{"ready": open, "failures": n}``, then takes commands, one JSON
line each on stdin:

- ``{"publish": {"rate": R, "seconds": S, "qos": Q}}``: telemetry, R messages a second over
  all of this worker's devices in turn (one PUBLISH per write, to ``devices/<name>/telemetry``,
  send time in the payload); answers ``{"sent": n, "pubacks": n}`` once the PUBACKs are in
  (or 10 s passed);
- end of stdin: closes every connection and answers with its totals.

``role: application``: one connection subscribed to ``devices/+/telemetry`` (QoS 1); after
``ready``, ``{"expect": N, "quiet_s": S, "limit_s": L}`` waits until N messages arrived since
it started (or S seconds without one, or L seconds in all) and answers with their count,
order and latencies, all of them so far.
"""

import asyncio
import contextlib
import time
from typing import Any

from bench.mqtt_wire import PAYLOAD, MqttClient, client_context, connect, publish_packet
from bench.mqtt_wire import subscribe_packet as subscribe
from bench.worker_io import Tally, announce, next_command, now_ns, run_worker

PUBACK_WAIT_S = 10.0


async def open_devices(spec: dict[str, Any]) -> tuple[list[tuple[str, MqttClient]], int, str]:
    """(name, client) for every device that connected (and subscribed), failures, first one."""
    clients: list[tuple[str, MqttClient]] = []
    failures, first_error = 0, ""
    jobs = iter(spec["devices"])

    async def opener() -> None:
        nonlocal failures, first_error
        for name, pem in jobs:
            try:
                async with asyncio.timeout(60):
                    client_id = name + spec.get("suffix", "")
                    client = await connect(spec["port"], client_context(spec["ca"], pem), client_id)
                    if spec.get("subscribe"):
                        client.write(subscribe(f"devices/{name}/rpc/request/+", 1))
                        if await client.suback != 1:
                            raise RuntimeError(f"RPC subscription of {name} refused")
                clients.append((name, client))
            except (OSError, RuntimeError, TimeoutError) as exc:
                failures += 1
                first_error = first_error or f"{name}: {exc!r}"

    await asyncio.gather(*(opener() for _ in range(spec.get("concurrency", 16))))
    return clients, failures, first_error


async def publish(
    clients: list[tuple[str, MqttClient]], offset: int, rate: float, seconds: float, qos: int
) -> dict[str, Any]:
    """Telemetry at ``rate`` msg/s from the devices in turn; publisher = ``offset`` + index."""
    started = time.perf_counter()
    seqs = [0] * len(clients)
    sent = turn = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(int(elapsed * rate) - sent):
            index = turn % len(clients)
            name, client = clients[index]
            payload = PAYLOAD.pack(offset + index, seqs[index], now_ns())
            topic = f"devices/{name}/telemetry".encode()
            client.write(publish_packet(topic, payload, qos, client.packet_id()))
            seqs[index] += 1
            sent += 1
            turn += 1
        await asyncio.sleep(0.001)
    pubacks = await _pubacks(clients, sent if qos else 0)
    return {"sent": sent, "pubacks": pubacks}


async def _pubacks(clients: list[tuple[str, MqttClient]], expected: int) -> int:
    """The PUBACKs received since the last call, once ``expected`` are in (or after a bound)."""
    acked = asyncio.Event()
    for _, client in clients:
        client.on_puback = acked.set
    deadline = time.monotonic() + PUBACK_WAIT_S
    while (count := sum(c.pubacks for _, c in clients)) < expected:
        acked.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acked.wait(), max(0.0, deadline - time.monotonic()))
        if time.monotonic() >= deadline:
            break
    for _, client in clients:
        client.pubacks, client.on_puback = 0, None
    return count


async def run_devices(spec: dict[str, Any]) -> dict[str, Any]:
    clients, failures, first_error = await open_devices(spec)
    announce({"ready": len(clients), "failures": failures, "first_error": first_error})
    while (command := await next_command()) is not None:
        order = command["publish"]
        announce(await publish(clients, spec.get("offset", 0), **order))
    alive = sum(1 for _, client in clients if not client.closed.done())
    for _, client in clients:
        if client.transport is not None:
            client.transport.close()
    return {"open": len(clients), "alive_at_end": alive, "failures": failures}


async def run_application(spec: dict[str, Any]) -> dict[str, Any]:
    _, pem = spec["devices"][0]
    tally = Tally(keep_latency=True)
    listener = tally.subscriber()
    client = await connect(spec["port"], client_context(spec["ca"], pem), spec["client_id"],
                           listener.on_publish)  # fmt: skip
    client.write(subscribe("devices/+/telemetry", 1))
    if await client.suback != 1:
        raise RuntimeError("the application's subscription was refused")
    announce({"ready": 1})
    while (command := await next_command()) is not None:
        await tally.settle(command["expect"], command["quiet_s"], command["limit_s"])
        announce({"received": tally.received, "out_of_order": tally.out_of_order,
                  "latency_ms": tally.percentiles()})  # fmt: skip
    if client.transport is not None:
        client.transport.close()
    return {"open": 1}


if __name__ == "__main__":
    run_worker(lambda spec: run_devices if spec["role"] == "devices" else run_application)
