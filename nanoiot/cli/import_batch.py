"""Importing a batch of rows: what ``nanoiot device import`` and the admin API's import share.

A row is a dict of values (``name``, ``type``, ``label`` and ``pem`` or ``token``) or a
``str`` saying why it could not be read. Rows with a certificate are imported together, one
transaction per run of them (``CredentialStore.create_devices_with_x509``); a token row goes
through ``create_device_with_credential`` on its own. Either way each row is refused or
imported exactly as if the rows were imported one after the other, in file order.

What a crash leaves: every row either imported whole (the device, its credential and their
change-feed entries) or not at all, never a device without its credential. Running the same
file again imports the rows still missing; a certificate row that is already in the store as
the row says is reported as ``AlreadyImportedError`` rather than as a conflict, so a re-run
after a crash finishes the job and says how much of it was done before.
"""

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from auth.certificate import parse_credential
from auth.validity import check_registrable
from nanoiot.errors import ConflictError, NanoIoTError, ValidationError
from storage.bulk import NewDevice
from storage.interface import CredentialStore
from storage.records import Credential, Device

Row = dict[str, str] | str  # a row's values, or why it cannot be read at all
RowOutcome = tuple[Device, Credential] | NanoIoTError


@dataclass(frozen=True)
class _TokenRow:
    name: str
    type: str
    label: str
    token: str


async def import_batch(
    store: CredentialStore, rows: Sequence[tuple[int, Row]], *, allow_expired: bool
) -> list[tuple[int, RowOutcome]]:
    """Import ``rows`` (line number, row); the outcome of each, in the order given."""
    now = datetime.now(UTC)
    outcomes: dict[int, RowOutcome] = {}
    certificates: list[tuple[int, NewDevice]] = []
    for line, row in rows:
        try:
            prepared = _prepared(row, now, allow_expired=allow_expired)
        except NanoIoTError as exc:
            outcomes[line] = _detached(exc)
            continue
        if isinstance(prepared, NewDevice):
            certificates.append((line, prepared))
            continue
        # A token row: the certificate rows before it go first, as in file order.
        outcomes.update(await _with_certificates(store, certificates))
        certificates = []
        outcomes[line] = await _outcome_of(
            store.create_device_with_credential(
                prepared.name, type=prepared.type, label=prepared.label, token=prepared.token
            )
        )
    outcomes.update(await _with_certificates(store, certificates))
    return [(line, outcomes[line]) for line, _ in rows]


async def import_row(
    store: CredentialStore, row: Row, *, allow_expired: bool
) -> tuple[Device, Credential]:
    """Create one row's device with its credential in one transaction, or raise why not."""
    ((_, outcome),) = await import_batch(store, [(0, row)], allow_expired=allow_expired)
    if isinstance(outcome, NanoIoTError):
        raise outcome
    return outcome


def _prepared(row: Row, now: datetime, *, allow_expired: bool) -> NewDevice | _TokenRow:
    """The device a certificate row describes, or a token row; raises why the row cannot be
    imported."""
    if isinstance(row, str):
        raise ValidationError(row)
    name = row.get("name", "")
    if ("pem" in row) == ("token" in row):
        raise ValidationError(f"'{name}': give exactly one of pem, pem_file or token")
    type, label = row.get("type", "default"), row.get("label", "")
    if "token" in row:
        return _TokenRow(name, type, label, row["token"])
    x509 = parse_credential(row["pem"])
    check_registrable(x509, now, allow_expired=allow_expired)
    return NewDevice(name, x509, type=type, label=label)


async def _with_certificates(
    store: CredentialStore, rows: Sequence[tuple[int, NewDevice]]
) -> list[tuple[int, RowOutcome]]:
    if not rows:
        return []
    devices = [device for _, device in rows]
    outcomes: Sequence[RowOutcome]
    try:
        outcomes = await store.create_devices_with_x509(devices)
    except ConflictError:
        # Another writer took a name or key between the batch's checks and its inserts (the
        # batch was rolled back whole): one by one, each row gets its own answer.
        outcomes = [await _one_certificate(store, device) for device in devices]
    except NanoIoTError as exc:  # the database is gone: every row of the batch says so
        outcomes = [_detached(exc)] * len(devices)
    return [(line, outcome) for (line, _), outcome in zip(rows, outcomes, strict=True)]


async def _one_certificate(store: CredentialStore, device: NewDevice) -> RowOutcome:
    return await _outcome_of(
        store.create_device_with_credential(
            device.name, type=device.type, label=device.label, x509=device.x509
        )
    )


async def _outcome_of(created: Awaitable[tuple[Device, Credential]]) -> RowOutcome:
    try:
        return await created
    except NanoIoTError as exc:
        return _detached(exc)


def _detached(error: NanoIoTError) -> NanoIoTError:
    """``error`` without its traceback and chained errors: kept as a row's outcome, it would
    otherwise keep every frame of the failed call alive, with the row's text in them."""
    error.__traceback__ = error.__context__ = error.__cause__ = None
    return error
