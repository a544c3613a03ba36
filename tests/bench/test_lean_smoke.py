"""Smoke run of the lean load generator against a real ``nanoiot serve`` over mutual TLS:
pairs and a fleet on a shared subscription at QoS 0 and 1, small. What a subscriber gets is
compared with what its publisher wrote byte for byte (the broker's packet identifiers
aside), so this also checks that the broker forwards a PUBLISH as the generator expects
(no retain flag, the publisher's topic and payload); and the broker's own counters must
agree with the generator's."""

import asyncio
import os
from pathlib import Path

import httpx

from bench.cluster_bench import device_ids, nanoiot_node
from bench.cluster_lean import Brokers, LeanRow, Load, fleet_spec, lean_row, pairs_spec
from bench.compare_load import Workers
from bench.compare_setup import make_pki, prepare_nanoiot_store


async def rows(work: Path) -> list[LeanRow]:
    pki, made = make_pki(work, {"ec": 12})
    data_dir = work / "nanoiot-data"
    await prepare_nanoiot_store(data_dir, 0, made["ec"])
    load = Load(
        await device_ids(data_dir, made["ec"][:4]), await device_ids(data_dir, made["ec"][4:]),
        messages=3_000, fleet_messages=130, pairs=2, slice=50, window=400, fleet_slice=20,
        fleet_window=200,
    )  # fmt: skip
    found = []
    async with nanoiot_node(data_dir, pki, work, "single", {}) as node:
        brokers = Brokers("NanoIoT", node.port, node.port, pki.ca_file, [node.pid],
                          http_url=node.http_url, token=node.token)  # fmt: skip
        for qos in (0, 1):
            spec = pairs_spec(brokers, load, qos, [(node.port, node.port)] * load.pairs)
            found.append(await lean_row(brokers, spec, work, f"QoS {qos}", "pairs"))
            spec = fleet_spec(brokers, load, qos, consumers=1)
            found.append(await lean_row(brokers, spec, work, f"QoS {qos}", "fleet"))
    return found


def test_pairs_and_a_fleet_are_delivered_whole_and_counted_alike_by_the_broker(
    tmp_path: Path,
) -> None:
    for row in asyncio.run(rows(tmp_path)):
        assert (row.scenario, row.shape, row.checked(), row.agree()) == (
            row.scenario, row.shape, "ok", "yes",
        )  # fmt: skip
        expected = 2 * 3_000 if row.shape == "pairs" else 8 * 130
        assert row.delivered == expected
        assert row.result["phase_cpu_s"] > 0
        assert row.result["latency_ms"]["samples"] > 0


async def connected_at_done(work: Path) -> tuple[dict[str, object], list[int], dict[str, object]]:
    """The generator's line after "go", the broker's live connections then, and the
    generator's scheduling policy once connected."""
    pki, made = make_pki(work, {"ec": 4})
    data_dir = work / "nanoiot-data"
    await prepare_nanoiot_store(data_dir, 0, made["ec"])
    load = Load(await device_ids(data_dir, made["ec"]), [], messages=500, fleet_messages=0,
                pairs=2, slice=50, window=200)  # fmt: skip
    async with nanoiot_node(data_dir, pki, work, "single", {}) as node:
        brokers = Brokers("NanoIoT", node.port, node.port, pki.ca_file, [node.pid],
                          http_url=node.http_url, token=node.token)  # fmt: skip

        async def connected() -> int:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.get(
                    f"{node.http_url}/metrics", headers={"Authorization": f"Bearer {node.token}"}
                )
            line = next(x for x in answer.text.splitlines()
                        if x.startswith("nanoiot_connected_clients "))  # fmt: skip
            return int(float(line.split()[1]))

        spec = pairs_spec(brokers, load, 0, [(node.port, node.port)] * load.pairs)
        workers = await Workers.start([spec], work, "bench.lean_worker")
        try:
            await workers.states()
            policy = os.sched_getscheduler(workers.workers[0].process.pid)
            workers.workers[0].send({"go": True})
            (done,) = await workers.states()
            counts = [await connected()]
            (result,) = await workers.finish()
        finally:
            await workers.kill()
    return done, counts, {
        "received": result["received"], "batch": result["sched_batch"],
        "policy": "batch" if policy == os.SCHED_BATCH else policy,
    }  # fmt: skip


def test_the_generator_says_it_is_done_before_its_clients_close(tmp_path: Path) -> None:
    """The brokers' CPU is read at that moment: their work for the clients' disconnects is
    not the messages'. The generator runs under SCHED_BATCH (``bench.worker_io.give_way``):
    its wake-ups, one every 20 messages of a QoS 1 subscriber, do not preempt a broker
    worker on the cores they share."""
    done, connected, result = asyncio.run(connected_at_done(tmp_path))
    assert (done, connected, result) == (
        {"done": True}, [4], {"received": 2 * 500, "batch": True, "policy": "batch"}
    )  # fmt: skip
