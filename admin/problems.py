"""Errors as JSON, shaped like the reference system's: ``{status, message, errorCode}``.

Our exceptions are mapped here, at the HTTP boundary, and nowhere else: a bad PEM or a value
the store refuses is 400, an unknown device 404, a duplicate 409, an unreachable database 503.
The message is the exception's one-line text, written for the operator.
"""

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from admin.failures import INTERNAL_ERROR
from admin.security import refusal
from nanoiot.errors import (
    ConflictError,
    CredentialError,
    NotFoundError,
    StoreUnavailableError,
    ValidationError,
)

# The reference system's error codes, so its clients' handling carries over.
_ERROR_CODES = {400: 31, 401: 10, 403: 20, 404: 32, 409: 31, 429: 33}


class Problem(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(populate_by_name=True)

    status: int
    message: str
    error_code: int = Field(alias="errorCode")


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"status": status, "message": message, "errorCode": _ERROR_CODES.get(status, 2)}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn our errors into ``problem`` responses."""
    mapping: list[tuple[type[Exception], int]] = [
        (CredentialError, 400),
        (ValidationError, 400),
        (NotFoundError, 404),
        (ConflictError, 409),
        (StoreUnavailableError, 503),
    ]
    for exc_type, status in mapping:
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    # Anything else is our fault: a problem body like every other error, no traceback (it is
    # logged by admin.failures, around the application, with the request it failed).
    app.add_exception_handler(Exception, _unexpected)
    _document(app)


def _handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return problem(status, str(exc))

    return handle


async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
    return problem(500, INTERNAL_ERROR)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code not in _BEFORE_OR_FROM_THE_TOKEN:
        # A body FastAPI could not read is refused before the token is looked at.
        exc = refusal(request) or exc
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem(exc.status_code, detail, headers or None)


# Routing (404, 405) answers before the token is checked, and 401 and 429 come from checking it.
_BEFORE_OR_FROM_THE_TOKEN = frozenset({401, 404, 405, 429})


def _allowed_methods(request: Request) -> str:
    """RFC 9110 §15.5.6: Allow lists every method of the resource. Starlette names only those
    of the first route that matched the path, and each method is a route of its own here."""
    methods: set[str] = set()
    path = request.scope["path"]
    for route in iter_route_contexts(request.app.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = refusal(request)  # the token first, also when the body could not be read
    if refused is not None:
        return await _http_exception(request, refused)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return problem(400, "Invalid request: " + "; ".join(parts))


# --- the OpenAPI schema says what the handlers above really answer ---------------------------

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_ADMIN_ERRORS: dict[str, dict[str, Any]] = {
    "401": {"description": "The admin token is missing or not valid"},
    "429": {
        "description": "Too many failed sign-in attempts from this address",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        },
    },
    "503": {"description": "The database cannot be reached"},
}


def _document(app: FastAPI) -> None:
    """Make ``app.openapi()`` list the errors as they are sent: invalid input is 400 (FastAPI
    documents 422), and every operation behind the admin token can answer 401, 429 and 503."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # cached by FastAPI after the first call; the edits are idempotent
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("Problem", Problem.model_json_schema(by_alias=True))
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    _document_operation(operation)
        _drop_unused(components, ("HTTPValidationError", "ValidationError"))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    if "422" in responses:
        del responses["422"]
        responses.setdefault("400", {"description": "Invalid request"})
    extra = _ADMIN_ERRORS if operation.get("security") else {}
    for status, entry in extra.items():
        responses.setdefault(status, dict(entry))
    for status, entry in responses.items():
        if status[0] in "45" and "content" not in entry:
            entry["content"] = {"application/json": {"schema": _PROBLEM_REF}}


def _drop_unused(components: dict[str, Any], names: tuple[str, ...]) -> None:
    """FastAPI's 422 body schemas, once no response refers to them any more."""
    for name in names:
        others = {key: value for key, value in components.items() if key != name}
        if name in components and f"/schemas/{name}" not in json.dumps(others):
            del components[name]
