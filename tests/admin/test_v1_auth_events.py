"""/api/v1/auth-events: the authentication history, filtered, newest first."""

import httpx
import pytest

from storage.records import AuthOutcome
from storage.sql import SqlCredentialStore


@pytest.fixture
async def history(store: SqlCredentialStore) -> dict[str, str]:
    """Four events, oldest first: two of meter-1, one of an unknown key, one of meter-2."""
    one = await store.create_device("meter-1")
    two = await store.create_device("meter-2")
    await store.record_auth_event(
        outcome=AuthOutcome.ALLOWED, reason="ok", device_id=one.id, remote_address="10.0.0.1"
    )
    await store.record_auth_event(
        outcome=AuthOutcome.DENIED, reason="unknown certificate key", fingerprint="ab" * 32
    )
    await store.record_auth_event(
        outcome=AuthOutcome.DENIED, reason="device is disabled", device_id=one.id
    )
    await store.record_auth_event(outcome=AuthOutcome.ERROR, reason="store down", device_id=two.id)
    return {"one": str(one.id), "two": str(two.id)}


async def test_newest_first(api: httpx.AsyncClient, history: dict[str, str]) -> None:
    response = await api.get("/api/v1/auth-events")
    assert response.status_code == 200
    events = response.json()
    assert [e["reason"] for e in events] == [
        "store down",
        "device is disabled",
        "unknown certificate key",
        "ok",
    ]
    oldest = events[-1]
    assert oldest["deviceId"] == history["one"]
    assert oldest["outcome"] == "allowed"
    assert oldest["remoteAddress"] == "10.0.0.1"
    assert isinstance(oldest["createdTime"], int)
    assert events[2]["spkiSha256"] == "ab" * 32
    assert events[2]["deviceId"] is None


async def test_filters_and_limit(api: httpx.AsyncClient, history: dict[str, str]) -> None:
    by_device = await api.get("/api/v1/auth-events", params={"deviceId": history["one"]})
    assert [e["reason"] for e in by_device.json()] == ["device is disabled", "ok"]
    denied = await api.get("/api/v1/auth-events", params={"outcome": "denied"})
    assert [e["reason"] for e in denied.json()] == ["device is disabled", "unknown certificate key"]
    both = await api.get(
        "/api/v1/auth-events", params={"deviceId": history["one"], "outcome": "allowed"}
    )
    assert [e["reason"] for e in both.json()] == ["ok"]
    limited = await api.get("/api/v1/auth-events", params={"limit": 2})
    assert [e["reason"] for e in limited.json()] == ["store down", "device is disabled"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"outcome": "refused"}, "outcome"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"deviceId": "meter-1"}, "deviceId"),
    ],
)
async def test_bad_filters_are_400(
    api: httpx.AsyncClient, params: dict[str, str | int], expected: str
) -> None:
    response = await api.get("/api/v1/auth-events", params=params)
    assert response.status_code == 400
    assert expected in response.json()["message"]


async def test_needs_the_admin_token(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/api/v1/auth-events")).status_code == 401
