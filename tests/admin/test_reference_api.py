"""The reference-compatible API (``/api/...``) over HTTP, against a real SQLite store:
devices, and devices created with their credentials.

Each test states what a client of the reference system relies on: field names, status codes
and the reference's error messages. Switching credentials: test_reference_credentials.py.
"""

import datetime as dt
import json
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from auth.fingerprint import reference_credentials_id
from storage.sql import SqlCredentialStore
from tests.admin.conftest import FakeBroker
from tests.admin.reference_helpers import assert_problem, create_device, switch
from tests.certgen import issue

UTC = dt.UTC

# --- devices --------------------------------------------------------------------------------


async def test_create_device_answers_the_reference_shape(
    api: httpx.AsyncClient, fake_broker: FakeBroker
) -> None:
    before = dt.datetime.now(UTC)
    device = await create_device(api, "meter-1", type="meter", label="Basement")

    assert device["id"]["entityType"] == "DEVICE"
    UUID(device["id"]["id"])
    assert (device["name"], device["type"], device["label"]) == ("meter-1", "meter", "Basement")
    assert device["enabled"] is True
    assert device["createdTime"] >= int(before.timestamp() * 1000) - 1000
    assert fake_broker.changes == 1

    fetched = await api.get(f"/api/device/{device['id']['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == device


async def test_device_defaults_and_null_label(api: httpx.AsyncClient) -> None:
    device = await create_device(api, "plain", label=None)
    assert (device["type"], device["label"]) == ("default", "")


async def test_duplicate_device_name_is_409(api: httpx.AsyncClient) -> None:
    await create_device(api, "meter-1")
    response = await api.post("/api/device", json={"name": "meter-1"})
    assert_problem(response, 409, "Device with name 'meter-1' already exists!")


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({"name": "a/b"}, "must not contain '/'"),
        ({"name": "$SYS"}, "must not start with '$'"),
        ({"name": ""}, "name"),
        ({}, "name: Field required"),
        ({"name": "x", "label": "nul\u0000here"}, "NUL"),
        ({"name": "x", "id": {"id": str(uuid4())}}, "leave out 'id'"),
    ],
)
async def test_invalid_device_is_400_with_the_reason(
    api: httpx.AsyncClient, fake_broker: FakeBroker, body: dict[str, Any], phrase: str
) -> None:
    response = await api.post("/api/device", json=body)
    assert_problem(response, 400, phrase)
    assert fake_broker.changes == 0


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/device", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "The request body is not valid JSON: Expecting property name")


async def test_unknown_or_malformed_device_id_is_404(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get(f"/api/device/{uuid4()}"), 404, "does not exist")
    assert_problem(await api.get("/api/device/not-a-uuid"), 404)
    assert_problem(await api.delete(f"/api/device/{uuid4()}"), 404)


async def test_delete_device_removes_it_and_its_credentials(
    api: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    device = await create_device(api)
    device_id = device["id"]["id"]
    await switch(api, device_id, "ACCESS_TOKEN", credentialsId="tok-1")

    response = await api.delete(f"/api/device/{device_id}")

    assert response.status_code == 200
    assert response.content == b""
    assert fake_broker.changes == 3
    assert (await api.get(f"/api/device/{device_id}")).status_code == 404
    assert await store.find_token("tok-1") is None


async def test_device_list_pages_like_the_reference(api: httpx.AsyncClient) -> None:
    for name in ("gamma", "alpha", "Beta-2", "beta-1", "delta"):
        await create_device(api, name)

    first = (await api.get("/api/tenant/devices", params={"pageSize": 2, "page": 0})).json()
    last = (await api.get("/api/tenant/devices", params={"pageSize": 2, "page": 2})).json()
    search = await api.get("/api/tenant/devices", params={"pageSize": 10, "textSearch": "BETA"})

    assert [d["name"] for d in first["data"]] == ["Beta-2", "alpha"]  # by name, as stored
    assert (first["totalPages"], first["totalElements"], first["hasNext"]) == (3, 5, True)
    assert [d["name"] for d in last["data"]] == ["gamma"]
    assert last["hasNext"] is False
    assert sorted(d["name"] for d in search.json()["data"]) == ["Beta-2", "beta-1"]


async def test_device_list_ignores_the_reference_sort_parameters(api: httpx.AsyncClient) -> None:
    await create_device(api, "one")
    params: dict[str, str | int] = {
        "pageSize": 10,
        "page": 0,
        "sortProperty": "createdTime",
        "sortOrder": "DESC",
    }
    response = await api.get("/api/tenant/devices", params=params)
    assert response.status_code == 200
    assert response.json()["totalElements"] == 1


@pytest.mark.parametrize(
    "params", [{"pageSize": 0}, {"pageSize": 1001}, {"page": -1}, {"textSearch": "a\u0000b"}]
)
async def test_device_list_refuses_bad_paging(
    api: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    assert_problem(await api.get("/api/tenant/devices", params=params), 400)


# --- device with credentials ----------------------------------------------------------------


async def test_device_with_certificate_in_one_call(
    api: httpx.AsyncClient, fake_broker: FakeBroker
) -> None:
    cert = issue("meter-7")
    body = {
        "device": {"name": "meter-7", "type": "meter"},
        "credentials": {"credentialsType": "X509_CERTIFICATE", "credentialsValue": cert.cert_pem},
    }
    response = await api.post("/api/device-with-credentials", json=body)

    assert response.status_code == 200, response.text
    device = response.json()
    assert device["name"] == "meter-7"
    assert fake_broker.changes == 1
    credentials = (await api.get(f"/api/device/{device['id']['id']}/credentials")).json()
    assert credentials["credentialsType"] == "X509_CERTIFICATE"
    assert credentials["credentialsId"] == reference_credentials_id(cert.cert_der)
    assert credentials["credentialsValue"] == cert.cert_pem
    assert credentials["deviceId"] == {"id": device["id"]["id"], "entityType": "DEVICE"}
    assert credentials["subject"] == "CN=meter-7"
    assert credentials["status"] == "active"
    assert len(credentials["spkiSha256"]) == 64
    assert dt.datetime.fromisoformat(credentials["notAfter"]) == cert.cert.not_valid_after_utc


async def test_device_with_generated_token(api: httpx.AsyncClient) -> None:
    body = {"device": {"name": "tok"}, "credentials": {"credentialsType": "ACCESS_TOKEN"}}
    device = (await api.post("/api/device-with-credentials", json=body)).json()
    # The generated token is in the answer that created it, and nowhere afterwards.
    assert device["credentials"]["credentialsType"] == "ACCESS_TOKEN"
    token = device["credentials"]["credentialsId"]
    assert len(token) >= 20
    credentials = (await api.get(f"/api/device/{device['id']['id']}/credentials")).json()
    assert credentials["credentialsType"] == "ACCESS_TOKEN"
    assert credentials["credentialsId"] is None
    assert credentials["credentialsValue"] is None
    assert token not in json.dumps(credentials)


async def test_device_with_basic_credentials_never_shows_the_password(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    value = json.dumps({"clientId": "c-1", "userName": "u-1", "password": "s3cret-pw"})
    body = {
        "device": {"name": "basic"},
        "credentials": {"credentialsType": "MQTT_BASIC", "credentialsValue": value},
    }
    device = (await api.post("/api/device-with-credentials", json=body)).json()
    response = await api.get(f"/api/device/{device['id']['id']}/credentials")

    assert "s3cret-pw" not in response.text
    assert "argon2" not in response.text
    assert json.loads(response.json()["credentialsValue"]) == {"clientId": "c-1", "userName": "u-1"}
    match = await store.check_basic("u-1", "s3cret-pw", "c-1")
    assert match is not None
    assert str(match.device.id) == device["id"]["id"]


async def test_device_with_credentials_leaves_nothing_on_error(
    api: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    owner = await create_device(api, "owner")
    value = json.dumps({"userName": "taken", "password": "pw"})
    await switch(api, owner["id"]["id"], "MQTT_BASIC", credentialsValue=value)
    changes = fake_broker.changes
    attempts = [
        {"credentialsType": "X509_CERTIFICATE", "credentialsValue": "not a certificate"},
        {"credentialsType": "MQTT_BASIC", "credentialsValue": value},
        {"credentialsType": "MQTT_BASIC", "credentialsValue": "{}"},
    ]
    for credentials in attempts:
        body = {"device": {"name": "newcomer"}, "credentials": credentials}
        response = await api.post("/api/device-with-credentials", json=body)
        assert response.status_code in (400, 409), response.text

    assert (await store.list_devices()).total == 1
    assert fake_broker.changes == changes
