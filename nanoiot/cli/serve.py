"""``nanoiot serve``: the broker and the admin HTTP server, until SIGINT or SIGTERM.

``nanoiot api``: the admin HTTP server alone, for deployments with several broker nodes.
"""

import asyncio
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from nanoiot.cli.common import database_label, state
from nanoiot.text import OneLineFormatter, host_port

if TYPE_CHECKING:
    from nanoiot.settings import Settings

log = logging.getLogger("nanoiot")


def serve(
    ctx: typer.Context,
    workers: str | None = typer.Option(
        None,
        "--workers",
        metavar="N|auto",
        help="Broker processes sharing the MQTT port (default: the workers setting, 1); "
        "auto: one per CPU. More than 1 needs nats_url.",
    ),
) -> None:
    """Run the MQTT-over-TLS broker (port 8883 by default) and the admin API and web UI
    (http://127.0.0.1:8080 by default) on the configured store.

    With no server credentials configured, development ones are generated in
    <data dir>/certs and the steps to connect a first device are printed. Without
    NANOIOT_ADMIN_TOKEN, an admin token is generated into <data dir>/admin-token and printed
    once.
    """
    from nanoiot.supervisor import worker_count

    settings = state(ctx).settings
    count = worker_count(_workers_option(workers) or settings.workers, settings)
    configure_logging(settings.log_level)
    if count == 1:
        run_event_loop(_serve(settings))
    else:
        from nanoiot.cli.serve_workers import serve_workers

        asyncio.run(serve_workers(settings, count))


def _workers_option(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise typer.BadParameter(f"'{value}' is not a number from 1 to 256 or auto")
    return int(value)


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (the ``fast`` extra): the broker's
    per-packet work is event-loop bound, and uvloop's loop costs about half as much."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def configure_logging(level: str, tag: str = "") -> None:
    """Log lines to stderr; ``tag`` (a worker's ``w2``) starts each line's name."""
    logging.basicConfig(level=level, handlers=[log_handler(tag)], force=True)
    # Alembic logs every migration step at INFO; ours say what matters.
    quiet = max(logging.WARNING, logging.getLevelNamesMapping()[level])
    logging.getLogger("alembic").setLevel(quiet)


def log_handler(tag: str = "") -> logging.Handler:
    """The handler of the log lines on stderr. A newline or an escape sequence a client put
    in its client id, user name or topic must not forge a line nor drive the operator's
    terminal, wherever the text reached a message (``OneLineFormatter``)."""
    name = f"{tag} %(name)s" if tag else "%(name)s"
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(f"%(asctime)s %(levelname)-7s {name}: %(message)s"))
    return handler


async def _serve(settings: "Settings") -> None:
    from broker.devcerts import first_device_instructions
    from nanoiot.node import Node

    stop = _stop_on_signals()
    node = await Node.start(settings)
    warn_loose_permissions(settings)
    try:
        running = node.broker
        # SIGHUP: reload the server certificate and key (broker.tls_reload).
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, running.tls_reload.request)
        if running.development_credentials:
            cert = running.settings.mqtt_ssl_pem_cert
            assert cert is not None
            print(first_device_instructions(running.settings, cert, running.port), flush=True)
        if node.admin_token_created:
            print(_token_notice(settings, node.admin_token), flush=True)
        print(f"database: {database_label(settings)}")
        print(f"admin API and web UI: {node.http_url}/ui  (API docs: {node.http_url}/docs)")
        listening = host_port(settings.mqtt_ssl_bind_address, running.port)
        print(f"ready: mqtts://{listening}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await node.stop()


def api(ctx: typer.Context) -> None:
    """Run only the admin API and web UI, on the configured store.

    For deployments with several broker nodes: brokers learn of changes made here through the
    store's change feed within a second. The database must be migrated (nanoiot db upgrade).
    """
    settings = state(ctx).settings
    configure_logging(settings.log_level)
    asyncio.run(_api(settings))


async def _api(settings: "Settings") -> None:
    from admin.app import start_admin
    from admin.context import AdminContext
    from admin.limits import HttpLimits
    from admin.token import admin_token
    from nanoiot.store import open_store

    stop = _stop_on_signals()
    token, created = admin_token(settings)
    store = await open_store(settings)
    warn_loose_permissions(settings)
    try:
        context = AdminContext(store=store, admin_token=token, limits=HttpLimits.of(settings))
        http = await start_admin(context, settings)
        try:
            if created:
                print(_token_notice(settings, token), flush=True)
            host, port = http.address
            print(f"ready: http://{host}:{port}/ui  (API docs: http://{host}:{port}/docs)")
            await stop.wait()
            log.info("shutting down")
        finally:
            await http.stop()
    finally:
        await store.close()


def warn_loose_permissions(settings: "Settings") -> None:
    """A warning for the data directory, a secret file in it, or the broker's private key
    (its PEM file or keystore, wherever it is) that others may read."""
    from admin.token import TOKEN_FILE
    from nanoiot.settings.tls import CredentialsType
    from storage.engine import is_sqlite
    from storage.secrets import KEY_FILE, permission_warnings

    files = [settings.data_dir / TOKEN_FILE, settings.data_dir / KEY_FILE]
    # A server key that others can read lets them impersonate the broker to every device.
    # Warned, not refused: some secret stores mount files 0644 inside a container that is
    # all the key's owner's own.
    key = settings.mqtt_ssl_pem_key or settings.mqtt_ssl_pem_cert  # the key may share it
    if settings.mqtt_ssl_credentials_type is CredentialsType.KEYSTORE:
        key = settings.mqtt_ssl_key_store
    files += [key] if key is not None else []
    url = settings.effective_database_url
    database = url.split("///", 1)[1] if is_sqlite(url) and "///" in url else None
    if database and not database.startswith("file:"):
        files += [Path(database + suffix) for suffix in ("", "-wal", "-shm")]
    for line in permission_warnings(settings.data_dir, files):
        log.warning("%s", line)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _token_notice(settings: "Settings", token: str) -> str:
    from admin.token import token_path

    return (
        f"Admin token (shown once; kept in {token_path(settings)}, mode 0600):\n"
        f"  {token}\n"
        "Use it as 'Authorization: Bearer <token>' for the API, or to sign in to the web UI."
    )
