"""Bulk import of devices from CSV or JSON lines: ``nanoiot device import``.

Rows are imported in batches of ``BATCH_ROWS`` (``nanoiot.cli.import_batch``: certificate rows
in one transaction per batch), with a progress bar on a terminal and a line per batch
otherwise. A bad row is skipped and reported with its line number; every good row is imported
whole (device and credential together) or not at all, so an import that stopped half way, even
killed, is finished by running it again: the rows imported before are counted as already
imported, not as failures. The row rules (``csv_header_problem``, ``csv_row``, ``json_row``)
are shared with the admin API's streamed import (``admin.v1_import``).
"""

import csv
import io
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nanoiot import strict_json
from nanoiot.cli.common import MAX_CERTIFICATE_FILE
from nanoiot.cli.import_batch import Row, import_batch
from nanoiot.errors import AlreadyImportedError, NanoIoTError, ValidationError
from storage.interface import CredentialStore

# Rows per batch: 100,000 rows are 100 transactions, and none holds SQLite's write lock for
# more than a fraction of a second.
BATCH_ROWS = 1000

_COLUMNS = frozenset({"name", "type", "label", "pem", "pem_file", "token"})


@dataclass
class ImportReport:
    imported: int = 0
    already_imported: int = 0  # by an earlier run of the same file
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.imported + self.already_imported + len(self.errors)

    def summary(self) -> str:
        text = f"imported {self.imported} device(s), {len(self.errors)} row(s) failed"
        if self.already_imported:
            text += f", {self.already_imported} already imported before"
        return text


def read_rows(path: Path) -> list[tuple[int, Row]]:
    """(line number, row) pairs of a CSV or JSON-lines file; ``pem_file`` is read here, so the
    import itself does no file I/O."""
    try:
        text = _bounded_lines(path).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{path}: not UTF-8 text") from None
    return [(line, _inline_pem_file(row, path.parent)) for line, row in _rows(text, path)]


def _bounded_lines(path: Path) -> bytes:
    """The file, read a line at a time and each line bounded as the API bounds a row: a file
    with no line break (/dev/zero, a disk image given by mistake) stops there with one line
    instead of taking the host's memory."""
    # Imported here: admin.v1_rows imports this module for the row rules.
    from admin.v1_rows import MAX_RECORD

    lines: list[bytes] = []
    try:
        with path.open("rb") as file:
            while line := file.readline(MAX_RECORD + 1):
                if len(line) > MAX_RECORD and not line.endswith(b"\n"):
                    raise ValidationError(
                        f"{path}, line {len(lines) + 1} is longer than {MAX_RECORD >> 10} KiB: "
                        "too long to hold a device (a certificate is a few KiB)"
                    )
                lines.append(line)
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    return b"".join(lines)


async def import_rows(
    store: CredentialStore, rows: Sequence[tuple[int, Row]], *, allow_expired: bool
) -> ImportReport:
    """Import every row, batch by batch; the report lists each failed row and why."""
    from rich.console import Console  # only here: see nanoiot.cli.output
    from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

    report = ImportReport()
    stderr = Console(stderr=True, highlight=False, markup=False)
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("importing", total=len(rows))
        for start in range(0, len(rows), BATCH_ROWS):
            batch = rows[start : start + BATCH_ROWS]
            for line, outcome in await import_batch(store, batch, allow_expired=allow_expired):
                _count(report, line, outcome)
            progress.advance(task, len(batch))
            if not stderr.is_terminal:  # no bar in a log: one line per batch instead
                print(f"{report.rows:,} of {len(rows):,} rows: {report.summary()}", file=sys.stderr)
    return report


def _count(report: ImportReport, line: int, outcome: object) -> None:
    if isinstance(outcome, AlreadyImportedError):
        report.already_imported += 1
    elif isinstance(outcome, NanoIoTError):
        report.errors.append((line, str(outcome)))
    else:
        report.imported += 1


def _rows(text: str, path: Path) -> Iterator[tuple[int, Row]]:
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"} or text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield number, json_row(line)
        return
    reader = csv.DictReader(io.StringIO(text))
    try:
        problem = csv_header_problem(reader.fieldnames or ())
        if problem is not None:
            raise ValidationError(f"{path}: {problem}")
        for row in reader:
            yield reader.line_num, csv_row(row)
    except csv.Error as exc:  # a field past csv.field_size_limit(): no next record to find
        failed = reader.line_num + 1  # the record that failed starts after the last one read
        raise ValidationError(f"{path}, line {failed}: not valid CSV: {exc}") from None


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
        row = strict_json.loads(line)
    except strict_json.JsonRefused as exc:  # NaN, a name twice, 1e999: RFC 8259 JSON only
        return f"not valid JSON: {exc}"
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
        with file.open("rb") as opened:  # bounded: /dev/zero or a log file by mistake
            data = opened.read(MAX_CERTIFICATE_FILE + 1)
    except OSError as exc:
        return f"cannot read {file}: {exc.strerror}"
    if len(data) > MAX_CERTIFICATE_FILE:
        return f"{file} is larger than {MAX_CERTIFICATE_FILE >> 10} KiB: not a certificate"
    try:
        pem = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"cannot read {file}: not PEM text"
    return {**{k: v for k, v in row.items() if k != "pem_file"}, "pem": pem}
