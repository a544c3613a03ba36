"""``nanoiot doctor --cert FILE``: would the broker accept this certificate now, and if not, why
and what to do.

Exit status 0 means accepted, 1 refused, so scripts can use it. The work is in
``nanoiot.cli.doctor_report``, imported when the command runs, not whenever the CLI loads.
"""

from pathlib import Path
from typing import Annotated

import typer


def doctor(
    ctx: typer.Context,
    cert: Annotated[
        Path,
        typer.Option(
            "--cert", help="The device's certificate: .pub.pem, .nopass.pem (key is not read), DER."
        ),
    ],
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="The MQTT client id the device uses.")
    ] = None,
) -> None:
    """Say whether the broker would accept a device certificate now, and if not, what to do."""
    from nanoiot.cli.doctor_report import report

    report(ctx, cert, client_id)
