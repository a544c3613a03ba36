"""admin.v1_rows: rows read from a body that arrives in arbitrary pieces."""

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from admin.v1_rows import (
    MAX_RECORD,
    Rows,
    arrived_batches,
    csv_rows,
    json_rows,
    numbered_lines,
)
from nanoiot.cli.import_batch import Row
from nanoiot.errors import ValidationError


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(rows: Rows) -> list[tuple[int, Row]]:
    return [row async for row in rows]


def every_piece_size(data: bytes) -> Iterable[int]:
    return range(1, len(data) + 1)


async def test_lines_whatever_the_pieces() -> None:
    data = "\ufeffé,1\r\nü\n\nlast".encode()
    for size in every_piece_size(data):
        lines = [line async for line in numbered_lines(pieces(data, size))]
        assert lines == [(1, "é,1\r\n"), (2, "ü\n"), (3, "\n"), (4, "last")], size


async def test_the_line_that_is_not_utf8_is_named() -> None:
    lines = numbered_lines(pieces(b"ok\nbad \xff\nnever\n", 4))
    assert await anext(lines) == (1, "ok\n")
    with pytest.raises(ValidationError, match=r"^line 2: not UTF-8 text$"):
        await anext(lines)


async def test_an_endless_line_is_refused() -> None:
    endless = pieces(b"x" * (MAX_RECORD + 10), 4096)
    with pytest.raises(ValidationError, match="line 1 is longer than"):
        await collect(json_rows(numbered_lines(endless)))


async def test_csv_records_span_lines_inside_quotes() -> None:
    data = b'name,token,label\na,t1,"two\nlines"\n\nb,t2,"say ""hi""\n"\nc,"t3\n'
    for size in every_piece_size(data):
        rows = await collect(csv_rows(numbered_lines(pieces(data, size))))
        assert rows == [
            (2, {"name": "a", "token": "t1", "label": "two\nlines"}),
            (5, {"name": "b", "token": "t2", "label": 'say "hi"\n'}),
            (7, "a quoted field opened on this line is never closed"),
        ], size


async def test_csv_cells_past_the_header_and_empty_cells_are_dropped() -> None:
    data = b"name,token,label\na,t1,,extra\n"
    rows = await collect(csv_rows(numbered_lines(pieces(data, 7))))
    assert rows == [(2, {"name": "a", "token": "t1"})]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "the CSV is empty"),
        (b"\n\n", "the CSV is empty"),
        (b"device,cert\n", "line 1: the CSV header must name 'name'"),
        (b"na\rme,token\n", "line 1: not valid CSV"),
    ],
)
async def test_a_header_the_import_cannot_use(data: bytes, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        await collect(csv_rows(numbered_lines(pieces(data, 3))))


async def test_a_bad_csv_row_is_reported_and_the_next_one_read() -> None:
    data = b"name,token\nbad\rrow,t\nok,t2\n"
    rows = await collect(csv_rows(numbered_lines(pieces(data, 5))))
    assert rows[0][0] == 2
    assert isinstance(rows[0][1], str)
    assert rows[0][1].startswith("not valid CSV")
    assert rows[1] == (3, {"name": "ok", "token": "t2"})


async def test_json_rows_skip_blank_lines_and_report_bad_ones() -> None:
    data = b'{"name": "a", "token": "t"}\n  \n[1]\n{"name": "b", "colour": "red"}\n'
    rows = await collect(json_rows(numbered_lines(pieces(data, 6))))
    assert rows == [
        (1, {"name": "a", "token": "t"}),
        (3, "expected a JSON object"),
        (4, "unknown key(s) ['colour']"),
    ]


async def test_json_rows_are_rfc_8259_json() -> None:
    # Before: tokens "nan" and "inf", and the device "b" (the last of two names).
    data = (
        b'{"name": "a", "token": NaN}\n{"name": "a", "name": "b"}\n{"name": "c", "token": 1e400}\n'
    )
    rows = await collect(json_rows(numbered_lines(pieces(data, 7))))
    assert rows == [
        (1, "not valid JSON: NaN is not a JSON number (RFC 8259 §6)"),
        (2, 'not valid JSON: the name "name" appears twice in one object'),
        (3, "not valid JSON: the number 1e400 is out of range"),
    ]


# --- arrived_batches: what the streamed import imports at once ------------------------------


async def rows_of(*parts: list[tuple[int, Row]], gate: asyncio.Event | None = None) -> Rows:
    """The rows of each part in turn; before every part after the first, ``gate`` is waited
    for (the rest of the upload has not arrived)."""
    for index, part in enumerate(parts):
        if index and gate is not None:
            await gate.wait()
            gate.clear()
        for row in part:
            yield row


def numbered(first: int, count: int) -> list[tuple[int, Row]]:
    return [(n, {"name": f"d{n}", "token": f"t{n}"}) for n in range(first, first + count)]


async def test_batches_hold_at_most_the_limit() -> None:
    batches = [batch async for batch in arrived_batches(rows_of(numbered(1, 25)), 10)]
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert [line for batch in batches for line, _ in batch] == list(range(1, 26))


async def test_a_batch_is_what_has_arrived_without_waiting_for_more() -> None:
    gate = asyncio.Event()
    batches = arrived_batches(rows_of(numbered(1, 3), numbered(4, 2), gate=gate), 10)
    # The second part only comes once the first part's results are out, as a client that
    # waits for them would send it: a batch that waited for more would never end.
    first = await asyncio.wait_for(anext(batches), 10)
    gate.set()
    second = await asyncio.wait_for(anext(batches), 10)
    assert ([line for line, _ in first], [line for line, _ in second]) == ([1, 2, 3], [4, 5])
    with pytest.raises(StopAsyncIteration):
        await anext(batches)


async def test_an_error_reading_rows_comes_after_the_rows_before_it() -> None:
    batches = arrived_batches(json_rows(numbered_lines(pieces(b'{"name": "a"}\n\xff\n', 64))), 10)
    assert await anext(batches) == [(1, {"name": "a"})]
    with pytest.raises(ValidationError, match="line 2: not UTF-8 text"):
        await anext(batches)


async def test_large_rows_end_a_batch_early() -> None:
    big: list[tuple[int, Row]] = [(n, {"name": "x", "pem": "A" * 300_000}) for n in range(10)]
    batches = [batch async for batch in arrived_batches(rows_of(big), 1000)]
    assert [len(batch) for batch in batches] == [4, 4, 2]  # MAX_BATCH_CHARS: 1 MiB
