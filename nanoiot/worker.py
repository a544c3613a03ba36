"""One broker worker process of ``nanoiot serve --workers N`` (``nanoiot.supervisor``).

A worker joins the cluster's NATS as ``<node>-w<index>``, runs a broker on the MQTT port it
shares with the other workers (SO_REUSEPORT: the kernel spreads new connections over the
live ones), and has no admin HTTP server: the supervisor's serves the node. It tells the
supervisor through ``channel`` that it is ready (or why it could not start), stops on
SIGTERM or SIGINT, reloads the server certificate on SIGHUP, and ends with its parent.

The entry point ``run`` is started by ``multiprocessing`` (spawn): a fresh interpreter that
receives the settings the supervisor validated.
"""

import asyncio
import ctypes
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection

from nanoiot.errors import NanoIoTError
from nanoiot.settings import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run(settings: Settings, index: int, channel: Connection, parent: int) -> None:
    """The worker process's main (``multiprocessing`` target); ``parent``: the supervisor."""
    from nanoiot.cli.serve import configure_logging, run_event_loop

    _end_with_parent(parent)
    configure_logging(settings.log_level, tag=f"w{index}")
    try:
        run_event_loop(_serve(settings, index, channel))
    except NanoIoTError as exc:
        channel.send(("failed", str(exc)))
        sys.exit(1)


async def _serve(settings: Settings, index: int, channel: Connection) -> None:
    from broker.server import RunningBroker
    from nanoiot.node import join_cluster, listen_for_changes

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    cluster = await join_cluster(settings, worker=index)
    try:
        running = await RunningBroker.start(settings, reuse_port=True, cluster=cluster)
        try:
            loop.add_signal_handler(signal.SIGHUP, running.tls_reload.request)

            await listen_for_changes(cluster, running)  # a revocation now, not at the next poll
            await cluster.answer_pings(mqtt_port=running.port, worker=index)
            channel.send(("ready", os.getpid()))
            await stop.wait()
            log.info("worker %d stopping", index)
        finally:
            await running.stop()
    finally:
        await cluster.close()


def _end_with_parent(parent: int) -> None:
    """Linux: the kernel sends this process SIGTERM when the supervisor dies, even by
    SIGKILL, so no worker is left holding the port."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
