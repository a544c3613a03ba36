"""Bulk import over HTTP, streamed both ways: rows are imported as the upload arrives, and
each row's result is sent back as one JSON line as soon as its batch is in, then a summary line.

Rows are imported in batches of what has arrived, up to ``BATCH_ROWS``
(``admin.v1_rows.arrived_batches``; certificate rows in one transaction per batch,
``nanoiot.cli.import_batch``): a bad row is reported and skipped, a good one is imported whole,
and re-sending the same file reports the rows already imported as conflicts (409). The row
rules are the CLI's (``nanoiot.cli.imports``). A problem found before the first row
(Content-Type, CSV header) is an ordinary 400/415 answer; after that the answer is 200 and
problems are reported in the stream. A client that reads the answer only once it has sent the
whole file gets it too: up to ``http_import_max_unsent_bytes`` of answer wait for it meanwhile,
and a row is at most ``http_import_max_row_bytes``.
"""

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Query, Request
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from admin.context import AdminContext, context_of
from admin.v1_models import ImportRowResult, ImportSummary, errors, for_api, unsupported
from admin.v1_rows import Rows, arrived_batches, csv_rows, json_rows, numbered_lines, sniffed_rows
from admin.v1_upload import uploaded_file
from admin.wire_types import JSON_BOOLEAN
from nanoiot.cli.import_batch import Row, RowOutcome, import_batch
from nanoiot.cli.imports import BATCH_ROWS
from nanoiot.errors import (
    ConflictError,
    NanoIoTError,
    NotFoundError,
    StoreUnavailableError,
    ValidationError,
)
from nanoiot.tasks import cancel_and_wait

log = logging.getLogger(__name__)
router = APIRouter(tags=["bulk import (v1)"])

_CSV = "text/csv"
_JSON_LINES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
_FORM = "multipart/form-data"
_TEXT = {"schema": {"type": "string"}}
_BODY = {
    _CSV: {**_TEXT, "example": "name,token\nmeter-1,tok-0001\n"},
    _JSON_LINES[0]: {**_TEXT, "example": '{"name": "meter-1", "pem": "-----BEGIN ..."}\n'},
    _FORM: {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        }
    },
}

# The body is text (schema: string) made of JSON lines, each described by itemSchema (the
# OpenAPI 3.2 keyword for sequential media, which FastAPI uses for its own JSON lines too).
_ANSWER = {
    "application/x-ndjson": {
        "itemSchema": {
            "oneOf": [
                ImportRowResult.model_json_schema(by_alias=True),
                ImportSummary.model_json_schema(by_alias=True),
            ]
        }
    }
}


class RowResultsResponse(StreamingResponse):
    """JSON lines sent while the request body is still being read.

    The body iterator reads the request (``receive``) itself. Starlette's StreamingResponse
    would also listen on ``receive`` for a disconnect (servers before ASGI 2.4 spec), taking
    body chunks away from the import; here a disconnect reaches the import as
    ClientDisconnect instead.
    """

    media_type = "application/x-ndjson"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream_response(send)


@router.post(
    "/devices/import",
    summary="Import devices from CSV or JSON lines, streamed",
    description="Columns (CSV header or JSON keys): name, and pem (the certificate text) or "
    "token; optional type and label. Send the file as the body (text/csv or "
    "application/x-ndjson) or as the file of a multipart/form-data upload. The answer is "
    "one JSON line per row as soon as it is imported ({line, name, ok, deviceId} or {line, "
    "ok: false, status, error}), then {summary: true, imported, failed, conflicts, complete}.",
    response_class=RowResultsResponse,
    responses={
        200: {"description": "One JSON line per row, then the summary", "content": _ANSWER},
        **errors(400, 415),
    },
    openapi_extra={"requestBody": {"required": True, "content": _BODY}},
)
async def import_devices(
    request: Request,
    allow_expired: Annotated[
        bool,
        Query(alias="allowExpired", description="Also register expired certificates."),
        JSON_BOOLEAN,
    ] = False,
) -> Response:
    context = context_of(request)
    try:
        rows = await _started(await _rows_of(request, context.limits.import_max_row_bytes))
    except ClientDisconnect:
        return Response(status_code=400)  # gone before the first row: nobody reads this
    results = _results(context, rows, allow_expired=allow_expired)
    return RowResultsResponse(
        _sent_as_read(results, context.limits.import_max_unsent_bytes),
        # A proxy that buffers answers would hold every result back until the end.
        headers={"X-Accel-Buffering": "no"},
    )


async def _sent_as_read(results: AsyncIterator[bytes], unsent: int) -> AsyncIterator[bytes]:
    """``results``, produced by a task of their own: the import goes on while the client is
    not reading the answer, up to ``unsent`` bytes of it (``http_import_max_unsent_bytes``).

    httpx and requests send the whole body before they read a byte of the answer; without
    room for it, the import would stop once the sockets' buffers are full and never read the
    rest of the upload. 64 MiB, the default, is some 500,000 rows' results; past it, the
    import waits for the client."""
    outbox = _Outbox(unsent)
    producer = asyncio.create_task(outbox.fill(results))
    try:
        while chunk := await outbox.take():
            yield chunk
        await producer  # raises what the import raised
    finally:
        await cancel_and_wait(producer)


class _Outbox:
    """Answer chunks between the import and the client, at most ``limit`` bytes held."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._changed = asyncio.Condition()

    async def fill(self, results: AsyncIterator[bytes]) -> None:
        told = False
        try:
            async for chunk in results:
                async with self._changed:
                    if self._size >= self._limit and not told:
                        told = True  # once an import: a slow reader is no fault
                        log.debug("bulk import: %d bytes of answer unread, the import waits for "
                                  "the client to read", self._size)  # fmt: skip
                    await self._changed.wait_for(lambda: self._size < self._limit)
                    self._chunks.append(chunk)
                    self._size += len(chunk)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._done = True
                self._changed.notify_all()

    async def take(self) -> bytes:
        """All that is waiting, as one chunk; b"" once the import is done and all is taken."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._chunks or self._done)
            chunk = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            self._changed.notify_all()
            return chunk


async def _rows_of(request: Request, max_row: int) -> Rows:
    raw_type, params = parse_options_header(request.headers.get("content-type"))
    media_type = raw_type.decode("latin-1").lower()
    if media_type == _FORM:
        boundary = params.get(b"boundary")
        if not boundary:
            raise ValidationError("multipart/form-data without a boundary parameter")
        upload = await uploaded_file(request.stream(), boundary.decode("latin-1"))
        lines = numbered_lines(upload.chunks, max_row)
        suffix = PurePath(upload.filename).suffix.lower()
        if upload.content_type in _JSON_LINES or suffix in (".jsonl", ".ndjson", ".json"):
            return json_rows(lines)
        if upload.content_type == _CSV or suffix == ".csv":
            return csv_rows(lines, max_row)
        return sniffed_rows(lines, max_row)
    if media_type == _CSV:
        return csv_rows(numbered_lines(request.stream(), max_row), max_row)
    if media_type in _JSON_LINES:
        return json_rows(numbered_lines(request.stream(), max_row))
    raise unsupported(media_type, [_CSV, *_JSON_LINES, _FORM])


async def _started(rows: Rows) -> Rows:
    """``rows`` with the first one read already, so a bad header is a 400 answer and not a
    line in a 200 stream."""
    first = await anext(rows, None)

    async def all_rows() -> Rows:
        if first is None:
            return
        yield first
        async for row in rows:
            yield row

    return all_rows()


async def _results(
    context: AdminContext, rows: Rows, *, allow_expired: bool
) -> AsyncIterator[bytes]:
    tally = ImportSummary(imported=0, failed=0, conflicts=0, complete=True)
    try:
        async for batch in arrived_batches(rows, BATCH_ROWS):
            given = [(line, _over_the_api(row)) for line, row in batch]
            outcomes = await import_batch(context.store, given, allow_expired=allow_expired)
            pairs = zip(batch, outcomes, strict=True)
            results = [_result(line, row, outcome) for (line, row), (_, outcome) in pairs]
            imported = sum(result.ok for result in results)
            if imported:
                context.changed()
            tally.imported += imported
            tally.failed += len(results) - imported
            tally.conflicts += sum(result.status == 409 for result in results)
            yield b"".join(_json_line(result) for result in results)
    except ClientDisconnect:
        return  # nobody left to tell; the rows imported so far stay imported
    except NanoIoTError as exc:
        tally.complete, tally.error = False, str(exc)
    yield _json_line(tally)


def _over_the_api(row: Row) -> Row:
    if isinstance(row, dict) and "pem_file" in row:
        return (
            "pem_file names a file on the importing machine: over the API, put the "
            "certificate itself in pem"
        )
    return row


def _result(line: int, row: Row, outcome: RowOutcome) -> ImportRowResult:
    if isinstance(outcome, NanoIoTError):
        name = row.get("name") if isinstance(row, dict) else None
        return ImportRowResult(
            line=line, name=name, ok=False, status=_status_of(outcome), error=for_api(str(outcome))
        )
    device, credential = outcome
    return ImportRowResult(
        line=line, name=device.name, ok=True, device_id=device.id, credential_id=credential.id
    )


def _status_of(error: NanoIoTError) -> int:
    """The HTTP status ``admin.problems`` gives the same error on a single-device route."""
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, StoreUnavailableError):
        return 503
    return 400


def _json_line(result: ImportRowResult | ImportSummary) -> bytes:
    return result.model_dump_json(exclude_none=True).encode() + b"\n"
