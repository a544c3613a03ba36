"""Every admin HTTP response carries the security headers (``admin.headers``): the JSON API,
errors (401, 404, 413, 400), health, metrics, static files and the streamed import, not only
the web UI's pages; a page's own policy (the UI's, /docs') is kept, not overwritten."""

import httpx
import pytest

from tests.admin.conftest import TOKEN
from tests.admin.reference_helpers import create_device

JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"


def assert_secured(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff", response.request.url
    assert headers["cache-control"] == "no-store", response.request.url
    assert headers["x-frame-options"] == "DENY", response.request.url
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    for name in ("x-content-type-options", "cache-control", "content-security-policy"):
        assert len(headers.get_list(name)) == 1, (name, response.request.url)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/tenant/devices", 200),
        ("GET", "/api/v1/trusted-cas", 200),
        ("GET", "/api/device/00000000-0000-0000-0000-000000000000", 404),
        ("GET", "/no/such/route", 404),
        ("POST", "/api/device", 400),
        ("GET", "/healthz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/ui/static/nanoiot.css", 200),
    ],
)
async def test_every_kind_of_answer_has_the_headers(
    api: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await api.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == status, response.text
    assert_secured(response)
    if response.headers["content-type"].startswith("application/json"):
        assert response.headers["content-security-policy"] == JSON_POLICY


async def test_refusals_before_any_route_have_them_too(
    anonymous: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    assert_secured(await anonymous.get("/api/tenant/devices"))  # 401, no token
    too_large = await api.post("/api/device", content=b"x" * (2 << 20))
    assert too_large.status_code == 413
    assert_secured(too_large)


async def test_an_answer_carrying_a_token_is_never_cached(api: httpx.AsyncClient) -> None:
    device = await create_device(api, "pump-1")
    url = f"/api/v1/devices/{device['id']['id']}/credentials"
    created = await api.post(url, json={"credentialsType": "ACCESS_TOKEN"})
    assert created.status_code == 201
    assert created.json()["token"]
    assert_secured(created)


async def test_the_streamed_import_has_them(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/devices/import",
        content=b"name,token\nm-1,tok-0123456789\n",
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 200
    assert_secured(response)


async def test_pages_keep_their_own_policy(anonymous: httpx.AsyncClient) -> None:
    for path, policy in (("/ui/login", "form-action 'self'"), ("/docs", "'unsafe-inline'")):
        response = await anonymous.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, path
        assert_secured(response)
        assert policy in response.headers["content-security-policy"]
