"""Every JSON request body is read as RFC 8259 JSON (admin.json_body, nanoiot.strict_json).

FastAPI read bodies with Python's json module: ``{"name": "a", "name": "b"}`` created device
"b", a body sent as UTF-16 was read, ``NaN`` and ``1e999`` reached the models, and a 10,000-digit
integer or arrays nested 100,000 deep got "There was an error parsing the body". Each is now a
one-line 400 saying what is wrong (415 for a charset other than UTF-8), on every route that
takes JSON, and nothing is stored.
"""

import re

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from admin.app import create_app
from admin.context import AdminContext
from tests.admin.reference_helpers import assert_problem, create_device

NOT_JSON = [
    (b'{"name": NaN}', "NaN is not a JSON number"),
    (b'{"name": "x", "n": [Infinity]}', "Infinity is not a JSON number"),
    (b'{"name": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"name": "a", "name": "b"}', 'the name "name" appears twice'),
    (b'{"name": "\\ud800"}', "lone UTF-16 surrogate"),
    (b'{"name": "x", "n": 1e999}', "the number 1e999 is out of range"),
    (b'{"name": "x", "n": ' + b"9" * 10_000 + b"}", "a number of 10,000 characters"),
    (b'{"name": ' + b"[" * 100_000, "more than 10,000 arrays and objects"),
    (b'{"name": ' + b"[" * 5_000, "nested more than 32 deep"),
    (b'{"name": ' + b"[" * 500 + b"]" * 500 + b"}", "nested more than 32 deep"),
    (b'{"name": "\xff"}', "not UTF-8 (RFC 8259 §8.1)"),
    ('{"name": "x"}'.encode("utf-16"), "not UTF-8 (RFC 8259 §8.1)"),
    (b'{"name": "x",}', "Expecting property name enclosed in double quotes at line 1"),
]
_UNKNOWN = "00000000-0000-4000-8000-000000000000"


def _json_routes(context: AdminContext) -> list[tuple[str, str]]:
    """(method, path) of every route whose body FastAPI reads as JSON, ids filled in."""
    routes: list[tuple[str, str]] = []
    for route in iter_route_contexts(create_app(context).routes):
        if getattr(route, "body_field", None) is not None:
            path = re.sub(r"\{[^}]+\}", _UNKNOWN, route.path or "")
            routes.extend((method, path) for method in sorted(route.methods or ()))
    # Reads its JSON form itself, from the stream: checked all the same.
    routes.append(("PUT", f"/api/v1/trusted-cas/{_UNKNOWN}/crl"))
    return routes


@pytest.mark.parametrize(("body", "reason"), NOT_JSON)
async def test_a_body_that_is_not_rfc_8259_json_is_refused_on_every_route(
    api: httpx.AsyncClient, context: AdminContext, body: bytes, reason: str
) -> None:
    routes = _json_routes(context)
    assert len(routes) >= 7, routes  # the enumeration found the API's JSON routes
    # BodyGuard checks JSON under /api/ only, after the token.
    assert all(path.startswith("/api/") for _, path in routes), routes
    for method, path in routes:
        response = await api.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        assert_problem(response, 400, "The request body is not valid JSON: ", reason)
        assert "\n" not in response.json()["message"], path
        assert len(response.json()["message"]) < 300, path
    assert (await api.get("/api/tenant/devices")).json()["totalElements"] == 0


async def test_no_body_is_parsed_without_the_token(anonymous: httpx.AsyncClient) -> None:
    for path in ("/api/device", "/ui/login", "/healthz"):
        response = await anonymous.post(
            path, content=b"[" * 100_000, headers={"Content-Type": "application/json"}
        )
        assert "not valid JSON" not in response.text, path  # refused without reading it


async def test_a_large_body_is_read_as_strictly(api: httpx.AsyncClient) -> None:
    # Past 64 KiB the body is read off the event loop: the same rules, the same answers.
    padding = b'"' + b"x" * 200_000 + b'"'
    for tail, status in ((b"1", 200), (b"NaN", 400), (b'1, "name": "b"', 400)):
        response = await api.post(
            "/api/device",
            content=b'{"name": "meter-1", "padding": ' + padding + b', "n": ' + tail + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == status, response.text
    assert (await api.get("/api/tenant/devices")).json()["totalElements"] == 1


async def test_a_name_given_twice_creates_nothing(api: httpx.AsyncClient) -> None:
    # Before: 200, a device named "b" (Python keeps the last); another reader keeps the first.
    response = await api.post(
        "/api/device",
        content=b'{"name": "a", "name": "b"}',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400, 'the name "name" appears twice in one object')
    assert (await api.get("/api/tenant/devices")).json()["data"] == []


async def test_json_inside_a_json_string_is_strict_too(api: httpx.AsyncClient) -> None:
    # The reference's MQTT_BASIC credentialsValue is JSON text in a string: which password of
    # two would count?
    device_id = (await create_device(api))["id"]["id"]
    value = '{"userName": "u", "password": "p1", "password": "p2"}'
    body = {
        "deviceId": {"id": device_id},
        "credentialsType": "MQTT_BASIC",
        "credentialsValue": value,
    }
    response = await api.post("/api/device/credentials", json=body)
    assert_problem(response, 400, "credentialsValue must be JSON text")
    body["credentialsValue"] = '{"userName": "u", "password": "p1"}'
    assert (await api.post("/api/device/credentials", json=body)).status_code == 200


@pytest.mark.parametrize("charset", ["utf-16", "UTF-32", "latin-1", "x" * 500])
async def test_json_in_another_charset_than_utf8_is_415(
    api: httpx.AsyncClient, charset: str
) -> None:
    # Before: json.loads read UTF-16 and UTF-32 bytes, and the device was created.
    encoding = charset if len(charset) < 10 else "utf-8"
    response = await api.post(
        "/api/device",
        content='{"name": "meter-1"}'.encode(encoding),
        headers={"Content-Type": f"application/json; charset={charset}"},
    )
    assert_problem(response, 415, "JSON is sent as UTF-8 (RFC 8259 §8.1), not as charset=")
    assert len(response.json()["message"]) < 200
    assert (await api.get("/api/tenant/devices")).json()["data"] == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "application/merge-patch+json",  # FastAPI reads any +json type as JSON
    ],
)
async def test_json_as_rfc_8259_writes_it_still_works(
    api: httpx.AsyncClient, content_type: str
) -> None:
    # Escapes, a surrogate pair among them, and UTF-8 bytes.
    content = b'{"name": "m\\u00e9ter-\\ud83d\\ude00-1", "label": "\xc3\xa9", "type": "default"}'
    response = await api.post(
        "/api/device", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "m\u00e9ter-\U0001f600-1"
    assert response.json()["label"] == "é"


async def test_a_second_content_type_is_refused(api: httpx.AsyncClient) -> None:
    # Starlette reads the first Content-Type: a check reading the last could be passed.
    for types in (["application/json", "text/plain"], ["text/plain", "application/json"]):
        response = await api.post(
            "/api/device",
            content=b'{"name": NaN}',
            headers=[("Content-Type", types[0]), ("Content-Type", types[1])],
        )
        assert_problem(response, 400, "more than one Content-Type header field")
