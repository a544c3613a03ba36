"""Web UI fixtures: the real application over a real store, driven by httpx in-process.

``ui`` is a browser that has signed in (it keeps the session cookie); ``visitor`` has not.
Redirects are not followed, so tests see each 303 of POST-redirect-GET.
"""

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from admin.app import create_app
from admin.context import AdminContext
from tests.admin.conftest import TOKEN

BASE = "http://nanoiot.test"
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the page's forms (every form of a page carries the same one)."""
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token on the page"
    assert found.group(1), "an empty CSRF token on the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await client.get("/ui/login")
    return await client.post(
        "/ui/login", data={"csrf_token": csrf_of(form.text), "token": token, "next": ""}
    )


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, str]
) -> httpx.Response:
    """Open ``page`` and submit a form to ``action`` with its CSRF token, as a browser does."""
    opened = await client.get(page)
    assert opened.status_code == 200, opened.text
    return await client.post(action, data={"csrf_token": csrf_of(opened.text), **data})


@pytest.fixture
async def visitor(context: AdminContext) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


@pytest.fixture
async def ui(visitor: httpx.AsyncClient) -> httpx.AsyncClient:
    signed_in = await sign_in(visitor)
    assert signed_in.status_code == 303
    return visitor
