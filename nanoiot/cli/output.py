"""How commands print records: rich tables for people, ``--json`` for scripts.

rich is imported when something is printed, not when the CLI loads: ``nanoiot serve`` loads
every command to parse its arguments and prints through rich never, and rich is some 3 MiB of
a broker's memory.
"""

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from storage.records import Credential, Device


class _Console:
    """rich's Console, made by the first ``print``."""

    def __init__(self) -> None:
        self._console: Console | None = None

    def print(self, *objects: Any, **options: Any) -> None:
        if self._console is None:
            from rich.console import Console

            # No markup: device names, labels and subjects are user data, and rich would eat
            # "[...]" in them. Soft wrap: a line is never broken by us (the terminal wraps
            # it), so a fingerprint or a path stays whole to copy; tables still fit the
            # terminal's width.
            self._console = Console(highlight=False, markup=False, soft_wrap=True)
        self._console.print(*objects, **options)


console = _Console()


def _plain(value: Any) -> Any:
    if isinstance(value, UUID | Enum):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def as_dict(record: Any) -> dict[str, Any]:
    """A record as JSON-ready values (UUIDs, enums and datetimes as strings)."""
    return {k: _plain(v) for k, v in dataclasses.asdict(record).items()}


def to_json(value: Any) -> str:
    """A record, or a sequence of records, as indented JSON."""
    if dataclasses.is_dataclass(value):
        return json.dumps(as_dict(value), indent=2)
    if isinstance(value, dict):
        return json.dumps(value, indent=2)
    return json.dumps([as_dict(r) for r in value], indent=2)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else ""


def device_table(devices: "Sequence[Device]", title: str | None = None) -> "Table":
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for column in ("name", "id", "type", "label", "enabled", "created"):
        table.add_column(column)
    for d in devices:
        enabled = Text("yes") if d.enabled else Text("no", style="red")
        table.add_row(d.name, str(d.id), d.type, d.label, enabled, _when(d.created_at))
    return table


def print_credentials(credentials: "Sequence[Credential]") -> None:
    """One block per credential, its identity (the fingerprint) on a line of its own.

    Not a table: in 80 columns a table cuts or folds the 71-character fingerprint, and a
    fingerprint must stay whole to be copied and searched for in the log.
    """
    if not credentials:
        console.print("no credentials")
    for c in credentials:
        console.print(f"{c.type}  {c.status}  added {_when(c.created_at)}")
        console.print(f"  {_identity(c)}")
        if details := _details(c):
            console.print(f"  {details}")


def _identity(c: "Credential") -> str:
    # Here, not at the top: the auth package loads cryptography, which `nanoiot --help` and
    # the commands that print no credential need not pay for.
    from auth.kinds import CredentialType

    if c.spki_sha256:
        return f"sha256:{c.spki_sha256}"
    if c.type is CredentialType.ACCESS_TOKEN:
        return "access token (stored as a keyed hash: shown only when added)"
    return f"user {c.username}" + (f" (client id {c.client_id})" if c.client_id else "")


def _details(c: "Credential") -> str:
    if c.spki_sha256:
        subject = c.subject or "(bare public key)"
        return f"{subject}, valid until {_when(c.not_after)}" if c.not_after else subject
    return "application" if c.application else ""
