"""The admin token guards every route but the public ones, and guessing it is slowed down.

The sweep walks the application's routes, so a route added later without the token's
dependency fails here. The web UI (``admin.web``, under ``/ui``) signs in with a session
cookie instead and has its own tests.
"""

import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from admin.app import create_app
from admin.context import AdminContext
from admin.ratelimit import MAX_FAILURES, FailureLimiter
from storage.sql import SqlCredentialStore
from tests.admin.conftest import TOKEN, FakeBroker

# /docs/assets and /docs/start.js: Swagger UI's files and its start-up script (admin.api_docs).
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/docs",
        "/docs/assets",
        "/docs/start.js",
        "/docs/oauth2-redirect",
        "/openapi.json",
    }
)
WEB_UI_PREFIX = "/ui/"
BASE_URL = "http://nanoiot.test"

# Each is not the admin token, or not presented the way the API reads it.
REFUSED_HEADERS = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Token {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"X-Authorization": "Bearer wrong-token"},
    {"X-Authorization": f"Basic {TOKEN}"},
]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str


def guarded_operations(app: FastAPI) -> Iterator[Operation]:
    """Every method of every route that must ask for the token."""
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if path in PUBLIC_PATHS or _is_web_ui(route.endpoint, path):
            continue
        assert route.methods, f"{path}: a mount or other route the sweep cannot check"
        for method in sorted(route.methods):
            yield Operation(method, path)


def _is_web_ui(endpoint: Callable[..., Any] | None, path: str) -> bool:
    """The web UI's pages (and its static files) check their session cookie themselves."""
    if endpoint is None:
        return path.startswith(WEB_UI_PREFIX)
    return endpoint.__module__.split(".")[:2] == ["admin", "web"]


def with_ids(path: str, device_id: UUID) -> str:
    # The id of a device that exists: a route that forgot the token would act on it.
    return re.sub(r"\{[^}]+\}", str(device_id), path)


@pytest.fixture
def lenient_app(store: SqlCredentialStore, fake_broker: FakeBroker) -> FastAPI:
    """The application with a rate limit too high to reach, for sweeps of many failures."""
    limiter = FailureLimiter(max_failures=10**6)
    context = AdminContext(store=store, admin_token=TOKEN, broker=fake_broker)
    context.limiter = limiter
    return create_app(context)


@pytest.fixture
async def lenient(lenient_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=lenient_app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def _store_state(store: SqlCredentialStore) -> tuple[int, int, int]:
    devices = await store.list_devices()
    credentials = sum([len(await store.list_credentials(d.id)) for d in devices.items])
    return await store.last_change_seq(), devices.total, credentials


async def test_every_guarded_route_refuses_requests_without_the_token(
    lenient_app: FastAPI,
    lenient: httpx.AsyncClient,
    store: SqlCredentialStore,
    fake_broker: FakeBroker,
) -> None:
    device, _ = await store.create_device_with_credential("victim", token="victim-token")
    before = await _store_state(store)
    operations = list(guarded_operations(lenient_app))
    assert Operation("POST", "/api/device/credentials") in operations
    assert Operation("DELETE", "/api/device/{deviceId:uuid_text}") in operations
    assert Operation("GET", "/metrics") in operations

    for operation in operations:
        url = with_ids(operation.path, device.id)
        for headers in REFUSED_HEADERS:
            response = await lenient.request(
                operation.method, url, headers=headers, json={"name": "intruder"}
            )
            where = f"{operation.method} {url} with {headers}"
            assert response.status_code == 401, f"{where}: {response.text}"
            assert response.headers["WWW-Authenticate"] == "Bearer", where
            assert response.json()["errorCode"] == 10, where

    assert await _store_state(store) == before
    assert fake_broker.changes == 0


async def test_a_body_that_cannot_be_read_is_refused_before_it_is_parsed(
    anonymous: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    garbage = {"content": b"\x00{not json", "headers": {"Content-Type": "application/json"}}
    refused = await anonymous.post("/api/device", **garbage)  # type: ignore[arg-type]
    invalid = await api.post("/api/device", **garbage)  # type: ignore[arg-type]
    assert refused.status_code == 401
    assert invalid.status_code == 400


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": f"bearer {TOKEN}"},
        {"X-Authorization": f"Bearer {TOKEN}"},
        {"Authorization": "Basic dXNlcjpwdw==", "X-Authorization": f"Bearer {TOKEN}"},
    ],
    ids=["authorization", "lowercase-scheme", "x-authorization", "basic-beside-x-authorization"],
)
async def test_the_token_is_accepted_in_either_header(
    anonymous: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await anonymous.get("/api/tenant/devices", headers=headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/docs"])
async def test_public_routes_need_no_token(anonymous: httpx.AsyncClient, path: str) -> None:
    assert (await anonymous.get(path)).status_code == 200


async def test_openapi_declares_the_bearer_scheme_on_every_api_operation(
    anonymous: httpx.AsyncClient,
) -> None:
    document = (await anonymous.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin token",
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path in PUBLIC_PATHS:
                continue
            assert operation.get("security") == [{"HTTPBearer": []}], f"{method} {path}"
            assert {"401", "429"} <= set(operation["responses"]), f"{method} {path}"
            assert "422" not in operation["responses"], f"{method} {path}"


# --- rate limit on failures -----------------------------------------------------------------


async def test_repeated_bad_tokens_get_429_with_retry_after(
    context: AdminContext, store: SqlCredentialStore
) -> None:
    app = create_app(context)
    here = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    elsewhere = httpx.ASGITransport(app=app, client=("127.0.0.2", 40000))
    good = {"Authorization": f"Bearer {TOKEN}"}
    bad = {"Authorization": "Bearer guess"}
    async with (
        httpx.AsyncClient(transport=here, base_url=BASE_URL) as guesser,
        httpx.AsyncClient(transport=elsewhere, base_url=BASE_URL) as neighbour,
    ):
        statuses = [(await guesser.get("/api/tenant/devices", headers=bad)).status_code]
        while statuses[-1] == 401 and len(statuses) < 100:
            statuses.append((await guesser.get("/api/tenant/devices", headers=bad)).status_code)
        refused = await guesser.post("/api/device", headers=good, json={"name": "late"})
        other = await neighbour.get("/api/tenant/devices", headers=good)

    assert statuses == [401] * MAX_FAILURES + [429]
    assert refused.status_code == 429  # the right token does not buy more guesses
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.json()["errorCode"] == 33
    assert other.status_code == 200
    assert (await store.list_devices()).total == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_refuses_at_the_limit_until_the_window_slides() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=3, window=60.0, clock=clock)
    for _ in range(2):
        limiter.failed("a")
        clock.now += 10
    assert limiter.retry_after("a") is None  # two failures: below the limit

    limiter.failed("a")  # third, at t=1020; the first was at t=1000
    assert limiter.retry_after("a") == pytest.approx(40.0)
    assert limiter.retry_after("b") is None

    clock.now = 1060.0  # the first failure leaves the window
    assert limiter.retry_after("a") is None
    limiter.failed("a")  # failures at 1010, 1020, 1060: at the limit again
    assert limiter.retry_after("a") == pytest.approx(10.0)

    clock.now = 1200.0
    assert limiter.retry_after("a") is None


def test_limiter_counts_each_address_on_its_own() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=2, window=60.0, clock=clock)
    limiter.failed("a")
    limiter.failed("b")
    assert limiter.retry_after("a") is None
    limiter.failed("a")
    assert limiter.retry_after("a") == pytest.approx(60.0)
    assert limiter.retry_after("b") is None


def test_a_spray_from_new_addresses_past_the_table_shares_one_count() -> None:
    # Emptying the table when it filled gave every counted address its guesses back.
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=2, window=60.0, clock=clock, max_tracked=3)
    limiter.failed("guesser")
    limiter.failed("guesser")
    assert limiter.retry_after("guesser") == pytest.approx(60.0)
    for n in range(1000):  # a spray from ever new addresses
        limiter.failed(f"spray-{n}")
    assert limiter.retry_after("guesser") == pytest.approx(60.0)  # still refused
    assert limiter.retry_after("spray-999") == pytest.approx(60.0)  # the spray shares 2 guesses
    assert limiter.retry_after("newcomer") == pytest.approx(60.0)  # under the spray, waits

    clock.now += 60.0  # every count leaves the window: room again, each address its own
    assert limiter.retry_after("newcomer") is None
    limiter.failed("another")
    assert (limiter.retry_after("another"), limiter.retry_after("guesser")) == (None, None)


def test_expired_counts_make_room_before_addresses_share_one() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=2, window=60.0, clock=clock, max_tracked=2)
    limiter.failed("a")
    limiter.failed("b")
    clock.now += 61.0  # a and b leave the window
    limiter.failed("c")
    limiter.failed("d")
    limiter.failed("c")
    assert limiter.retry_after("c") == pytest.approx(60.0)
    assert limiter.retry_after("d") is None


def test_a_count_keeps_no_more_failures_than_the_limit_needs() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=3, window=60.0, clock=clock, max_tracked=1)
    for n in range(10_000):
        clock.now += 0.001
        limiter.failed(f"spray-{n}")
    assert sum(len(kept) for kept in vars(limiter)["_failures"].values()) <= 2 * 3
    # Refused until the third-latest failure leaves the window.
    assert limiter.retry_after("spray-9999") == pytest.approx(60.0 - 0.002)
