"""``nanoiot serve --workers N`` (N > 1): the supervisor's process until SIGTERM or SIGINT.

What it prints matches ``nanoiot serve`` with one worker (instructions for a first device
with development credentials, a generated admin token, the database, the addresses, then
``ready:``), so scripts and users read one shape either way.
"""

import asyncio
import logging
import signal

from nanoiot.cli.common import database_label
from nanoiot.settings import Settings
from nanoiot.text import host_port

log = logging.getLogger("nanoiot")


async def serve_workers(settings: Settings, count: int) -> None:
    from broker.devcerts import first_device_instructions
    from nanoiot.cli.serve import _stop_on_signals, _token_notice, warn_loose_permissions
    from nanoiot.worker_node import worker_node

    stop = _stop_on_signals()
    async with worker_node(settings, count) as node:
        warn_loose_permissions(settings)
        supervisor = node.supervisor
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, supervisor.signal_all, signal.SIGHUP
        )
        if node.development_credentials:
            cert = node.settings.mqtt_ssl_pem_cert
            assert cert is not None
            print(first_device_instructions(node.settings, cert, node.port), flush=True)
        if node.admin_token_created:
            print(_token_notice(settings, node.admin_token), flush=True)
        host, http_port = node.http.address
        http = f"http://{f'[{host}]' if ':' in host else host}:{http_port}"
        print(f"database: {database_label(settings)}")
        print(f"admin API and web UI: {http}/ui  (API docs: {http}/docs)")
        pids = ", ".join(str(one.process.pid) for one in supervisor.workers.values())
        print(f"workers: {count} (pids {pids})")
        print(f"ready: mqtts://{host_port(settings.mqtt_ssl_bind_address, node.port)}", flush=True)
        await stop.wait()
        log.info("shutting down %d workers", count)
