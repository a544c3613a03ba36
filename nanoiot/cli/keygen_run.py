"""The work of ``nanoiot keygen server|client``, loaded when one of them runs.

The keys and files are made by ``nanoiot.keygen``; this module decides whether it may
overwrite (a prompt only when a person is at a terminal), prints what was written and,
with ``client --provision``, registers the new certificate in the store.
"""

import datetime as dt
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auth.certificate import parse_credential
from nanoiot.cli.common import with_store
from nanoiot.cli.keygen import PROPERTIES_NAME, packaged_properties
from nanoiot.errors import KeygenError, NanoIoTError, NotFoundError
from nanoiot.keygen.certs import distinguished_name
from nanoiot.keygen.files import OutputFile, check_overwrite, copy_into, write_files
from nanoiot.keygen.outputs import (
    ClientPaths,
    ServerPaths,
    client_outputs,
    load_certificate,
    load_device_ca,
    password_warning,
    server_outputs,
)
from nanoiot.keygen.properties import KeygenProperties, check_prefix, load_properties

if TYPE_CHECKING:
    from storage.interface import CredentialStore


def server(
    props: Path | None, out_dir: Path, *, copy: bool, ca: bool, force: bool, values_from_env: bool
) -> None:
    """The broker's key, self-signed certificate and keystore, written to ``out_dir``."""
    properties = _load(props, values_from_env)
    paths = ServerPaths.of(properties, out_dir)
    targets = [paths.keystore, paths.cert_pem, paths.cert_der, paths.key_pem]
    targets += [paths.ca_cert, paths.ca_key] if ca else []
    copy_dir = _copy_dir(properties) if copy else None
    copied_names = (paths.keystore, paths.cert_pem, paths.key_pem)
    if copy_dir is not None:
        targets += [copy_dir / path.name for path in copied_names]
    check_overwrite(targets, force=force, confirm=_confirm())
    _warn(password_warning(properties, "SERVER"))
    files = server_outputs(properties, paths, with_ca=ca, now=_now())
    write_files(files)
    _list(files)
    installed = paths
    if copy_dir is not None:
        copied = copy_into([file for file in files if file.path in copied_names], copy_dir)
        typer.echo(f"copied {', '.join(path.name for path in copied)} to {copy_dir}")
        installed = ServerPaths.of(properties, copy_dir)
    _print_broker_config(properties, installed)
    if ca:
        typer.echo(
            f"Device CA: {paths.ca_cert.resolve()}; register it as a trusted CA of the broker, "
            f"then make devices with client.keygen.sh --ca. Keep {paths.ca_key.name} off the "
            "broker."
        )


def client(
    ctx: typer.Context,
    props: Path | None,
    out_dir: Path,
    *,
    cn: str | None,
    prefix: str | None,
    server_cert: Path | None,
    ca: bool,
    provision: bool,
    force: bool,
    values_from_env: bool,
) -> None:
    """A device key, certificate and keystores, written to ``out_dir``."""
    properties = _load(props, values_from_env, client_cn=cn)
    if prefix is not None:
        check_prefix("--prefix", prefix, "command line")
        properties = replace(properties, client_file_prefix=prefix)
    server_path = server_cert or ServerPaths.of(properties, out_dir).cert_pem
    hint = "run server.keygen.sh first (same --dir), or pass --server-cert FILE"
    broker_cert = load_certificate(server_path, hint)
    issuer = load_device_ca(out_dir) if ca else None
    paths = ClientPaths.of(properties, out_dir)
    _refuse_shared_dn(properties, broker_cert)
    check_overwrite([paths.keystore, paths.nopass, paths.cert_pem], force=force, confirm=_confirm())
    _warn(password_warning(properties, "CLIENT"))
    files, device = client_outputs(
        properties, paths, server_cert=broker_cert, ca=issuer, now=_now()
    )
    write_files(files)
    _list(files)
    typer.echo(
        f"device certificate CN={properties.client_cn}, trusted server entry "
        f"'{properties.server_key_alias}' from {server_path}"
    )
    if provision:
        _provision(ctx, properties.client_cn, device.cert.public_bytes(Encoding.PEM))
    else:
        # Quoted for the shell it will be pasted into: the CN and the folder are the
        # operator's text, and a quote or $(...) in them must stay text.
        name, cert = shlex.quote(properties.client_cn), shlex.quote(str(paths.cert_pem))
        typer.echo(
            f"next: rerun with --provision, or: nanoiot device add {name} && "
            f"nanoiot credentials add-x509 {name} {cert}"
        )


def _load(
    props: Path | None, values_from_env: bool, *, client_cn: str | None = None
) -> KeygenProperties:
    """The properties from ``--props``, ./keygen.properties, or the packaged defaults."""
    local = Path(PROPERTIES_NAME)
    path = props or (local if local.is_file() else packaged_properties())
    environ = os.environ if values_from_env else None
    return load_properties(path, environ, client_cn=client_cn)


def _copy_dir(properties: KeygenProperties) -> Path:
    if not properties.server_keystore_dir.strip():
        raise KeygenError("--copy needs SERVER_KEYSTORE_DIR, which is empty")
    return Path(properties.server_keystore_dir)


def _refuse_shared_dn(properties: KeygenProperties, broker_cert: x509.Certificate) -> None:
    """A device whose DN equals the broker's makes trust-store lookups pick the wrong one."""
    if distinguished_name(properties, properties.client_cn) == broker_cert.subject:
        raise KeygenError(
            f"CLIENT_CN '{properties.client_cn}' gives the device the broker's own DN; "
            "choose another device name (--cn NAME)"
        )


def _confirm() -> Callable[[str], bool] | None:
    """Ask only a person at a terminal; otherwise there is nobody to answer."""
    if not sys.stdin.isatty():
        return None
    return lambda question: typer.confirm(question, default=False)


def _warn(message: str | None) -> None:
    if message:
        typer.echo(f"warning: {message}", err=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _list(files: Sequence[OutputFile]) -> None:
    width = max(len(str(file.path)) for file in files)
    for file in files:
        mode = "0600" if file.secret else "0644"
        typer.echo(f"wrote {file.path!s:<{width}}  {mode}  {file.purpose}")


def _print_broker_config(properties: KeygenProperties, paths: ServerPaths) -> None:
    """The settings that load what was just written (environment form; the same names in
    lower case work in conf/nanoiot.yaml). Passwords are named, not printed."""
    cert, key, store = (path.resolve() for path in (paths.cert_pem, paths.key_pem, paths.keystore))
    lines = [
        "",
        "Broker configuration, PEM form:",
        "  MQTT_SSL_CREDENTIALS_TYPE=PEM",
        f"  MQTT_SSL_PEM_CERT={cert}",
        f"  MQTT_SSL_PEM_KEY={key}",
        "or KEYSTORE form:",
        "  MQTT_SSL_CREDENTIALS_TYPE=KEYSTORE",
        f"  MQTT_SSL_KEY_STORE={store}",
        "  MQTT_SSL_KEY_STORE_TYPE=PKCS12",
        "  MQTT_SSL_KEY_STORE_PASSWORD=<the SERVER_KEYSTORE_PASSWORD value>",
        f"  MQTT_SSL_KEY_ALIAS={properties.server_key_alias}",
        "  MQTT_SSL_KEY_PASSWORD=<the SERVER_KEYSTORE_PASSWORD value>",
        f"Clients verify the broker with ca_certs={paths.cert_pem.name}.",
    ]
    typer.echo("\n".join(lines))


def _provision(ctx: typer.Context, name: str, pem: bytes) -> None:
    """Register the device's certificate, creating the device if it does not exist yet."""
    parsed = parse_credential(pem)

    async def _register(store: "CredentialStore") -> str:
        try:
            device = await store.get_device_by_name(name)
        except NotFoundError:
            await store.create_device_with_credential(name, x509=parsed)
            return "created device"
        await store.add_x509_credential(device.id, parsed)
        return "added the certificate to device"

    try:
        done = with_store(ctx, _register, writes=True)
    except NanoIoTError as exc:
        raise KeygenError(f"files written, but not provisioned: {exc}") from None
    typer.echo(f"provisioned: {done} '{name}' (sha256:{parsed.spki_sha256})")
