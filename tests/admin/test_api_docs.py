"""/docs is served from this installation, under a Content-Security-Policy: no CDN.

Before, the page loaded Swagger UI's script and style from a CDN: blank without internet
access, and run without Subresource Integrity on the page where the token is pasted. (The
page in a real browser, offline: tests/e2e/test_web_ui_browser.py.)
"""

import re

import httpx

from admin.app import create_app
from admin.context import AdminContext

_REFERENCES = re.compile(r'(?:src|href)="([^"]+)"')


async def test_the_docs_page_and_everything_it_loads_come_from_this_server(
    anonymous: httpx.AsyncClient,
) -> None:
    page = await anonymous.get("/docs")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "default-src 'none'" in policy
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    references = _REFERENCES.findall(page.text)
    assert len(references) == 4  # style, icon, Swagger UI, its start-up script
    for reference in references:
        assert reference.startswith("/docs/"), reference  # same origin, no CDN
        asset = await anonymous.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 100
    assert 'data-openapi="/openapi.json"' in page.text


async def test_the_schema_stays_public_and_holds_no_data(context: AdminContext) -> None:
    transport = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=transport, base_url="http://nanoiot.test") as client:
        schema = await client.get("/openapi.json")
    assert schema.status_code == 200
    assert set(schema.json()) >= {"openapi", "info", "paths", "components"}
