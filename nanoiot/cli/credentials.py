"""``nanoiot credentials``: the ways a device proves who it is."""

import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nanoiot.cli.common import MAX_CERTIFICATE_FILE, fail, read_file, with_store
from nanoiot.cli.output import console, print_credentials, to_json
from nanoiot.errors import CredentialError

if TYPE_CHECKING:
    # Imported where used: loading the CLI to run another command (or --help) needs neither
    # cryptography's X.509 parsing nor the store's interface (SQLAlchemy).
    from auth.certificate import ParsedCredential
    from storage.interface import CredentialStore
    from storage.records import Credential

app = typer.Typer(no_args_is_help=True, help="Device credentials.")

DeviceName = Annotated[str, typer.Argument(help="Name of the device.")]


def read_credential_file(path: Path) -> "ParsedCredential":
    """Parse a certificate or public key file, with the file name in any error."""
    from auth.certificate import parse_credential

    data = read_file(path, limit=MAX_CERTIFICATE_FILE, holding="a certificate")
    try:
        return parse_credential(data)
    except CredentialError as exc:
        fail(f"{path}: {exc}")


@app.command("add-x509")
def add_x509(
    ctx: typer.Context,
    device: DeviceName,
    pemfile: Annotated[
        Path, typer.Argument(help="Certificate (.pub.pem, PEM or DER) or public key.")
    ],
    allow_expired: Annotated[
        bool, typer.Option("--allow-expired", help="Register an already expired certificate.")
    ] = False,
) -> None:
    """Register an X.509 certificate (or bare public key) for a device."""
    from auth.validity import check_registrable

    parsed = read_credential_file(pemfile)
    check_registrable(parsed, datetime.now(UTC), allow_expired=allow_expired)

    async def _add(store: "CredentialStore") -> "Credential":
        found = await store.get_device_by_name(device)
        return await store.add_x509_credential(found.id, parsed)

    with_store(ctx, _add, writes=True)
    console.print(f"registered X.509 credential for '{device}'")
    console.print(f"  fingerprint  sha256:{parsed.spki_sha256}")
    if parsed.subject:
        console.print(f"  subject      {parsed.subject}")
        console.print(f"  valid until  {parsed.not_after:%Y-%m-%d %H:%M} UTC")
    for extra in parsed.ignored_chain:
        console.print(f"  note: kept the device certificate, ignored chain certificate {extra}")


@app.command("add-token")
def add_token(
    ctx: typer.Context,
    device: DeviceName,
    token: Annotated[
        str | None, typer.Argument(help="Refused: use --token-stdin.", hidden=True)
    ] = None,
    token_stdin: Annotated[
        bool,
        typer.Option("--token-stdin", help="Read the token from standard input (else generated)."),
    ] = False,
) -> None:
    """Give a device an access token (its MQTT user name when it has no certificate)."""
    # The token is the device's whole secret: on the command line, every local user sees it
    # in `ps` (/proc/PID/cmdline) and the shell keeps it in its history. As add-basic's
    # password, a chosen one comes on standard input.
    if token is not None:
        fail("a token on the command line is visible to other users (ps) and kept in shell "
             "history: pass --token-stdin and give it on standard input")  # fmt: skip
    value = sys.stdin.readline().rstrip("\r\n") if token_stdin else secrets.token_urlsafe(15)
    if not value:
        fail("empty token on standard input")

    async def _add(store: "CredentialStore") -> "Credential":
        found = await store.get_device_by_name(device)
        return await store.add_token_credential(found.id, value)

    with_store(ctx, _add, writes=True)
    # The token last on its line, for scripts; the store keeps only a keyed hash of it.
    console.print(f"access token for '{device}' (shown this once, stored hashed): {value}")


@app.command("add-basic")
def add_basic(
    ctx: typer.Context,
    device: DeviceName,
    username: Annotated[str, typer.Option("--username", help="MQTT user name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="Require this MQTT client id.")
    ] = None,
    application: Annotated[
        bool, typer.Option("--application", help="A backend application, not a device.")
    ] = False,
) -> None:
    """Give a device (or application) MQTT user name and password credentials."""
    if not password_stdin:
        fail("pass --password-stdin and give the password on standard input")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("empty password on standard input")

    async def _add(store: "CredentialStore") -> "Credential":
        found = await store.get_device_by_name(device)
        return await store.add_basic_credential(
            found.id,
            username=username,
            password=password,
            client_id=client_id,
            application=application,
        )

    with_store(ctx, _add, writes=True)
    console.print(f"MQTT basic credentials for '{device}': user name {username}")


@app.command("list")
def list_(
    ctx: typer.Context,
    device: DeviceName,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List a device's credentials."""

    async def _list(store: "CredentialStore") -> "Sequence[Credential]":
        found = await store.get_device_by_name(device)
        return await store.list_credentials(found.id)

    credentials = with_store(ctx, _list)
    if as_json:
        print(to_json(credentials))
    else:
        print_credentials(credentials)


@app.command()
def revoke(
    ctx: typer.Context,
    device: DeviceName,
    fingerprint: Annotated[
        str | None,
        typer.Option("--fingerprint", help="SPKI SHA-256 (hex, 'sha256:' prefix optional)."),
    ] = None,
) -> None:
    """Revoke a device's X.509 credentials (all of them, or the one with --fingerprint).

    A running broker disconnects the device's live sessions within a second.
    """
    wanted = fingerprint.lower().removeprefix("sha256:").replace(":", "") if fingerprint else None

    async def _revoke(store: "CredentialStore") -> "Sequence[Credential]":
        found = await store.get_device_by_name(device)
        return await store.revoke_x509(found.id, wanted)

    revoked = with_store(ctx, _revoke, writes=True)
    if not revoked:
        fail(
            f"device '{device}' has no active X.509 credential"
            + (" with that fingerprint" if wanted else "")
        )
    for credential in revoked:
        console.print(f"revoked sha256:{credential.spki_sha256}")
