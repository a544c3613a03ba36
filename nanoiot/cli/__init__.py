"""The ``nanoiot`` command line.

Every command reads the same settings as the server (``conf/nanoiot.yaml``, ``NANOIOT_*`` and
``MQTT_SSL_*``), so a CLI run and a running broker share one database. A user mistake prints
one line to stderr and exits 1; only a bug shows a traceback.
"""

from pathlib import Path
from typing import Annotated

import typer

from nanoiot.cli import ca, credentials, db, device, doctor, keygen, serve
from nanoiot.cli.common import State, fail
from nanoiot.errors import NanoIoTError

app = typer.Typer(
    name="nanoiot",
    help="NanoIoT: MQTT over TLS with X.509 device authentication.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(device.app, name="device")
app.add_typer(credentials.app, name="credentials")
app.add_typer(keygen.app, name="keygen")
app.command("serve")(serve.serve)
app.command("api")(serve.api)
app.add_typer(ca.app, name="ca")
app.command("doctor")(doctor.doctor)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Settings file (default: conf/nanoiot.yaml)."),
    ] = None,
) -> None:
    ctx.obj = State(config_path=config)


def main() -> None:
    """Console-script entry point: run the app, turning our errors into one line on stderr.

    Typer handles usage errors itself (exit 2); our errors reach here and never show a traceback.
    """
    try:
        app()
    except NanoIoTError as exc:
        fail(str(exc))
