"""Helpers shared by the reference-API tests: create a device, switch its credentials,
read back their statuses, check an error body."""

from typing import Any
from uuid import UUID

import httpx

from storage.sql import SqlCredentialStore


async def create_device(
    api: httpx.AsyncClient, name: str = "meter-1", **fields: Any
) -> dict[str, Any]:
    response = await api.post("/api/device", json={"name": name, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def switch(
    api: httpx.AsyncClient, device_id: str, kind: str, *, params: Any = None, **fields: Any
) -> httpx.Response:
    body = {"deviceId": {"id": device_id}, "credentialsType": kind, **fields}
    return await api.post("/api/device/credentials", json=body, params=params)


async def statuses(store: SqlCredentialStore, device_id: str) -> list[tuple[str, str]]:
    credentials = await store.list_credentials(UUID(device_id))
    return [(c.type.value, c.status.value) for c in credentials]


def assert_problem(response: httpx.Response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["errorCode"], int)
    for phrase in phrases:
        assert phrase in body["message"]
