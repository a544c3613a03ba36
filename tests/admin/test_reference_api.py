"""The reference-compatible API (``/api/...``) over HTTP, against a real SQLite store.

Each test states what a client of the reference system relies on: field names, status codes,
the reference's error messages, and what a credential switch leaves behind.
"""

import datetime as dt
import json
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from auth.fingerprint import reference_credentials_id
from auth.kinds import CredentialStatus, CredentialType
from storage.sql import SqlCredentialStore
from tests.admin.conftest import FakeBroker
from tests.certgen import issue

UTC = dt.UTC


async def _device(api: httpx.AsyncClient, name: str = "meter-1", **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/device", json={"name": name, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _switch(
    api: httpx.AsyncClient, device_id: str, kind: str, *, params: Any = None, **fields: Any
) -> httpx.Response:
    body = {"deviceId": {"id": device_id}, "credentialsType": kind, **fields}
    return await api.post("/api/device/credentials", json=body, params=params)


async def _statuses(store: SqlCredentialStore, device_id: str) -> list[tuple[str, str]]:
    credentials = await store.list_credentials(UUID(device_id))
    return [(c.type.value, c.status.value) for c in credentials]


def _assert_problem(response: httpx.Response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["errorCode"], int)
    for phrase in phrases:
        assert phrase in body["message"]


# --- devices --------------------------------------------------------------------------------


async def test_create_device_answers_the_reference_shape(
    api: httpx.AsyncClient, fake_broker: FakeBroker
) -> None:
    before = dt.datetime.now(UTC)
    device = await _device(api, "meter-1", type="meter", label="Basement")

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
    device = await _device(api, "plain", label=None)
    assert (device["type"], device["label"]) == ("default", "")


async def test_duplicate_device_name_is_409(api: httpx.AsyncClient) -> None:
    await _device(api, "meter-1")
    response = await api.post("/api/device", json={"name": "meter-1"})
    _assert_problem(response, 409, "Device with name 'meter-1' already exists!")


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
    _assert_problem(response, 400, phrase)
    assert fake_broker.changes == 0


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/device", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    _assert_problem(response, 400, "JSON decode error")


async def test_unknown_or_malformed_device_id_is_404(api: httpx.AsyncClient) -> None:
    _assert_problem(await api.get(f"/api/device/{uuid4()}"), 404, "does not exist")
    _assert_problem(await api.get("/api/device/not-a-uuid"), 404)
    _assert_problem(await api.delete(f"/api/device/{uuid4()}"), 404)


async def test_delete_device_removes_it_and_its_credentials(
    api: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    device = await _device(api)
    device_id = device["id"]["id"]
    await _switch(api, device_id, "ACCESS_TOKEN", credentialsId="tok-1")

    response = await api.delete(f"/api/device/{device_id}")

    assert response.status_code == 200
    assert response.content == b""
    assert fake_broker.changes == 3
    assert (await api.get(f"/api/device/{device_id}")).status_code == 404
    assert await store.find_token("tok-1") is None


async def test_device_list_pages_like_the_reference(api: httpx.AsyncClient) -> None:
    for name in ("gamma", "alpha", "Beta-2", "beta-1", "delta"):
        await _device(api, name)

    first = (await api.get("/api/tenant/devices", params={"pageSize": 2, "page": 0})).json()
    last = (await api.get("/api/tenant/devices", params={"pageSize": 2, "page": 2})).json()
    search = await api.get("/api/tenant/devices", params={"pageSize": 10, "textSearch": "BETA"})

    assert [d["name"] for d in first["data"]] == ["Beta-2", "alpha"]  # by name, as stored
    assert (first["totalPages"], first["totalElements"], first["hasNext"]) == (3, 5, True)
    assert [d["name"] for d in last["data"]] == ["gamma"]
    assert last["hasNext"] is False
    assert sorted(d["name"] for d in search.json()["data"]) == ["Beta-2", "beta-1"]


async def test_device_list_ignores_the_reference_sort_parameters(api: httpx.AsyncClient) -> None:
    await _device(api, "one")
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
    _assert_problem(await api.get("/api/tenant/devices", params=params), 400)


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
    credentials = (await api.get(f"/api/device/{device['id']['id']}/credentials")).json()
    assert credentials["credentialsType"] == "ACCESS_TOKEN"
    assert len(credentials["credentialsId"]) >= 20
    assert credentials["credentialsValue"] is None


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
    owner = await _device(api, "owner")
    value = json.dumps({"userName": "taken", "password": "pw"})
    await _switch(api, owner["id"]["id"], "MQTT_BASIC", credentialsValue=value)
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


# --- switching credentials ------------------------------------------------------------------


async def test_switch_from_token_to_certificate_needs_only_the_device_id(
    api: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    device = await _device(api)
    device_id = device["id"]["id"]
    await _switch(api, device_id, "ACCESS_TOKEN", credentialsId="old-token")
    cert = issue("meter-1")
    changes = fake_broker.changes

    response = await _switch(api, device_id, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["credentialsType"] == "X509_CERTIFICATE"
    assert body["credentialsId"] == reference_credentials_id(cert.cert_der)
    assert fake_broker.changes == changes + 1
    assert await _statuses(store, device_id) == [
        ("ACCESS_TOKEN", "disabled"),
        ("X509_CERTIFICATE", "active"),
    ]
    current = (await api.get(f"/api/device/{device_id}/credentials")).json()
    assert current["id"] == body["id"]


async def test_switch_accepts_the_reference_fields_it_does_not_need(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await _device(api))["id"]["id"]
    token = (await _switch(api, device_id, "ACCESS_TOKEN", credentialsId="old")).json()
    cert = issue("meter-1")

    response = await _switch(
        api,
        device_id,
        "X509_CERTIFICATE",
        id=token["id"],
        credentialsId="old",  # what a client copying the current credentials sends along
        credentialsValue=cert.cert_pem,
        deviceId={"id": device_id, "entityType": "DEVICE"},
        createdTime=token["createdTime"],
    )

    assert response.status_code == 200, response.text
    assert response.json()["credentialsId"] == reference_credentials_id(cert.cert_der)


async def test_saving_the_same_certificate_again_changes_nothing(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await _device(api))["id"]["id"]
    cert = issue("meter-1")
    first = await _switch(api, device_id, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)
    seq = await store.last_change_seq()

    again = await _switch(api, device_id, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)

    assert again.status_code == 200
    assert again.json() == first.json()
    assert await store.last_change_seq() == seq
    assert await _statuses(store, device_id) == [("X509_CERTIFICATE", "active")]


async def test_switching_certificates_revokes_the_old_one_for_good(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await _device(api))["id"]["id"]
    old, new = issue("meter-1"), issue("meter-1")
    await _switch(api, device_id, "X509_CERTIFICATE", credentialsValue=old.cert_pem)
    await _switch(api, device_id, "X509_CERTIFICATE", credentialsValue=new.cert_pem)

    assert await _statuses(store, device_id) == [
        ("X509_CERTIFICATE", "revoked"),
        ("X509_CERTIFICATE", "active"),
    ]
    back = await _switch(api, device_id, "X509_CERTIFICATE", credentialsValue=old.cert_pem)
    _assert_problem(back, 409, "revocation is final")


async def test_switching_back_to_a_disabled_token_enables_it(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await _device(api))["id"]["id"]
    first = (await _switch(api, device_id, "ACCESS_TOKEN", credentialsId="tok-a")).json()
    basic = json.dumps({"userName": "user-a", "password": "pw-a"})
    await _switch(api, device_id, "MQTT_BASIC", credentialsValue=basic)

    again = await _switch(api, device_id, "ACCESS_TOKEN", credentialsId="tok-a")

    assert again.json()["id"] == first["id"]
    assert await _statuses(store, device_id) == [
        ("ACCESS_TOKEN", "active"),
        ("MQTT_BASIC", "disabled"),
    ]


async def test_certificate_of_another_device_is_409_and_changes_nothing(
    api: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    cert = issue("shared")
    owner = (await _device(api, "owner"))["id"]["id"]
    other = (await _device(api, "other"))["id"]["id"]
    await _switch(api, owner, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)
    await _switch(api, other, "ACCESS_TOKEN", credentialsId="other-token")
    changes = fake_broker.changes

    response = await _switch(api, other, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)

    _assert_problem(response, 409, "Device credentials are already assigned to another device!")
    assert await _statuses(store, other) == [("ACCESS_TOKEN", "active")]
    assert fake_broker.changes == changes


async def test_token_of_another_device_is_409(api: httpx.AsyncClient) -> None:
    owner = (await _device(api, "owner"))["id"]["id"]
    other = (await _device(api, "other"))["id"]["id"]
    await _switch(api, owner, "ACCESS_TOKEN", credentialsId="the-token")
    response = await _switch(api, other, "ACCESS_TOKEN", credentialsId="the-token")
    _assert_problem(response, 409, "already assigned to another device")


async def test_switch_for_an_unknown_device_is_404_as_the_reference_says(
    api: httpx.AsyncClient,
) -> None:
    cert = issue("ghost")
    response = await _switch(api, str(uuid4()), "X509_CERTIFICATE", credentialsValue=cert.cert_pem)
    _assert_problem(response, 404, "Can't assign device credentials to non-existent device!")


def _wrong_order_chain() -> str:
    ca = issue("Fleet CA", ca=True)
    leaf = issue("meter-1", issuer=ca)
    return ca.cert_pem + leaf.cert_pem


@pytest.mark.parametrize(
    ("make_value", "phrase"),
    [
        (lambda: issue("meter-1").key_pem, "this is a private key"),
        (lambda: "hello, I am not a certificate", "not PEM"),
        (_wrong_order_chain, "wrong order"),
        (
            lambda: (
                issue(
                    "meter-1",
                    not_before=dt.datetime.now(UTC) - dt.timedelta(days=30),
                    not_after=dt.datetime.now(UTC) - dt.timedelta(days=1),
                ).cert_pem
            ),
            "expired",
        ),
        (lambda: "", "credentialsValue must hold the device certificate"),
    ],
    ids=["private-key", "not-pem", "chain-order", "expired", "empty"],
)
async def test_bad_certificate_is_400_saying_what_is_wrong(
    api: httpx.AsyncClient,
    store: SqlCredentialStore,
    fake_broker: FakeBroker,
    make_value: Any,
    phrase: str,
) -> None:
    device_id = (await _device(api))["id"]["id"]
    await _switch(api, device_id, "ACCESS_TOKEN", credentialsId="still-here")
    changes = fake_broker.changes
    value = make_value()

    response = await _switch(api, device_id, "X509_CERTIFICATE", credentialsValue=value)

    _assert_problem(response, 400, phrase)
    assert "PRIVATE KEY-----" not in response.text
    assert await _statuses(store, device_id) == [("ACCESS_TOKEN", "active")]
    assert fake_broker.changes == changes


async def test_expired_certificate_is_accepted_when_asked(api: httpx.AsyncClient) -> None:
    device_id = (await _device(api))["id"]["id"]
    past = dt.datetime.now(UTC) - dt.timedelta(days=1)
    cert = issue("meter-1", not_before=past - dt.timedelta(days=30), not_after=past)
    response = await _switch(
        api,
        device_id,
        "X509_CERTIFICATE",
        credentialsValue=cert.cert_pem,
        params={"allowExpired": "true"},
    )
    assert response.status_code == 200, response.text


async def test_chain_leaf_first_and_bare_public_key_are_accepted(api: httpx.AsyncClient) -> None:
    ca = issue("Fleet CA", ca=True)
    leaf = issue("meter-1", issuer=ca)
    first = (await _device(api, "chained"))["id"]["id"]
    second = (await _device(api, "bare-key"))["id"]["id"]
    chained = await _switch(
        api, first, "X509_CERTIFICATE", credentialsValue=leaf.cert_pem + ca.cert_pem
    )
    bare = await _switch(
        api, second, "X509_CERTIFICATE", credentialsValue=issue("k").public_key_pem
    )

    assert chained.json()["subject"] == "CN=meter-1"
    assert bare.status_code == 200, bare.text
    assert bare.json()["subject"] is None


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("not json", "JSON text like"),
        (json.dumps({"password": "pw"}), "need a userName"),
        (json.dumps({"userName": "u"}), "need a password"),
        (json.dumps({"userName": "u", "password": "pw", "clientId": 7}), "clientId"),
        (json.dumps({"userName": "u\u0000", "password": "pw"}), "control characters"),
    ],
)
async def test_bad_basic_credentials_are_400(
    api: httpx.AsyncClient, value: str, phrase: str
) -> None:
    device_id = (await _device(api))["id"]["id"]
    response = await _switch(api, device_id, "MQTT_BASIC", credentialsValue=value)
    _assert_problem(response, 400, phrase)


async def test_basic_credentials_with_a_new_password_for_the_same_user_are_409(
    api: httpx.AsyncClient,
) -> None:
    device_id = (await _device(api))["id"]["id"]
    same = json.dumps({"userName": "u", "password": "pw-1"})
    other = json.dumps({"userName": "u", "password": "pw-2"})
    assert (await _switch(api, device_id, "MQTT_BASIC", credentialsValue=same)).status_code == 200
    assert (await _switch(api, device_id, "MQTT_BASIC", credentialsValue=same)).status_code == 200
    response = await _switch(api, device_id, "MQTT_BASIC", credentialsValue=other)
    _assert_problem(response, 409, "another password or client id")


async def test_unknown_credentials_type_is_400(api: httpx.AsyncClient) -> None:
    device_id = (await _device(api))["id"]["id"]
    response = await _switch(api, device_id, "LWM2M_CREDENTIALS", credentialsValue="x")
    _assert_problem(response, 400, "credentialsType")


async def test_device_without_credentials_has_none_to_show(api: httpx.AsyncClient) -> None:
    device_id = (await _device(api))["id"]["id"]
    _assert_problem(await api.get(f"/api/device/{device_id}/credentials"), 404, "no credentials")


async def test_a_revoked_credential_is_shown_when_no_other_remains(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await _device(api))["id"]["id"]
    cert = issue("meter-1")
    await _switch(api, device_id, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)
    await store.revoke_x509(UUID(device_id))

    shown = (await api.get(f"/api/device/{device_id}/credentials")).json()

    assert shown["status"] == CredentialStatus.REVOKED.value
    assert shown["credentialsType"] == CredentialType.X509_CERTIFICATE.value
