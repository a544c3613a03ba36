"""Signing in and out of the web UI, over HTTP against the real application."""

import httpx
import pytest

from admin.app import create_app
from admin.context import AdminContext
from admin.live_sessions import LiveSessions
from admin.ratelimit import MAX_FAILURES
from admin.web.session import LOGIN_COOKIE, SESSION_COOKIE
from tests.admin.conftest import TOKEN
from tests.admin.web.conftest import BASE, csrf_of, post_form, sign_in


async def test_root_and_ui_lead_to_the_devices_page(visitor: httpx.AsyncClient) -> None:
    for path in ("/", "/ui", "/ui/"):
        response = await visitor.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/devices"


@pytest.mark.parametrize(
    "path",
    ["/ui/devices", "/ui/cas", "/ui/devices/01a21be1-6f5b-73de-bd92-1a81090e67a3"],
)
async def test_pages_redirect_to_sign_in_without_a_session(
    visitor: httpx.AsyncClient, path: str
) -> None:
    response = await visitor.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/login?next={path}"


async def test_a_forged_cookie_is_no_session(visitor: httpx.AsyncClient) -> None:
    visitor.cookies.set(SESSION_COOKIE, "9999999999.nonce.deadbeef", path="/ui")
    response = await visitor.get("/ui/devices")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")


async def test_signing_in_sets_a_strict_http_only_cookie(visitor: httpx.AsyncClient) -> None:
    form = await visitor.get("/ui/login?next=/ui/cas")
    assert form.status_code == 200
    assert 'name="next" value="/ui/cas"' in form.text
    response = await visitor.post(
        "/ui/login", data={"csrf_token": csrf_of(form.text), "token": TOKEN, "next": "/ui/cas"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/cas"
    cookie = _set_cookie(response, SESSION_COOKIE)
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert (await visitor.get("/ui/cas")).status_code == 200


async def test_over_https_the_cookie_is_secure(context: AdminContext) -> None:
    transport = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=transport, base_url="https://nanoiot.test") as client:
        response = await sign_in(client)
    assert response.status_code == 303
    assert "Secure" in _set_cookie(response, SESSION_COOKIE)


async def test_a_wrong_token_shows_an_error_and_sets_no_session(
    visitor: httpx.AsyncClient, context: AdminContext
) -> None:
    response = await sign_in(visitor, token="not-the-token")
    assert response.status_code == 401
    assert "The admin token is not valid." in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert context.limiter.retry_after("127.0.0.1") is None  # one failure: not limited yet
    assert (await visitor.get("/ui/devices")).status_code == 303


async def test_too_many_failures_are_refused_with_429_like_the_api(
    visitor: httpx.AsyncClient, context: AdminContext
) -> None:
    for _ in range(MAX_FAILURES):
        assert (await sign_in(visitor, token="guess")).status_code == 401
    refused = await sign_in(visitor)  # even the right token, while limited
    assert refused.status_code == 429
    assert "Too many failed sign-in attempts" in refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"].startswith("text/html")
    assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
    api = await visitor.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status_code == 429  # one count for both surfaces


async def test_sign_in_without_its_form_token_is_refused_and_not_counted(
    visitor: httpx.AsyncClient, context: AdminContext
) -> None:
    await visitor.get("/ui/login")  # the browser has its pre-sign-in cookie
    for csrf in ("", "0" * 64):
        response = await visitor.post(
            "/ui/login", data={"csrf_token": csrf, "token": TOKEN, "next": ""}
        )
        assert response.status_code == 403
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    other_browser = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=other_browser, base_url=BASE) as other:
        form = await other.get("/ui/login")
        stolen = csrf_of(form.text)  # valid for the other browser's nonce only
    response = await visitor.post("/ui/login", data={"csrf_token": stolen, "token": TOKEN})
    assert response.status_code == 403
    assert (await visitor.get("/ui/devices")).status_code == 303
    assert LOGIN_COOKIE in visitor.cookies


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/api/device"])
async def test_after_sign_in_only_pages_of_the_ui_are_followed(
    visitor: httpx.AsyncClient, target: str
) -> None:
    form = await visitor.get("/ui/login", params={"next": target})
    assert 'name="next" value="/ui/devices"' in form.text
    response = await visitor.post(
        "/ui/login", data={"csrf_token": csrf_of(form.text), "token": TOKEN, "next": target}
    )
    assert response.headers["location"] == "/ui/devices"


async def test_the_sign_in_page_of_a_signed_in_browser_goes_on(ui: httpx.AsyncClient) -> None:
    response = await ui.get("/ui/login?next=/ui/cas")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/cas"


async def test_signing_out_ends_the_session(ui: httpx.AsyncClient) -> None:
    response = await post_form(ui, "/ui/devices", "/ui/logout", {})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?done=signed-out"
    assert 'nanoiot_session=""' in _set_cookie(response, SESSION_COOKIE)
    assert (await ui.get("/ui/devices")).status_code == 303
    shown = await ui.get(response.headers["location"])
    assert "You have signed out." in shown.text


async def test_signing_out_needs_the_form_token(ui: httpx.AsyncClient) -> None:
    response = await ui.post("/ui/logout", data={"csrf_token": "forged"})
    assert response.status_code == 403
    assert (await ui.get("/ui/devices")).status_code == 200


async def test_the_rest_api_does_not_take_the_session_cookie(ui: httpx.AsyncClient) -> None:
    cookie = ui.cookies[SESSION_COOKIE]
    for path in ("/metrics", "/api/tenant/devices?pageSize=10&page=0"):
        response = await ui.get(path, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
        assert response.status_code == 401, path


async def test_a_new_admin_token_signs_every_browser_out(
    ui: httpx.AsyncClient, context: AdminContext
) -> None:
    assert (await ui.get("/ui/devices")).status_code == 200
    context.admin_token = TOKEN + "-rotated"
    assert (await ui.get("/ui/devices")).status_code == 303


async def test_pages_carry_security_headers(ui: httpx.AsyncClient) -> None:
    response = await ui.get("/ui/devices")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


async def test_static_files_are_served_without_a_session(visitor: httpx.AsyncClient) -> None:
    response = await visitor.get("/ui/static/nanoiot.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


def _set_cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers}")


async def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(
    ui: httpx.AsyncClient, context: AdminContext
) -> None:
    cookie = ui.cookies[SESSION_COOKIE]
    signed_out = await post_form(ui, "/ui/devices", "/ui/logout", {})
    assert signed_out.status_code == 303
    # An attacker kept a copy of the cookie (a shared machine, a stolen backup): before, it
    # stayed valid for its whole 12 hours.
    replay = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=replay, base_url=BASE) as copy:
        copy.cookies.set(SESSION_COOKIE, cookie, path="/ui")
        response = await copy.get("/ui/devices")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")


async def test_a_new_admin_token_ends_every_session(
    ui: httpx.AsyncClient, context: AdminContext
) -> None:
    cookie = ui.cookies[SESSION_COOKIE]
    assert (await ui.get("/ui/devices")).status_code == 200
    changed = AdminContext(store=context.store, admin_token="a-new-admin-token-0123456789")
    changed.web_sessions = context.web_sessions
    transport = httpx.ASGITransport(app=create_app(changed))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as browser:
        browser.cookies.set(SESSION_COOKIE, cookie, path="/ui")
        response = await browser.get("/ui/devices")
    assert response.status_code == 303


async def test_live_sessions_are_bounded() -> None:
    live = LiveSessions(limit=3)
    for n in range(10):
        live.add(f"nonce-{n}", expires_at=2_000_000_000, now=1_000_000_000)
    assert "nonce-9" in live
    assert "nonce-6" not in live  # the oldest were signed out
