"""``/healthz`` for orchestrators and ``/metrics`` for Prometheus.

``/healthz`` needs no token (a container healthcheck has none) and says only whether the
broker listens, the database answers, and the broker can save session changes (a read-only
or full disk, or a lock held by another process, leaves reads working and writes failing).
``/metrics`` needs the admin token like every other read: Prometheus sends it with
``authorization: {credentials_file: ...}``.
"""

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from admin.context import context_of
from admin.security import require_admin
from nanoiot.errors import StoreError

router = APIRouter(tags=["health"])

_PING_TIMEOUT = 2.0  # a health check must answer even when the database hangs


class Health(BaseModel):
    status: str  # "ok" or "unavailable"
    broker: str  # "listening", "not listening", or "not in this process" (nanoiot api)
    database: str  # "ok", or why it cannot be reached
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
    database = "ok"
    try:
        await asyncio.wait_for(context.store.ping(), _PING_TIMEOUT)
    except StoreError as exc:
        database = str(exc)
    except TimeoutError:
        database = f"no answer within {_PING_TIMEOUT:g} s"
    sessions = "ok"
    if context.broker is None:
        broker, broker_ok = "not in this process", True
    else:
        broker_ok = context.broker.is_listening()
        broker = "listening" if broker_ok else "not listening"
        sessions = context.broker.session_store_problem() or "ok"
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
