"""Every form POST needs the session's CSRF token: without it, or with another, 403 and no
change. The token is the one a page of this session carries."""

import httpx
import pytest

from admin.app import create_app
from admin.context import AdminContext
from auth.certificate import parse_credential
from storage.sql import SqlCredentialStore
from tests.admin.conftest import TOKEN, FakeBroker
from tests.admin.web.conftest import csrf_of, sign_in
from tests.certgen import issue


async def _state(store: SqlCredentialStore) -> tuple[object, ...]:
    devices = (await store.list_devices()).items
    credentials = [c for d in devices for c in await store.list_credentials(d.id)]
    return devices, tuple(credentials), tuple(await store.list_trusted_cas())


@pytest.fixture
async def forms(store: SqlCredentialStore) -> list[tuple[str, dict[str, str]]]:
    """One POST of each kind, with the fields a real submission would have."""
    device, _ = await store.create_device_with_credential(
        "target", x509=parse_credential(issue("target").cert_pem)
    )
    ca = await store.add_trusted_ca("ca", parse_credential(issue("ca", ca=True).cert_pem))
    return [
        ("/ui/devices", {"name": "new-device"}),
        (f"/ui/devices/{device.id}/credentials", {"credentials_type": "ACCESS_TOKEN"}),
        (f"/ui/devices/{device.id}/enabled", {"enabled": "no"}),
        (f"/ui/devices/{device.id}/delete", {}),
        ("/ui/cas", {"name": "other", "pem": issue("other", ca=True).cert_pem}),
        (f"/ui/cas/{ca.id}/crl", {"clear": "yes"}),
        (f"/ui/cas/{ca.id}/delete", {}),
        ("/ui/logout", {}),
    ]


@pytest.mark.parametrize("csrf", [None, "", "forged-token"], ids=["missing", "empty", "wrong"])
async def test_posts_without_the_session_token_change_nothing(
    ui: httpx.AsyncClient,
    store: SqlCredentialStore,
    fake_broker: FakeBroker,
    forms: list[tuple[str, dict[str, str]]],
    csrf: str | None,
) -> None:
    before = await _state(store)
    for action, data in forms:
        body = data if csrf is None else {"csrf_token": csrf, **data}
        response = await ui.post(action, data=body)
        assert response.status_code == 403, action
        assert "did not come from this site" in response.text
    assert await _state(store) == before
    assert fake_broker.changes == 0
    assert (await ui.get("/ui/devices")).status_code == 200  # still signed in


async def test_another_sessions_token_is_refused(
    ui: httpx.AsyncClient, context: AdminContext, store: SqlCredentialStore
) -> None:
    transport = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=transport, base_url="http://nanoiot.test") as other:
        await sign_in(other, TOKEN)
        theirs = csrf_of((await other.get("/ui/devices")).text)
    response = await ui.post("/ui/devices", data={"csrf_token": theirs, "name": "sneaky"})
    assert response.status_code == 403
    assert (await store.list_devices()).total == 0


async def test_a_post_without_a_session_is_sent_to_sign_in(
    visitor: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    response = await visitor.post("/ui/devices", data={"csrf_token": "x", "name": "anon"})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")
    assert (await store.list_devices()).total == 0


async def test_the_pages_token_is_accepted(
    ui: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    """The control: the same POST with the page's token goes through."""
    token = csrf_of((await ui.get("/ui/devices")).text)
    response = await ui.post("/ui/devices", data={"csrf_token": token, "name": "welcome"})
    assert response.status_code == 303
    assert (await store.get_device_by_name("welcome")).name == "welcome"
