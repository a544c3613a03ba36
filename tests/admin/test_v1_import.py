"""/api/v1/devices/import: CSV or JSON lines, one result line per row, then a summary."""

import csv
import datetime as dt
import io
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from admin.app import create_app
from admin.context import AdminContext
from storage.migrate import upgrade
from storage.sql import SqlCredentialStore
from tests.admin.conftest import TOKEN, FakeBroker
from tests.certgen import issue

UTC = dt.UTC
URL = "/api/v1/devices/import"
NDJSON = {"content-type": "application/x-ndjson"}
CSV = {"content-type": "text/csv"}


def jsonl(*rows: dict[str, Any] | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def csv_text(header: list[str], *rows: list[str], newline: str = "\n") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def results(response: httpx.Response) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The row lines and the summary line of an import's answer."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    *rows, summary = lines
    assert summary["summary"] is True
    return rows, summary


def expired_pem(cn: str) -> str:
    now = dt.datetime.now(UTC)
    day = dt.timedelta(days=1)
    return issue(cn, not_before=now - 9 * day, not_after=now - day).cert_pem


async def test_good_rows_are_imported_and_bad_ones_reported(
    api: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    meter = issue("meter-1")
    body = jsonl(
        {"name": "meter-1", "pem": meter.cert_pem, "type": "meter", "label": "hall"},
        {"name": "meter-2", "token": "tok-2"},
        {"name": "pasted-key", "pem": issue("x").key_pem},
        {"name": "old", "pem": expired_pem("old")},
        {"name": "meter-1", "token": "tok-dup-name"},
        "{oops",
        "",
        {"name": "from-file", "pem_file": "/etc/passwd"},
        {"name": "same-key", "pem": meter.cert_pem},
    )
    rows, summary = results(await api.post(URL, content=body, headers=NDJSON))

    assert rows[0] == {
        "line": 1,
        "name": "meter-1",
        "ok": True,
        "deviceId": rows[0]["deviceId"],
        "credentialId": rows[0]["credentialId"],
    }
    assert rows[1]["ok"] is True
    expected = {
        3: (400, "this is a private key"),
        4: (400, "expired on"),
        5: (409, "Device with name 'meter-1' already exists!"),
        6: (400, "not valid JSON"),
        8: (400, "put the certificate itself in pem"),
        9: (409, "Device credentials are already assigned to another device! (device 'meter-1')"),
    }
    for row in rows[2:]:
        status, message = expected[row["line"]]
        assert (row["ok"], row["status"]) == (False, status), row
        assert message in row["error"], row
    errors = {row["line"]: row["error"] for row in rows[2:]}
    assert "BEGIN" not in errors[3]
    assert "allowExpired=true" in errors[4]
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5, 6, 8, 9]
    assert summary == {
        "summary": True,
        "imported": 2,
        "failed": 6,
        "conflicts": 2,
        "complete": True,
    }
    assert fake_broker.changes == 1  # once per batch that imported something

    device = await store.get_device_by_name("meter-1")
    assert (str(device.id), device.type, device.label) == (rows[0]["deviceId"], "meter", "hall")
    listed = await store.list_devices()
    assert sorted(d.name for d in listed.items) == ["meter-1", "meter-2"]


async def test_running_the_same_file_again_reports_conflicts(
    api: httpx.AsyncClient, fake_broker: FakeBroker
) -> None:
    body = jsonl(
        {"name": "a", "pem": issue("a").cert_pem},
        {"name": "b", "token": "tok-b"},
    )
    _, first = results(await api.post(URL, content=body, headers=NDJSON))
    assert (first["imported"], first["failed"]) == (2, 0)
    rows, again = results(await api.post(URL, content=body, headers=NDJSON))
    assert [(row["name"], row["status"]) for row in rows] == [("a", 409), ("b", 409)]
    assert (again["imported"], again["failed"], again["conflicts"]) == (0, 2, 2)
    assert fake_broker.changes == 1  # once per batch that imported something


async def test_an_expired_certificate_is_imported_with_allow_expired(
    api: httpx.AsyncClient,
) -> None:
    body = jsonl({"name": "old", "pem": expired_pem("old")})
    rows, _ = results(
        await api.post(URL, content=body, headers=NDJSON, params={"allowExpired": "true"})
    )
    assert rows[0]["ok"] is True


async def test_csv_with_multi_line_certificates_in_quoted_cells(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    one, two = issue("c1"), issue("c2")
    body = "\ufeff" + csv_text(
        ["name", "type", "pem", "token"],
        ["c1", "meter", one.cert_pem, ""],
        ["c2", "", two.cert_pem, ""],
        ["c3", "", "", "tok-c3"],
        ["c1", "", "", 'a "quoted" token'],
        newline="\r\n",
    )
    rows, summary = results(await api.post(URL, content=body.encode(), headers=CSV))
    pem_lines = one.cert_pem.count("\n")
    assert [row["line"] for row in rows] == [2, 3 + pem_lines, 4 + 2 * pem_lines, 5 + 2 * pem_lines]
    assert [row["ok"] for row in rows] == [True, True, True, False]
    assert rows[3]["status"] == 409
    assert (summary["imported"], summary["failed"]) == (3, 1)
    credentials = await store.list_credentials((await store.get_device_by_name("c1")).id)
    assert credentials[0].pem == one.cert_pem


async def test_an_unclosed_quote_is_reported_on_its_line(api: httpx.AsyncClient) -> None:
    body = 'name,token\nok,tok-1\nbroken,"tok-2\nmore\n'
    rows, summary = results(await api.post(URL, content=body, headers=CSV))
    assert rows[1] == {
        "line": 3,
        "ok": False,
        "status": 400,
        "error": "a quoted field opened on this line is never closed",
    }
    assert (summary["imported"], summary["failed"]) == (1, 1)


@pytest.mark.parametrize(
    ("filename", "content_type", "as_csv"),
    [
        ("devices.csv", "text/csv", True),
        ("devices.jsonl", "application/octet-stream", False),
        ("export.txt", "text/plain", False),  # told apart by its first line, as the CLI does
        ("export.txt", "text/plain", True),
    ],
)
async def test_a_file_upload(
    api: httpx.AsyncClient,
    filename: str,
    content_type: str,
    as_csv: bool,
    fake_broker: FakeBroker,
) -> None:
    pem = issue("u1").cert_pem
    if as_csv:
        content = csv_text(["name", "pem", "token"], ["u1", pem, ""], ["u2", "", "tok-u2"])
    else:
        content = "\n" + jsonl({"name": "u1", "pem": pem}, {"name": "u2", "token": "tok-u2"})
    response = await api.post(
        URL,
        data={"comment": "a field before the file is ignored"},
        files={"file": (filename, content.encode(), content_type)},
    )
    rows, summary = results(response)
    assert [row["name"] for row in rows] == ["u1", "u2"]
    assert (summary["imported"], summary["failed"]) == (2, 0)
    assert fake_broker.changes == 1  # once per batch that imported something


@pytest.mark.parametrize(
    ("content", "headers", "status", "expected"),
    [
        ("device,cert\nx,y\n", CSV, 400, "line 1: the CSV header must name 'name'"),
        ("", CSV, 400, "the CSV is empty"),
        ('{"name": "x"}', {"content-type": "application/json"}, 415, "text/csv"),
        ("x", {"content-type": "multipart/form-data"}, 400, "without a boundary"),
        (
            "--b\r\ncontent-disposition: form-data; name=a\r\n\r\nx\r\n--b--\r\n",
            {"content-type": "multipart/form-data; boundary=b"},
            400,
            "no file part",
        ),
    ],
    ids=["bad-header", "empty-csv", "json", "no-boundary", "no-file"],
)
async def test_what_cannot_start_an_import_is_an_error_answer(
    api: httpx.AsyncClient,
    fake_broker: FakeBroker,
    content: str,
    headers: dict[str, str],
    status: int,
    expected: str,
) -> None:
    response = await api.post(URL, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert expected in response.json()["message"]
    assert fake_broker.changes == 0


async def test_an_empty_json_lines_upload_imports_nothing(api: httpx.AsyncClient) -> None:
    rows, summary = results(await api.post(URL, content=b"", headers=NDJSON))
    assert rows == []
    assert summary == {
        "summary": True,
        "imported": 0,
        "failed": 0,
        "conflicts": 0,
        "complete": True,
    }


async def test_text_that_is_not_utf8_ends_the_import_saying_where(
    api: httpx.AsyncClient,
) -> None:
    body = jsonl({"name": "ok", "token": "tok-1"}).encode() + b'{"name": "caf\xe9"}\n'
    rows, summary = results(await api.post(URL, content=body, headers=NDJSON))
    assert [row["ok"] for row in rows] == [True]
    assert summary["complete"] is False
    assert summary["error"] == "line 2: not UTF-8 text"
    assert summary["imported"] == 1


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            '{"name": ' + "[" * 100_000,
            "not valid JSON: more than 10,000 arrays and objects",
        ),
        (
            '{"name": "n", "token": ' + "9" * 5000 + "}",
            "not valid JSON: a number of 5,000 characters (at most 40 are read)",
        ),
    ],
)
async def test_json_that_python_cannot_take_is_a_bad_row(
    api: httpx.AsyncClient, line: str, error: str
) -> None:
    # Before: json.loads raised RecursionError / ValueError past the row rules: a bare 500
    # when it was the first row, a cut-off answer after that.
    for body in (jsonl(line, {"name": "after", "token": "tok-2"}),
                 jsonl({"name": "before", "token": "tok-3"}, line)):  # fmt: skip
        rows, summary = results(await api.post(URL, content=body, headers=NDJSON))
        [bad] = [row for row in rows if not row["ok"]]
        assert (bad["status"], bad["error"]) == (400, error)
        assert (summary["imported"], summary["failed"], summary["complete"]) == (1, 1, True)


async def test_needs_the_admin_token(anonymous: httpx.AsyncClient, fake_broker: FakeBroker) -> None:
    body = jsonl({"name": "x", "token": "tok-x"})
    response = await anonymous.post(URL, content=body, headers=NDJSON)
    assert response.status_code == 401
    assert fake_broker.changes == 0


async def test_the_upload_is_not_held_in_memory(api: httpx.AsyncClient) -> None:
    """40 MB of rows (each refused: its pem is not PEM) go through in a few MB of memory."""
    line = json.dumps({"name": "x", "pem": "A" * 200_000}).encode() + b"\n"
    rows = 200

    async def body() -> AsyncIterator[bytes]:
        for _ in range(rows):
            yield line

    tracemalloc.start()
    try:
        response = await api.post(URL, content=body(), headers=NDJSON)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _, summary = results(response)
    assert (summary["failed"], summary["complete"]) == (rows, True)
    assert peak < rows * len(line) / 4, f"peak {peak} bytes"


@pytest.mark.postgres
async def test_import_on_postgresql(postgres_url: str) -> None:
    await upgrade(postgres_url)
    store = await SqlCredentialStore.open(postgres_url)
    broker = FakeBroker(connected=set())
    app = create_app(AdminContext(store=store, admin_token=TOKEN, broker=broker))
    body = jsonl(
        {"name": "pg-1", "pem": issue("pg-1").cert_pem},
        {"name": "pg-2", "token": "tok-pg-2"},
        {"name": "pg-1", "token": "tok-pg-dup"},
    )
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://nanoiot.test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            rows, first = results(await client.post(URL, content=body, headers=NDJSON))
            _, again = results(await client.post(URL, content=body, headers=NDJSON))
    finally:
        await store.close()
    assert [row["ok"] for row in rows] == [True, True, False]
    assert rows[2]["status"] == 409
    assert (first["imported"], again["imported"], again["conflicts"]) == (2, 0, 3)
    assert broker.changes == 1  # once per batch that imported something
