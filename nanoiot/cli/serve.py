"""``nanoiot serve``: run the broker until SIGINT or SIGTERM."""

import asyncio
import logging
import signal

import typer

from nanoiot.cli.common import state
from nanoiot.settings import Settings

log = logging.getLogger("nanoiot")


def serve(ctx: typer.Context) -> None:
    """Run the MQTT-over-TLS broker (port 8883 by default) on the configured store.

    With no server credentials configured, development ones are generated in
    <data dir>/certs and the steps to connect a first device are printed.
    """
    settings = state(ctx).settings
    configure_logging(settings.log_level)
    asyncio.run(_serve(settings))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", force=True
    )
    # amqtt logs every packet and connection at INFO; ours say what matters.
    quiet = max(logging.WARNING, logging.getLevelNamesMapping()[level])
    logging.getLogger("amqtt").setLevel(quiet)
    for noisy in ("transitions", "alembic"):
        logging.getLogger(noisy).setLevel(quiet)


async def _serve(settings: Settings) -> None:
    from broker.devcerts import first_device_instructions
    from broker.server import RunningBroker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = await RunningBroker.start(settings)
    try:
        if running.development_credentials:
            cert = running.settings.mqtt_ssl_pem_cert
            assert cert is not None
            print(first_device_instructions(running.settings, cert, running.port), flush=True)
        print(f"ready: mqtts://{settings.mqtt_ssl_bind_address}:{running.port}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await running.stop()
