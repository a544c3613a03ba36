"""``nanoiot keygen server|client``: what ``server.keygen.sh`` / ``client.keygen.sh`` run.

This module reads the options; the work is in ``nanoiot.cli.keygen_run``, imported when a
command runs, so that loading the CLI for another command does not load cryptography's
X.509 and PKCS#12 code.
"""

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Generate keys, certificates and PKCS#12 keystores (see docs/keygen.md).",
    context_settings={"help_option_names": ["-h", "--help"]},
)

PROPERTIES_NAME = "keygen.properties"

PropsOption = Annotated[
    Path | None,
    typer.Option(
        "--props",
        "-p",
        help="Properties file (default: ./keygen.properties, else the packaged defaults).",
    ),
]
DirOption = Annotated[
    Path, typer.Option("--dir", "-d", help="Directory for the output files (created if missing).")
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", "-f", help="Overwrite earlier output without asking."),
]
# Set by the wrapper scripts after bash sourced the file: take each key's value from the
# environment (bash's expansion) instead of expanding it here.
FromEnvOption = Annotated[bool, typer.Option("--values-from-env", hidden=True)]


@app.command()
def server(
    props: PropsOption = None,
    out_dir: DirOption = Path("."),
    copy: Annotated[
        bool,
        typer.Option(
            "--copy", "-c", help="Also copy the keystore and PEM files to SERVER_KEYSTORE_DIR."
        ),
    ] = False,
    ca: Annotated[
        bool, typer.Option("--ca", help="Also create the NanoIoT device CA (for fleets).")
    ] = False,
    force: ForceOption = False,
    values_from_env: FromEnvOption = False,
) -> None:
    """Make the broker's key, self-signed certificate and keystore (server.keygen.sh)."""
    from nanoiot.cli import keygen_run

    keygen_run.server(
        props, out_dir, copy=copy, ca=ca, force=force, values_from_env=values_from_env
    )


@app.command()
def client(
    ctx: typer.Context,
    props: PropsOption = None,
    out_dir: DirOption = Path("."),
    cn: Annotated[
        str | None,
        typer.Option("--cn", help="Device name, the certificate's CN (default: CLIENT_CN)."),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option("--prefix", help="Output file prefix (default: CLIENT_FILE_PREFIX)."),
    ] = None,
    server_cert: Annotated[
        Path | None,
        typer.Option(
            "--server-cert",
            help="The broker's certificate (default: DIR/SERVER_FILE_PREFIX.pub.pem).",
        ),
    ] = None,
    ca: Annotated[
        bool,
        typer.Option("--ca", help="Sign with the device CA in DIR (from server.keygen.sh --ca)."),
    ] = False,
    provision: Annotated[
        bool,
        typer.Option("--provision", help="Register the certificate for the device in the store."),
    ] = False,
    force: ForceOption = False,
    values_from_env: FromEnvOption = False,
) -> None:
    """Make a device key, certificate and keystores (client.keygen.sh)."""
    from nanoiot.cli import keygen_run

    keygen_run.client(
        ctx, props, out_dir, cn=cn, prefix=prefix, server_cert=server_cert, ca=ca,
        provision=provision, force=force, values_from_env=values_from_env,
    )  # fmt: skip


@app.command("default-properties")
def default_properties() -> None:
    """Print the path of the packaged keygen.properties (copy it, then edit the copy)."""
    typer.echo(str(packaged_properties()))


def packaged_properties() -> Path:
    return Path(str(resources.files("nanoiot.keygen").joinpath(PROPERTIES_NAME)))
