"""Import rows read from a byte stream as it arrives: CSV or JSON lines.

A bounded number of rows is held at a time, whatever the size of the upload: a 1 GB file is
read in the server's chunks, turned into rows one by one and imported in batches of what has
arrived (``arrived_batches``). What a row may contain, and how it is imported, is
``nanoiot.cli.imports``'s (the CLI's ``nanoiot device import``), so a file gives the same
devices through either. Line numbers are those of the uploaded text, where the row
starts; a row that cannot be read becomes a ``str`` saying why, and the import goes on.

Problems that leave no way to find the next row (text that is not UTF-8, a record past
``max_row`` bytes: ``http_import_max_row_bytes``) raise ``ValidationError`` and end the import.
"""

import asyncio
import csv
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from admin.limits import HttpLimits
from nanoiot.cli.import_batch import Row
from nanoiot.cli.imports import csv_header_problem, csv_row, json_row
from nanoiot.errors import ValidationError
from nanoiot.tasks import cancel_and_wait

# A certificate chain in PEM is a few KiB; a record this long is not a device (the default of
# http_import_max_row_bytes; the CLI's import bounds a line of its file by it too).
MAX_RECORD: int = HttpLimits.import_max_row_bytes

Lines = AsyncIterator[tuple[int, str]]
Rows = AsyncIterator[tuple[int, Row]]


async def numbered_lines(chunks: AsyncIterable[bytes], max_row: int = MAX_RECORD) -> Lines:
    """(line number, text with its line break) for each line of UTF-8 ``chunks``.

    Split before decoding: the byte 0x0A is never part of a multi-byte UTF-8 sequence, and
    decoding line by line names the line that is not UTF-8.
    """
    pending = b""
    number = 0
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            number += 1
            if len(line) > max_row:  # however the upload was cut into chunks
                raise ValidationError(f"line {number} is longer than {max_row} bytes")
            yield number, _decode(line + b"\n", number)
        if len(pending) > max_row:
            raise ValidationError(f"line {number + 1} is longer than {max_row} bytes")
    if pending:
        yield number + 1, _decode(pending, number + 1)


def _decode(line: bytes, number: int) -> str:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"line {number}: not UTF-8 text") from None
    # A byte order mark, as spreadsheet programs write at the start of a CSV export.
    return text.removeprefix("\ufeff") if number == 1 else text


async def json_rows(lines: Lines) -> Rows:
    """One row per non-blank line (JSON lines: https://jsonlines.org)."""
    async for number, line in lines:
        if line.strip():
            yield number, json_row(line)


async def sniffed_rows(lines: Lines, max_row: int = MAX_RECORD) -> Rows:
    """JSON lines if the first non-blank line starts with '{', else CSV (the CLI's rule for a
    file whose name does not say)."""
    blank: list[tuple[int, str]] = []
    async for number, line in lines:
        blank.append((number, line))
        if line.strip():
            break
    chained = _chained(blank, lines)
    if blank and blank[-1][1].lstrip().startswith("{"):
        rows = json_rows(chained)
    else:
        rows = csv_rows(chained, max_row)
    async for row in rows:
        yield row


async def _chained(first: list[tuple[int, str]], rest: Lines) -> Lines:
    for line in first:
        yield line
    async for line in rest:
        yield line


async def csv_rows(lines: Lines, max_row: int = MAX_RECORD) -> Rows:
    """Rows of CSV text whose first record is the header; raises ValidationError for a header
    the import cannot use, before any row."""
    records = _csv_records(lines, max_row)
    first = await anext(records, None)
    if first is None:
        raise ValidationError("the CSV is empty: its first line must be the header")
    header_line, header = first
    try:
        fieldnames = next(csv.reader([header]))
    except csv.Error as exc:
        raise ValidationError(f"line {header_line}: not valid CSV: {exc}") from None
    problem = csv_header_problem(fieldnames)
    if problem is not None:
        raise ValidationError(f"line {header_line}: {problem}")
    async for number, record in records:
        yield number, _csv_values(record, fieldnames)


async def _csv_records(lines: Lines, max_row: int) -> Lines:
    """Whole CSV records, non-blank, with the line each starts on.

    RFC 4180 §2: a line break inside a quoted field belongs to the field (a PEM in a cell),
    and a quote inside one is doubled; so a record ends at the first line break after an even
    number of quotes.
    """
    parts: list[str] = []
    start = quotes = size = 0
    async for number, line in lines:
        if not parts:
            start = number
        parts.append(line)
        quotes += line.count('"')
        size += len(line)
        if quotes % 2 == 0:
            record = "".join(parts)
            parts, quotes, size = [], 0, 0
            if record.strip():
                yield start, record
        elif size > max_row:
            raise ValidationError(
                f"line {start}: a quoted field is not closed within {max_row} characters"
            )
    if parts:  # the upload ended inside a quoted field
        yield start, "".join(parts)


def _csv_values(record: str, fieldnames: list[str]) -> Row:
    if record.count('"') % 2:
        # csv would read the rest of the upload into one cell: never what was meant.
        return "a quoted field opened on this line is never closed"
    try:
        values = next(csv.DictReader([record], fieldnames=fieldnames))
    except (csv.Error, StopIteration) as exc:
        return f"not valid CSV: {exc}"
    return csv_row(values)


# Rows read ahead of the import: with a batch, what bounds the memory an upload can take.
_READ_AHEAD = 8
# A batch also ends at this many characters of row values (a certificate is about 1,000).
MAX_BATCH_CHARS = 1 << 20


@dataclass
class _End:
    """After the last row: why the rows ended early, if they did."""

    error: BaseException | None = None


async def arrived_batches(rows: Rows, limit: int) -> AsyncIterator[list[tuple[int, Row]]]:
    """``rows`` in batches of what has arrived: at most ``limit`` rows (and about
    ``MAX_BATCH_CHARS``), and never a wait for more once one row is there, so a client that
    sends part of its file and waits for those results gets them. An error reading the rows
    (ValidationError, ClientDisconnect) is raised after the batch read before it."""
    queue: asyncio.Queue[tuple[int, Row] | _End] = asyncio.Queue(_READ_AHEAD)
    reader = asyncio.create_task(_read_ahead(rows, queue))
    try:
        while True:
            batch, end = await _next_batch(queue, limit)
            if batch:
                yield batch
            if end is not None:
                if end.error is not None:
                    raise end.error
                return
    finally:
        await cancel_and_wait(reader)


async def _read_ahead(rows: Rows, queue: "asyncio.Queue[tuple[int, Row] | _End]") -> None:
    try:
        async for row in rows:
            await queue.put(row)
    except Exception as exc:  # handed over: arrived_batches raises it
        await queue.put(_End(exc))
    else:
        await queue.put(_End())


async def _next_batch(
    queue: "asyncio.Queue[tuple[int, Row] | _End]", limit: int
) -> tuple[list[tuple[int, Row]], _End | None]:
    batch: list[tuple[int, Row]] = []
    size = 0
    item = await queue.get()
    while not isinstance(item, _End):
        batch.append(item)
        size += _size(item[1])
        if len(batch) >= limit or size >= MAX_BATCH_CHARS:
            return batch, None
        if queue.empty():
            await asyncio.sleep(0)  # a reader waiting for room in the queue fills it again
            if queue.empty():
                return batch, None  # the rest has not arrived yet
        item = queue.get_nowait()
    return batch, item


def _size(row: Row) -> int:
    return len(row) if isinstance(row, str) else sum(map(len, row.values()))
