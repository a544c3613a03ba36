"""``nanoiot ca``: the CAs whose certificates let devices in without per-device provisioning.

A device whose own key is not registered still gets in when its certificate chains to a CA
registered here (the reference's "X.509 certificate chain" strategy). Each CA may carry a CN
rule naming the device, may create devices at first connect, and may have a CRL. A running
broker picks up every change here within a second, and closes live connections that a new CRL
revokes.
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nanoiot.cli.common import MAX_CRL_FILE, fail, read_file, with_store
from nanoiot.cli.credentials import read_credential_file
from nanoiot.cli.output import as_dict, console
from nanoiot.errors import NanoIoTError, NotFoundError, PemError

if TYPE_CHECKING:
    # Imported where used: cryptography's chain checks, RE2 and the store's interface
    # (SQLAlchemy) are for these commands, not for every run of the CLI.
    from cryptography import x509
    from rich.table import Table

    from auth.certificate import ParsedCredential
    from storage.interface import CredentialStore
    from storage.records import TrustedCA

app = typer.Typer(no_args_is_help=True, help="Trusted CAs that issue device certificates.")

CaName = Annotated[str, typer.Argument(help="Name of the trusted CA.")]


def say(text: str) -> None:
    """One line as given: no rich markup (regexes and DNs hold brackets), no hard wraps."""
    console.print(text, markup=False, soft_wrap=True)


@app.command()
def add(
    ctx: typer.Context,
    name: CaName,
    pemfile: Annotated[Path, typer.Argument(help="The CA certificate (PEM or DER).")],
    cn_regex: Annotated[
        str | None,
        typer.Option(
            "--cn-regex",
            help="Rule for the leaf's CN, matched whole; group 1 (or the whole CN) is the "
            "device name. Default: the CN is the device name.",
        ),
    ] = None,
    create_devices: Annotated[
        bool,
        typer.Option("--create-devices", help="Create a device at its first connect."),
    ] = False,
) -> None:
    """Trust a CA: devices with a certificate it issued may connect."""
    parsed = read_credential_file(pemfile)
    _check_is_ca(pemfile, parsed)
    if cn_regex is not None:
        _check_regex(cn_regex)

    async def _add(store: "CredentialStore") -> "TrustedCA":
        return await store.add_trusted_ca(
            name, parsed, cn_regex=cn_regex, create_devices=create_devices
        )

    ca = with_store(ctx, _add, writes=True)
    say(f"trusted CA '{ca.name}' added")
    say(f"  fingerprint     sha256:{ca.spki_sha256}")
    say(f"  subject         {ca.subject}")
    say(f"  valid until     {ca.not_after:%Y-%m-%d %H:%M} UTC")
    say(f"  cn regex        {ca.cn_regex or '(none: the CN is the device name)'}")
    say(f"  create devices  {'yes' if ca.create_devices else 'no'}")
    for extra in parsed.ignored_chain:
        say(f"  note: kept the first certificate, ignored {extra}")
    if ca.not_after < datetime.now(UTC):
        say("  note: this CA has expired: certificates it issued are refused")


def _check_is_ca(path: Path, parsed: "ParsedCredential") -> None:
    from auth.chain import trusted_ca_problem

    problem = trusted_ca_problem(parsed)
    if problem is not None:
        hint = ", e.g. nanoiot-device-ca.pem from server.keygen.sh --ca"
        fail(f"{path}: {problem}{hint if parsed.is_certificate else ''}")


def _check_regex(pattern: str) -> None:
    from auth.cn_rule import cn_rule_problem

    problem = cn_rule_problem(pattern)
    if problem is not None:
        fail(f"--cn-regex {problem.removeprefix('CN rule ')}")


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the trusted CAs with their device rules and CRLs."""
    cas = with_store(ctx, lambda store: store.list_trusted_cas())
    if as_json:
        rows = [{**_without_crl(ca), "crl": _crl_summary(ca)} for ca in cas]
        print(json.dumps(rows, indent=2))
        return
    console.print(_table(cas))


def _without_crl(ca: "TrustedCA") -> dict[str, Any]:
    row = as_dict(ca)
    del row["crl_pem"]
    return row


def _crl_summary(ca: "TrustedCA") -> dict[str, Any] | None:
    """What the broker would use of the stored CRL (``error`` when it would ignore the CA)."""
    from auth.certificate import load_certificate
    from auth.chain import load_crl

    if not ca.crl_pem:
        return None
    try:
        crl = load_crl(ca.crl_pem.encode(), load_certificate(ca.pem))
    except NanoIoTError as exc:
        return {"error": str(exc)}
    next_update = crl.next_update_utc
    return {
        "entries": len(crl),
        "last_update": crl.last_update_utc.isoformat(),
        "next_update": next_update.isoformat() if next_update else None,
    }


def _table(cas: "Sequence[TrustedCA]") -> "Table":
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(cas)} trusted CA(s)")
    for column in ("name", "subject", "not after", "cn regex", "create devices", "CRL"):
        table.add_column(column)
    for ca in cas:
        table.add_row(
            escape(ca.name),
            escape(ca.subject),
            f"{ca.not_after:%Y-%m-%d %H:%M}",
            escape(ca.cn_regex or ""),
            "yes" if ca.create_devices else "no",
            _crl_cell(_crl_summary(ca)),
        )
    return table


def _crl_cell(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "none"
    if "error" in summary:
        from rich.markup import escape

        return f"[red]unusable, CA ignored: {escape(summary['error'])}[/red]"
    next_update = summary["next_update"]
    due = f", next update {next_update[:16].replace('T', ' ')}" if next_update else ""
    return f"{summary['entries']} revoked{due}"


@app.command()
def crl(
    ctx: typer.Context,
    name: CaName,
    crlfile: Annotated[
        Path | None, typer.Argument(help="The CA's CRL (PEM or DER), signed by that CA.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the CA's CRL.")] = False,
) -> None:
    """Set (or --clear) the CRL of a trusted CA; a running broker applies it within a second."""
    if (crlfile is None) == (not clear):
        fail("give either a CRL file or --clear")
    data = None if crlfile is None else read_file(crlfile, limit=MAX_CRL_FILE, holding="a CRL")

    async def _set(store: "CredentialStore") -> "x509.CertificateRevocationList | None":
        from cryptography.hazmat.primitives.serialization import Encoding

        from auth.certificate import load_certificate
        from auth.chain import load_crl

        ca = await find_ca(store, name)
        if data is None:
            await store.set_ca_crl(ca.id, None)
            return None
        try:
            revocations = load_crl(data, load_certificate(ca.pem))
        except PemError as exc:
            raise PemError(f"{crlfile}: {exc}") from None
        await store.set_ca_crl(ca.id, revocations.public_bytes(Encoding.PEM).decode())
        return revocations

    stored = with_store(ctx, _set, writes=True)
    if stored is None:
        say(f"CRL of trusted CA '{name}' cleared")
        return
    say(f"CRL of trusted CA '{name}' stored: {len(stored)} revoked serial(s)")
    next_update = stored.next_update_utc
    if next_update is not None and next_update < datetime.now(UTC):
        say(f"  note: its next update was due {next_update:%Y-%m-%d %H:%M} UTC")


@app.command()
def delete(ctx: typer.Context, name: CaName) -> None:
    """Stop trusting a CA (and drop its CRL): its devices are cut off."""

    async def _delete(store: "CredentialStore") -> None:
        await store.delete_trusted_ca((await find_ca(store, name)).id)

    with_store(ctx, _delete, writes=True)
    say(f"trusted CA '{name}' deleted")
    # Leaves stored at first connect remember their CA (broker.authn), and stand only as long
    # as it is trusted; certificates an operator pinned himself are not affected.
    say(
        "  note: devices whose certificates it issued are refused from now on, and connected "
        "ones are disconnected within a second (certificates pinned with nanoiot credentials "
        "add-x509 keep working)"
    )


async def find_ca(store: "CredentialStore", name: str) -> "TrustedCA":
    cas = await store.list_trusted_cas()
    for ca in cas:
        if ca.name == name:
            return ca
    known = ", ".join(f"'{ca.name}'" for ca in cas) or "none"
    raise NotFoundError(f"no trusted CA named '{name}' (trusted CAs: {known})")
