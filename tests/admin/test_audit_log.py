"""Every admin request that may change something leaves one audit line: who (address), what
(method and path) and the answer; reads leave none, and no body is ever logged."""

import logging

import httpx
import pytest

AUDIT = "nanoiot.admin.audit"
MAX_PATH = 512  # characters of a path the audit line keeps (admin.audit)


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == AUDIT]


async def test_each_change_is_logged_with_its_address_and_answer(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    created = await api.post("/api/device", json={"name": "audited-1"})
    assert created.status_code == 200, created.text
    device = created.json()["id"]["id"]
    token = {"credentialsType": "ACCESS_TOKEN", "token": "hunter2-audit-token"}
    added = await api.post(f"/api/v1/devices/{device}/credentials", json=token)
    assert added.status_code == 201, added.text
    await api.get("/api/v1/devices")  # a read: not logged
    disabled = await api.post(f"/api/v1/devices/{device}/disable")
    assert audit_lines(caplog) == [
        "127.0.0.1 POST /api/device -> 200",
        f"127.0.0.1 POST /api/v1/devices/{device}/credentials -> 201",
        f"127.0.0.1 POST /api/v1/devices/{device}/disable -> {disabled.status_code}",
    ]
    assert "hunter2" not in caplog.text


async def test_refused_changes_are_logged_too(
    anonymous: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    await anonymous.post("/api/v1/devices", json={"name": "x"}, headers=wrong)
    assert audit_lines(caplog) == ["127.0.0.1 POST /api/v1/devices -> 401"]


async def test_a_path_cannot_forge_a_log_line(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    forged = "/api/v1/devices/x%0a127.0.0.1 DELETE /api/v1/trusted-cas/y -> 204"
    await api.post(forged)
    long = "/api/v1/devices/" + "a" * (2 * MAX_PATH)
    await api.post(long)
    lines = audit_lines(caplog)
    assert len(lines) == 2
    assert all("\n" not in line for line in lines)
    assert lines[0].startswith("127.0.0.1 POST /api/v1/devices/x%0a127.0.0.1%20DELETE")
    assert lines[1].endswith("...(cut) -> 404")
    assert len(lines[1]) < MAX_PATH + 50
