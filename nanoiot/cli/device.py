"""``nanoiot device``: create, inspect, enable/disable, delete and bulk-import devices."""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nanoiot.cli.ca import find_ca
from nanoiot.cli.common import fail, with_store
from nanoiot.cli.output import as_dict, console, device_table, print_credentials, to_json

if TYPE_CHECKING:
    # The store's interface (SQLAlchemy) is loaded by with_store, when a command runs.
    from storage.interface import CredentialStore
    from storage.records import Credential, Device

app = typer.Typer(no_args_is_help=True, help="Devices.")

Name = Annotated[str, typer.Argument(help="Device name (also its MQTT client id by default).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command()
def add(
    ctx: typer.Context,
    name: Name,
    type: Annotated[str, typer.Option("--type", help="Device type.")] = "default",
    label: Annotated[str, typer.Option("--label", help="Free-form label.")] = "",
    ca: Annotated[
        str | None,
        typer.Option("--ca", help="Trusted CA whose certificates may attach to the device."),
    ] = None,
) -> None:
    """Create a device."""

    async def _add(store: "CredentialStore") -> "Device":
        bound = (await find_ca(store, ca)).id if ca is not None else None
        return await store.create_device(name, type=type, label=label, bound_ca_id=bound)

    device = with_store(ctx, _add, writes=True)
    bound = f", bound to CA '{ca}'" if ca is not None else ""
    console.print(f"created device '{device.name}' (id {device.id}){bound}")


@app.command()
def bind(
    ctx: typer.Context,
    name: Name,
    ca: Annotated[
        str | None,
        typer.Argument(help="Trusted CA whose certificates may attach to the device."),
    ] = None,
    unbind: Annotated[bool, typer.Option("--none", help="Bind it to no CA.")] = False,
) -> None:
    """Bind a device to a trusted CA: a certificate of that CA naming the device may then
    connect as it (once the device has no certificate registered another way)."""
    if (ca is None) != unbind:
        fail("give a CA name, or --none to unbind")

    async def _bind(store: "CredentialStore") -> None:
        device = await store.get_device_by_name(name)
        await store.bind_device(device.id, (await find_ca(store, ca)).id if ca else None)

    with_store(ctx, _bind, writes=True)
    console.print(f"device '{name}' bound to CA '{ca}'" if ca else f"device '{name}' unbound")


@app.command("list")
def list_(
    ctx: typer.Context,
    search: Annotated[str | None, typer.Option("--search", help="Name contains.")] = None,
    as_json: AsJson = False,
) -> None:
    """List devices by name."""

    async def _all(store: "CredentialStore") -> "list[Device]":
        items: list[Device] = []
        page = 0
        while True:
            result = await store.list_devices(text_search=search, page=page, page_size=500)
            items.extend(result.items)
            if not result.has_next:
                return items
            page += 1

    devices = with_store(ctx, _all)
    if as_json:
        print(to_json(devices))
    else:
        console.print(device_table(devices, title=f"{len(devices)} device(s)"))


@app.command()
def show(ctx: typer.Context, name: Name, as_json: AsJson = False) -> None:
    """Show a device and its credentials."""

    async def _show(store: "CredentialStore") -> "tuple[Device, Sequence[Credential]]":
        device = await store.get_device_by_name(name)
        return device, await store.list_credentials(device.id)

    device, credentials = with_store(ctx, _show)
    if as_json:
        print(to_json({**as_dict(device), "credentials": [as_dict(c) for c in credentials]}))
        return
    console.print(device_table([device]))
    print_credentials(credentials)


@app.command()
def disable(ctx: typer.Context, name: Name) -> None:
    """Disable a device: it is refused at its next connect and disconnected if connected."""
    _set_enabled(ctx, name, enabled=False)


@app.command()
def enable(ctx: typer.Context, name: Name) -> None:
    """Enable a disabled device."""
    _set_enabled(ctx, name, enabled=True)


def _set_enabled(ctx: typer.Context, name: str, *, enabled: bool) -> None:
    async def _set(store: "CredentialStore") -> None:
        device = await store.get_device_by_name(name)
        await store.set_device_enabled(device.id, enabled)

    with_store(ctx, _set, writes=True)
    console.print(f"device '{name}' {'enabled' if enabled else 'disabled'}")


@app.command()
def delete(ctx: typer.Context, name: Name) -> None:
    """Delete a device and all its credentials."""

    async def _delete(store: "CredentialStore") -> None:
        device = await store.get_device_by_name(name)
        await store.delete_device(device.id)

    with_store(ctx, _delete, writes=True)
    console.print(f"deleted device '{name}'")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON-lines file.", exists=False)],
    allow_expired: Annotated[
        bool, typer.Option("--allow-expired", help="Also register expired certificates.")
    ] = False,
) -> None:
    """Import devices with a certificate or token each; bad rows are skipped and reported.

    Columns (CSV header or JSON keys): name, and one of pem (the certificate text),
    pem_file (a path, relative to the import file) or token; optional type and label.
    Each row is imported whole or not at all: after an interruption, run the same file
    again; certificate rows imported the first time are counted as already imported.
    """
    from nanoiot.cli.imports import import_rows, read_rows

    rows = read_rows(file)
    report = with_store(
        ctx, lambda store: import_rows(store, rows, allow_expired=allow_expired), writes=True
    )
    console.print(report.summary())
    for line, message in report.errors:
        console.print(f"  row {line}: {message}", style="red")
    if report.errors:
        raise typer.Exit(1)
