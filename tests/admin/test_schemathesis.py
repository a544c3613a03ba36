"""Property-based tests of the whole admin API against its own OpenAPI schema (schemathesis).

Requests generated from the schema, valid and invalid, go in-process to the real application
over a real SQLite store. With the admin token: no 5xx, and status codes, headers, content
types and bodies as the schema declares. Without it: every operation behind the token
answers 401 and the store is left as it was.

The application and its store run in one event loop of their own (an anyio portal thread):
the store's connections belong to the loop that opened them, and hypothesis drives the
examples from synchronous test functions.
"""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from hypothesis import settings
from schemathesis import APIOperation, GenerationMode
from schemathesis import Case as AnyCase
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
)

from admin.app import create_app
from admin.context import AdminContext
from admin.ratelimit import FailureLimiter
from storage.interface import CredentialStore
from storage.sql import SqlCredentialStore
from tests.admin.conftest import TOKEN, FakeBroker

Case = AnyCase[APIOperation[Any, Any, Any, Any]]
BASE_URL = "http://nanoiot.test"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 30
JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")

# positive_data_acceptance expects every schema-valid request to succeed, but no schema can
# say which text is a certificate or which names MQTT can carry: those answer 400 with the
# reason, as they must. ignored_auth re-sends requests through schemathesis' own transport,
# which cannot reach this loop; test_unauthenticated_requests_are_refused covers it here.
EXCLUDED_CHECKS = [positive_data_acceptance, ignored_auth]


@dataclass
class Served:
    """The application in its own event loop, and a way to call it from test threads."""

    portal: BlockingPortal
    app: FastAPI
    client: httpx.AsyncClient
    store: SqlCredentialStore

    def send(self, case: Case, headers: dict[str, str] | None = None) -> Any:
        request = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
        return self.portal.call(partial(_send, self.client, request))

    def store_state(self) -> tuple[int, int]:
        """The change feed's position and the number of devices."""

        async def state() -> tuple[int, int]:
            devices = await self.store.list_devices(page_size=1)
            return await self.store.last_change_seq(), devices.total

        return self.portal.call(state)


async def _send(client: httpx.AsyncClient, request: dict[str, Any]) -> httpx.Response:
    body: dict[str, Any] = {}
    if "json" in request:
        body["json"] = request["json"]
    elif request.get("data") is not None:
        body["content"] = request["data"]
    return await client.request(
        request["method"],
        request["url"],
        headers=request.get("headers"),
        params=request.get("params"),
        **body,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis")
    with start_blocking_portal() as portal:
        store = portal.call(
            partial(
                SqlCredentialStore.open,
                f"sqlite+aiosqlite:///{data_dir / 'admin.db'}",
                data_dir=data_dir,
            )
        )
        # Thousands of refused requests come from one address here: the rate limit has its
        # own tests (test_security), and would otherwise turn the 401s into 429s.
        context = AdminContext(
            store=store,
            admin_token=TOKEN,
            broker=FakeBroker(connected=set()),
        )
        context.limiter = FailureLimiter(max_failures=10**9)
        app = create_app(context)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        try:
            yield Served(portal, app, client, store)
        finally:
            portal.call(client.aclose)
            portal.call(store.close)


def _openapi_document() -> dict[str, Any]:
    # Built from the routes alone: nothing here touches the store, so none is given.
    app = create_app(AdminContext(store=cast(CredentialStore, None), admin_token=TOKEN))
    return app.openapi()


# Unknown query parameters are ignored on purpose (the reference's clients send sortProperty,
# sortOrder, ...), so requests with made-up ones are not generated as invalid input.
CONFIG = schemathesis.Config.from_dict({"generation": {"allow-extra-parameters": False}})

# Loaded at import, as schemathesis' parametrize needs it then (its lazy from_fixture loader
# does not run on pytest 9).
schema = schemathesis.openapi.from_dict(_openapi_document(), config=CONFIG)


FILE_MEDIA_TYPES = ("application/x-ndjson", "application/pkix-crl", "application/x-pem-file")


@schemathesis.serializer(*FILE_MEDIA_TYPES, "text/csv")
def _raw_body(_ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """Bodies that are files (CSV, JSON lines, PEM, DER): sent as generated, as bytes."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


def _checks_to_skip(case: Case) -> list[Any]:
    # A file body is bytes on the wire whatever "type" was generated for it: a body of the
    # wrong JSON type cannot be sent as such, so it proves nothing about rejecting one.
    if case.media_type in (*FILE_MEDIA_TYPES, "text/csv"):
        return [*EXCLUDED_CHECKS, negative_data_rejection]
    if _only_unsendable_negatives(case):
        return [*EXCLUDED_CHECKS, negative_data_rejection]
    return EXCLUDED_CHECKS


def _only_unsendable_negatives(case: Case) -> bool:
    """True when the "invalid" parts are only headers (Authorization is replaced with the
    token) and a query string whose values, as sent, are valid: every query value is text
    on the wire, so a value generated with the wrong JSON type may arrive as a valid one."""
    meta = case.meta
    if meta is None:
        return False
    negative = {
        location.value
        for location, info in meta.components.items()
        if info.mode is GenerationMode.NEGATIVE
    }
    return bool(negative) and negative <= {"header", "query"} and _sent_query_is_valid(case)


def _sent_query_is_valid(case: Case) -> bool:
    sent = case.query or {}
    for parameter in case.operation.definition.raw.get("parameters", []):
        if parameter.get("in") != "query" or parameter["name"] not in sent:
            continue
        schema = parameter.get("schema", {})
        options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
        texts = _as_sent(sent[parameter["name"]])
        if not texts and parameter.get("required", False):
            return False  # an empty list sends nothing: a required parameter goes missing
        if not all(any(_text_fits(t, o) for o in options) for t in texts):
            return False
    return True


def _as_sent(value: Any) -> list[str]:
    """The text the server reads for a query value: every value is text on the wire (lists
    and objects in their Python form), and for a list, the parameter repeated, the server
    reads the last one; an empty list is not sent at all (nothing to read)."""
    if isinstance(value, list):
        if not value:
            return []
        value = value[-1]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    return ["null" if value is None else str(value)]


def _text_fits(text: str, schema: Mapping[str, Any]) -> bool:
    if schema.get("type") == "string":
        return len(text) <= int(schema.get("maxLength", len(text)))
    if schema.get("type") == "integer":
        # As the server reads one (admin.wire_types): JSON's integer grammar, not int()'s,
        # which also takes '+1', ' 1' and '1_000' (sent as "invalid", they must be refused).
        if not JSON_INTEGER.fullmatch(text):
            return False
        number = int(text)
        return int(schema.get("minimum", number)) <= number <= int(schema.get("maximum", number))
    if schema.get("type") == "boolean":
        return text in ("true", "false")
    return False


def _needs_token(ctx: Any) -> bool:
    return bool(ctx.operation.definition.raw.get("security"))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None)
def test_api_conforms_to_its_schema(case: Case, served: Served) -> None:
    response = served.send(case, headers=AUTHORIZED)
    case.validate_response(response, excluded_checks=_checks_to_skip(case))


@schema.include(_needs_token).parametrize()
@settings(max_examples=EXAMPLES, deadline=None)
def test_unauthenticated_requests_are_refused(case: Case, served: Served) -> None:
    # schemathesis makes up an Authorization header for the bearer scheme, or none at all:
    # either way not the admin token.
    headers: Mapping[str, Any] = case.headers or {}
    assert TOKEN not in str(headers.get("Authorization", ""))
    before = served.store_state()
    response = served.send(case)
    path = httpx.URL(case.formatted_path).path
    # Under /api/ the token is looked at first, on the headers (admin.body_guard): 401 for
    # anything, before routing and before any body is read. Elsewhere routing answers first:
    # a path no route has is 404, a method the path does not have 405.
    if path.startswith("/api/"):
        assert response.status_code == 401, response.text
    elif not _routed(served.app, path):
        assert response.status_code == 404, response.text
    elif case.method.upper() != case.operation.method.upper():
        assert response.status_code == 405, response.text
    else:
        assert response.status_code == 401, response.text
    assert served.store_state() == before


def _routed(app: FastAPI, path: str) -> bool:
    return any(
        route.path_regex.match(path) for route in iter_route_contexts(app.routes) if route.path
    )


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=200, deadline=None)
def test_api_conforms_to_its_schema_at_length(case: Case, served: Served) -> None:
    response = served.send(case, headers=AUTHORIZED)
    case.validate_response(response, excluded_checks=_checks_to_skip(case))
