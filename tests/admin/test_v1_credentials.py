"""/api/v1 device credentials: several per device, disable / enable / revoke, devices on/off."""

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

from auth.certificate import parse_credential
from storage.records import Device
from storage.sql import SqlCredentialStore
from tests.admin.conftest import FakeBroker
from tests.certgen import issue

UTC = dt.UTC
ASSIGNED = "Device credentials are already assigned to another device!"


@pytest.fixture
async def device(store: SqlCredentialStore) -> Device:
    return await store.create_device("meter-1")


def x509(pem: str, **extra: Any) -> dict[str, Any]:
    return {"credentialsType": "X509_CERTIFICATE", "pem": pem, **extra}


async def add(api: httpx.AsyncClient, device_id: uuid.UUID, body: dict[str, Any]) -> httpx.Response:
    return await api.post(f"/api/v1/devices/{device_id}/credentials", json=body)


async def test_a_device_holds_several_certificates_for_rotation(
    api: httpx.AsyncClient, device: Device, fake_broker: FakeBroker
) -> None:
    old, new = issue("meter-1"), issue("meter-1")
    first = await add(api, device.id, x509(old.cert_pem))
    second = await add(api, device.id, x509(new.cert_pem))
    assert (first.status_code, second.status_code) == (201, 201)
    body = second.json()
    assert body["deviceId"] == str(device.id)
    assert body["credentialsType"] == "X509_CERTIFICATE"
    assert body["status"] == "active"
    assert body["spkiSha256"] == parse_credential(new.cert_pem).spki_sha256
    assert body["subject"] == "CN=meter-1"
    assert body["notAfter"] == int(new.cert.not_valid_after_utc.timestamp() * 1000)
    assert isinstance(body["createdTime"], int)
    assert fake_broker.changes == 2

    listed = await api.get(f"/api/v1/devices/{device.id}/credentials")
    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()] == [first.json()["id"], body["id"]]

    got = await api.get(f"/api/v1/credentials/{body['id']}")
    assert got.json() == body


async def test_access_token_given_or_generated_and_mqtt_basic(
    api: httpx.AsyncClient, device: Device
) -> None:
    given = await add(api, device.id, {"credentialsType": "ACCESS_TOKEN", "token": "tok-1"})
    generated = await add(api, device.id, {"credentialsType": "ACCESS_TOKEN"})
    basic = await add(
        api,
        device.id,
        {"credentialsType": "MQTT_BASIC", "username": "u1", "password": "s3cret", "clientId": "c"},
    )
    assert [r.status_code for r in (given, generated, basic)] == [201, 201, 201]
    assert given.json()["token"] == given.json()["credentialsId"] == "tok-1"
    assert len(generated.json()["token"]) >= 20
    assert basic.json()["username"] == "u1"
    assert basic.json()["clientId"] == "c"
    assert "s3cret" not in basic.text
    assert all("password" not in key.lower() for key in basic.json())


@pytest.mark.parametrize(
    ("pem", "expected"),
    [
        ("not a certificate", "not PEM"),
        (issue("k").key_pem, "this is a private key (PRIVATE KEY)"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n", "has no matching END line"),
    ],
    ids=["garbage", "private-key", "cut-short"],
)
async def test_a_bad_pem_is_400_saying_what_is_wrong(
    api: httpx.AsyncClient, device: Device, fake_broker: FakeBroker, pem: str, expected: str
) -> None:
    response = await add(api, device.id, x509(pem))
    assert response.status_code == 400
    assert expected in response.json()["message"]
    assert response.json()["errorCode"] == 31
    assert "MII" not in response.text  # never echo key material
    assert fake_broker.changes == 0


async def test_an_expired_certificate_needs_allow_expired(
    api: httpx.AsyncClient, device: Device, fake_broker: FakeBroker
) -> None:
    now = dt.datetime.now(UTC)
    expired = issue(
        "meter-1", not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(days=1)
    )
    refused = await add(api, device.id, x509(expired.cert_pem))
    assert refused.status_code == 400
    assert "expired on" in refused.json()["message"]
    assert "allowExpired=true" in refused.json()["message"]
    assert fake_broker.changes == 0
    accepted = await add(api, device.id, x509(expired.cert_pem, allowExpired=True))
    assert accepted.status_code == 201


async def test_duplicates_are_409_with_the_reference_wording(
    api: httpx.AsyncClient, store: SqlCredentialStore, device: Device, fake_broker: FakeBroker
) -> None:
    other = await store.create_device("meter-2")
    cert = issue("meter-1")
    assert (await add(api, device.id, x509(cert.cert_pem))).status_code == 201
    elsewhere = await add(api, other.id, x509(cert.cert_pem))
    assert elsewhere.status_code == 409
    assert elsewhere.json()["message"] == f"{ASSIGNED} (device 'meter-1')"
    again = await add(api, device.id, x509(cert.cert_pem))
    assert again.status_code == 409
    assert again.json()["message"] == "Specified credentials are already registered!"
    token = {"credentialsType": "ACCESS_TOKEN", "token": "shared"}
    assert (await add(api, device.id, token)).status_code == 201
    assert (await add(api, other.id, token)).status_code == 409
    assert fake_broker.changes == 2


async def test_unknown_device_or_credential_is_404(
    api: httpx.AsyncClient, fake_broker: FakeBroker
) -> None:
    nobody = uuid.uuid4()
    added = await add(api, nobody, {"credentialsType": "ACCESS_TOKEN", "token": "t"})
    assert added.status_code == 404
    assert added.json()["message"] == "Can't assign device credentials to non-existent device!"
    assert (await api.get(f"/api/v1/devices/{nobody}/credentials")).status_code == 404
    assert (await api.get(f"/api/v1/credentials/{nobody}")).status_code == 404
    for action in ("disable", "enable", "revoke"):
        response = await api.post(f"/api/v1/credentials/{nobody}/{action}")
        assert response.status_code == 404, action
        assert str(nobody) in response.json()["message"]
    for action in ("disable", "enable"):
        assert (await api.post(f"/api/v1/devices/{nobody}/{action}")).status_code == 404
    assert fake_broker.changes == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"credentialsType": "PSK", "token": "t"}, "credentialsType"),
        ({"credentialsType": "ACCESS_TOKEN", "tokn": "t"}, "tokn"),
        ({"credentialsType": "MQTT_BASIC", "username": "u"}, "password"),
        ({"credentialsType": "MQTT_BASIC", "username": "u", "password": ""}, "password"),
        ({"credentialsType": "ACCESS_TOKEN", "token": "tab\ttoken"}, "control characters"),
    ],
    ids=["unknown-type", "misspelt-field", "missing-password", "empty-password", "bad-token"],
)
async def test_an_invalid_body_is_400(
    api: httpx.AsyncClient, device: Device, body: dict[str, Any], expected: str
) -> None:
    response = await add(api, device.id, body)
    assert response.status_code == 400, response.text
    assert expected in response.json()["message"]


async def test_a_malformed_id_is_400(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/credentials/not-a-uuid")
    assert response.status_code == 400
    assert "credentialId" in response.json()["message"]


async def test_disable_enable_revoke(
    api: httpx.AsyncClient, device: Device, fake_broker: FakeBroker
) -> None:
    created = await add(api, device.id, x509(issue("meter-1").cert_pem))
    url = f"/api/v1/credentials/{created.json()['id']}"

    disabled = await api.post(f"{url}/disable")
    assert (disabled.status_code, disabled.json()["status"]) == (200, "disabled")
    enabled = await api.post(f"{url}/enable")
    assert (enabled.status_code, enabled.json()["status"]) == (200, "active")
    revoked = await api.post(f"{url}/revoke")
    assert (revoked.status_code, revoked.json()["status"]) == (200, "revoked")
    assert fake_broker.changes == 4  # add + 3 status changes

    for action in ("enable", "disable"):
        refused = await api.post(f"{url}/{action}")
        assert refused.status_code == 400, action
        assert "revocation is final" in refused.json()["message"]
    assert (await api.get(url)).json()["status"] == "revoked"
    assert fake_broker.changes == 4


async def test_a_device_can_be_disabled_and_enabled_again(
    api: httpx.AsyncClient, device: Device, fake_broker: FakeBroker
) -> None:
    fake_broker.connected.add(str(device.id))
    disabled = await api.post(f"/api/v1/devices/{device.id}/disable")
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert disabled.json()["connected"] is True
    enabled = await api.post(f"/api/v1/devices/{device.id}/enable")
    assert enabled.json()["enabled"] is True
    assert enabled.json()["name"] == "meter-1"
    assert fake_broker.changes == 2


async def test_every_route_needs_the_admin_token(
    anonymous: httpx.AsyncClient, device: Device, fake_broker: FakeBroker
) -> None:
    listed = await anonymous.get(f"/api/v1/devices/{device.id}/credentials")
    assert listed.status_code == 401
    added = await anonymous.post(
        f"/api/v1/devices/{device.id}/credentials",
        json={"credentialsType": "ACCESS_TOKEN", "token": "t"},
    )
    assert added.status_code == 401
    assert (await anonymous.post(f"/api/v1/devices/{device.id}/disable")).status_code == 401
    assert fake_broker.changes == 0
