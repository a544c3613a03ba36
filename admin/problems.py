"""Errors as JSON, shaped like the reference system's: ``{status, message, errorCode}``.

Our exceptions are mapped here, at the HTTP boundary, and nowhere else: a bad PEM or a value
the store refuses is 400, an unknown device 404, a duplicate 409, an unreachable database 503.
The message is the exception's one-line text, written for the operator.
"""

from collections.abc import Awaitable, Callable
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanoiot.errors import (
    ConflictError,
    CredentialError,
    NotFoundError,
    StoreUnavailableError,
    ValidationError,
)

# The reference system's error codes, so its clients' handling carries over.
_ERROR_CODES = {400: 31, 401: 10, 403: 20, 404: 32, 409: 31, 429: 33}


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


def _handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return problem(status, str(exc))

    return handle


async def _http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, detail, dict(exc.headers) if exc.headers else None)


async def _request_invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return problem(400, "Invalid request: " + "; ".join(parts))
