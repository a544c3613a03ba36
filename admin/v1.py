"""``/api/v1``: what the admin API offers beyond the reference system's endpoints.

Several credentials per device (rotation), enabling and disabling devices and credentials,
trusted CAs with their CRLs, the authentication history, and a streamed bulk import. Routes
live in ``v1_credentials``, ``v1_cas`` and ``v1_import``; their JSON shapes in ``v1_models``.
Errors are ``admin.problems``'s: 400 bad input, 404 unknown id, 409 already registered.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request

from admin import v1_cas, v1_credentials, v1_import
from admin.context import context_of
from admin.v1_models import AuthEventV1, errors
from admin.wire_types import JSON_INTEGER, Uuid
from storage.records import AuthOutcome

router = APIRouter(prefix="/api/v1")
router.include_router(v1_credentials.router)
router.include_router(v1_cas.router)
router.include_router(v1_import.router)


@router.get(
    "/auth-events",
    tags=["auth events (v1)"],
    summary="The authentication history, newest first",
    description="Every connect attempt the broker decided: allowed, denied (with the reason "
    "a device was refused) or error. The events of a deleted device are kept.",
    response_model=list[AuthEventV1],
    responses=errors(400),
)
async def list_auth_events(
    request: Request,
    device_id: Annotated[Uuid | None, Query(alias="deviceId")] = None,
    outcome: AuthOutcome | None = None,
    limit: Annotated[int, Query(ge=1, le=1000), JSON_INTEGER] = 100,
) -> list[AuthEventV1]:
    events = await context_of(request).store.list_auth_events(
        device_id=device_id, outcome=outcome, limit=limit
    )
    return [AuthEventV1.of(event) for event in events]
