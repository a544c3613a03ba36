"""Bulk import of devices from CSV or JSON lines, one transaction per row.

A bad row is skipped and reported with its line number; every good row is imported whole
(device and credential together) or not at all, so a failed import can simply be re-run.
The row rules (``csv_header_problem``, ``csv_row``, ``json_row``) and ``import_row`` are
shared with the admin API's streamed import (``admin.v1_import``).
"""

import csv
import io
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.progress import Progress

from auth.certificate import parse_credential
from auth.validity import check_registrable
from nanoiot.errors import NanoIoTError, ValidationError
from storage.interface import CredentialStore
from storage.records import Credential, Device

_COLUMNS = frozenset({"name", "type", "label", "pem", "pem_file", "token"})

Row = dict[str, str] | str  # a row's values, or why it cannot be read at all


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def read_rows(path: Path) -> list[tuple[int, Row]]:
    """(line number, row) pairs of a CSV or JSON-lines file; ``pem_file`` is read here, so the
    import itself does no file I/O."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{path}: not UTF-8 text") from None
    return [(line, _inline_pem_file(row, path.parent)) for line, row in _rows(text, path)]


async def import_rows(
    store: CredentialStore, rows: list[tuple[int, Row]], *, allow_expired: bool
) -> ImportReport:
    """Import every row; the report lists each failed row and why."""
    report = ImportReport()
    with Progress(transient=True) as progress:
        task = progress.add_task("importing", total=len(rows))
        for line, row in rows:
            try:
                await import_row(store, row, allow_expired=allow_expired)
                report.imported += 1
            except NanoIoTError as exc:
                report.errors.append((line, str(exc)))
            progress.advance(task)
    return report


def _rows(text: str, path: Path) -> Iterator[tuple[int, Row]]:
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"} or text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield number, json_row(line)
        return
    reader = csv.DictReader(io.StringIO(text))
    problem = csv_header_problem(reader.fieldnames or ())
    if problem is not None:
        raise ValidationError(f"{path}: {problem}")
    for row in reader:
        yield reader.line_num, csv_row(row)


def csv_header_problem(fieldnames: Collection[str]) -> str | None:
    """Why a CSV header cannot be imported, or None."""
    header = set(fieldnames)
    if header - _COLUMNS or "name" not in header:
        return (
            f"the CSV header must name 'name' and some of {sorted(_COLUMNS)}; "
            f"found {sorted(header)}"
        )
    return None


def csv_row(row: Mapping[str | None, str | list[str] | None]) -> Row:
    """A ``csv.DictReader`` row without its empty cells and values past the header."""
    return {k: v for k, v in row.items() if k and isinstance(v, str) and v}


def json_row(line: str) -> Row:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg}"
    if not isinstance(row, dict):
        return "expected a JSON object"
    unknown = set(row) - _COLUMNS
    if unknown:
        return f"unknown key(s) {sorted(unknown)}"
    return {k: str(v) for k, v in row.items() if v not in (None, "")}


def _inline_pem_file(row: Row, base: Path) -> Row:
    if isinstance(row, str) or "pem_file" not in row:
        return row
    if "pem" in row:
        return "give pem or pem_file, not both"
    file = base / row["pem_file"]
    try:
        pem = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read {file}: {getattr(exc, 'strerror', None) or 'not PEM text'}"
    return {**{k: v for k, v in row.items() if k != "pem_file"}, "pem": pem}


async def import_row(
    store: CredentialStore, row: Row, *, allow_expired: bool
) -> tuple[Device, Credential]:
    """Create the row's device with its credential in one transaction, or raise why not."""
    if isinstance(row, str):
        raise ValidationError(row)
    name = row.get("name", "")
    if ("pem" in row) == ("token" in row):
        raise ValidationError(f"'{name}': give exactly one of pem, pem_file or token")
    x509 = parse_credential(row["pem"]) if "pem" in row else None
    if x509 is not None:
        check_registrable(x509, datetime.now(UTC), allow_expired=allow_expired)
    return await store.create_device_with_credential(
        name,
        type=row.get("type", "default"),
        label=row.get("label", ""),
        x509=x509,
        token=row.get("token"),
    )
