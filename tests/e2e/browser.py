"""What the browser tests of the web UI (``test_web_ui_browser*``) share: Debian's Chromium
driven by Playwright, a page that fails its test on any console error or failed load, a running
node with its keys, and screenshots kept in ``tests/artifacts/web-ui/`` (git-ignored) for a
person to look at."""

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Response,
    sync_playwright,
)

from tests.e2e.harness import WAIT, BrokerThread
from tests.e2e.interop import DeviceKeys, Keys, make_keys, running_broker

DEVICE = "greenhouse-7"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "web-ui"
TIMEOUT_MS = WAIT * 1000


@pytest.fixture(scope="module", name="keys")
def keys_fixture(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("web-ui-keys"))


@pytest.fixture(scope="module", name="device_keys")
def device_keys_fixture(keys: Keys) -> DeviceKeys:
    return keys.device(DEVICE)


@pytest.fixture(name="node")
def node_fixture(keys: Keys, tmp_path: Path) -> Iterator[BrokerThread]:
    with running_broker(keys, tmp_path / "data") as broker:
        yield broker


def require_chromium(chromium: Path, environ: Mapping[str, str]) -> None:
    """Chromium missing: a skip on a developer's machine, as for the other real peers, but a
    failure under CI (``CI`` set; ``.ci/run`` sets it and installs Chromium), where this flow
    must be tested."""
    if chromium.exists():
        return
    message = f"{chromium} is missing: apt-get install chromium (.ci/run does)"
    if environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so the browser tests must run", pytrace=False)
    pytest.skip(f"{message} (set CI=1 to make this a failure)")


@pytest.fixture(scope="module", name="playwright")
def playwright_fixture() -> Iterator[Playwright]:
    require_chromium(CHROMIUM, os.environ)
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="module", name="browser")
def browser_fixture(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(name="page")
def page_fixture(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # CSP violations and script errors; a page answered 4xx on purpose (a refused form)
        # is logged as "Failed to load resource" too, so failed loads are judged below.
        if message.type in ("error", "warning") and "Failed to load resource" not in message.text:
            problems.append(message.text)

    def loaded(response: Response) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            problems.append(f"{response.status} for {response.url}")

    opened.on("console", console)
    opened.on("response", loaded)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    try:
        yield opened
        assert problems == [], f"the browser reported problems: {problems}"
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, node: BrokerThread, token: str) -> None:
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
