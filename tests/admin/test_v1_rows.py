"""admin.v1_rows: rows read from a body that arrives in arbitrary pieces."""

from collections.abc import AsyncIterator, Iterable

import pytest

from admin.v1_rows import MAX_RECORD, Rows, csv_rows, json_rows, numbered_lines
from nanoiot.cli.imports import Row
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
