"""``/healthz`` for orchestrators and ``/metrics`` for Prometheus.

``/healthz`` needs no token (a container healthcheck has none) and says only whether the
broker listens, the database answers, and the broker can save session changes (a read-only
or full disk, or a lock held by another process, leaves reads working and writes failing).
Why the database cannot be used is the driver's text: it names the database's host,
address, port, user and database (or the SQLite file's path). Anyone who reaches the port
may ask ``/healthz``, so that text is shown only to a request with the admin token, checked
and counted as on every other route; the others get what failed, not the details.
``/metrics`` needs the admin token like every other read: Prometheus sends it with
``authorization: {credentials_file: ...}``.
"""

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from admin.context import context_of
from admin.security import presented_token, require_admin, token_refusal
from nanoiot.errors import StoreError

router = APIRouter(tags=["health"])

_PING_TIMEOUT = 2.0  # a health check must answer even when the database hangs
_ASK = "the admin token shows why"
_SESSIONS_WAIT = "acknowledgements wait: session changes cannot be saved"


class Health(BaseModel):
    status: str  # "ok" or "unavailable"
    broker: str  # "listening", "not listening", or "not in this process" (nanoiot api)
    database: str  # "ok", or what fails (why, with the admin token)
    # "ok", or why the broker cannot save session changes (its PUBACKs wait meanwhile)
    sessions: str = "ok"


@router.get(
    "/healthz",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "The broker or the database is down, or the "
            "broker cannot save session changes",
        }
    },
    summary="Is the broker listening, the database reachable and writable?",
)
async def healthz(request: Request) -> JSONResponse:
    context = context_of(request)
    detailed = presented_token(request) is not None and token_refusal(request) is None
    database = "ok"
    try:
        await asyncio.wait_for(context.store.ping(), _PING_TIMEOUT)
    except StoreError as exc:
        database = str(exc) if detailed else f"cannot be used ({_ASK})"
    except TimeoutError:
        database = f"no answer within {_PING_TIMEOUT:g} s"
    sessions = "ok"
    if context.broker is None:
        broker, broker_ok = "not in this process", True
    else:
        broker_ok = context.broker.is_listening()
        broker = "listening" if broker_ok else "not listening"
        problem = context.broker.session_store_problem()
        if problem:
            sessions = problem if detailed else f"{_SESSIONS_WAIT} ({_ASK})"
    healthy = broker_ok and database == "ok" and sessions == "ok"
    body = Health(
        status="ok" if healthy else "unavailable", broker=broker, database=database,
        sessions=sessions,
    )  # fmt: skip
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


@router.get(
    "/metrics",
    dependencies=[Depends(require_admin)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    summary="Broker metrics in Prometheus text format",
)
async def metrics(request: Request) -> Response:
    registry = context_of(request).metrics
    # Under `nanoiot api` there is no broker here; its metrics are on the broker nodes.
    body = generate_latest(registry) if registry is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
