"""bench.live_count against the real brokers: it catches the connections a take-over closed.

Two connections with one client id: NanoIoT and Mosquitto close the first (MQTT 3.1.1
§3.1.4), plain amqtt keeps both. A benchmark that divided by the two connections it opened
would be wrong for the first two brokers by a factor of two; the check must say so.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from bench.compare_brokers import AMQTT, KINDS, MOSQUITTO, NANOIOT, BrokerProcess, started
from bench.compare_setup import Device, make_pki, prepare_nanoiot_store
from bench.live_count import LiveCount, LiveCountMismatch, check, open_for
from bench.mqtt_wire import MqttClient, client_context, connect

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MOSQUITTO.exists(), reason="Debian's mosquitto is needed"),
]
MISMATCH_WAIT_S = 4.0  # enough for two of Mosquitto's $SYS updates


@pytest.fixture
async def brokers(tmp_path: Path) -> AsyncIterator[tuple[list[BrokerProcess], list[Device]]]:
    pki, devices = make_pki(tmp_path / "pki", {"ec": 2})
    await prepare_nanoiot_store(tmp_path / "nanoiot-data", 0, devices["ec"])
    async with AsyncExitStack() as stack:
        running = [await stack.enter_async_context(started(k, pki, tmp_path)) for k in KINDS]
        yield running, devices["ec"]


async def connection(broker: BrokerProcess, device: Device, client_id: str) -> MqttClient:
    context = client_context(str(broker.ca_file), str(device.pem_file))
    return await connect(broker.port, context, client_id)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_taken_over_is_not_counted(
    brokers: tuple[list[BrokerProcess], list[Device]], kind: str
) -> None:
    running, devices = brokers
    (broker,) = [b for b in running if b.name == kind]
    live: LiveCount = await open_for(broker, str(devices[1].pem_file))
    clients = []
    try:
        clients.append(await connection(broker, devices[0], "same-id"))
        clients.append(await connection(broker, devices[0], "same-id"))
        if kind == AMQTT:  # no take-over: both stay
            await check(live, 2, kind, "two connections")
        else:
            assert kind in (NANOIOT, "Mosquitto")
            # Closed by the broker, before the second one's CONNACK.
            await asyncio.wait_for(clients[0].closed, 10)
            with pytest.raises(LiveCountMismatch, match=f"{kind} counts 1 live connections"):
                await check(live, 2, kind, "two connections", limit_s=MISMATCH_WAIT_S)
            await check(live, 1, kind, "one connection")
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
        await live.close()
