"""The reference-compatible credential switch (``POST /api/device/credentials``) over HTTP:
what a client of the reference system relies on, and what a switch leaves behind.
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
from tests.admin.reference_helpers import assert_problem, create_device, statuses, switch
from tests.certgen import issue

UTC = dt.UTC

# --- switching credentials ------------------------------------------------------------------


async def test_switch_from_token_to_certificate_needs_only_the_device_id(
    api: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    device = await create_device(api)
    device_id = device["id"]["id"]
    await switch(api, device_id, "ACCESS_TOKEN", credentialsId="old-token")
    cert = issue("meter-1")
    changes = fake_broker.changes

    response = await switch(api, device_id, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["credentialsType"] == "X509_CERTIFICATE"
    assert body["credentialsId"] == reference_credentials_id(cert.cert_der)
    assert fake_broker.changes == changes + 1
    assert await statuses(store, device_id) == [
        ("ACCESS_TOKEN", "disabled"),
        ("X509_CERTIFICATE", "active"),
    ]
    current = (await api.get(f"/api/device/{device_id}/credentials")).json()
    assert current["id"] == body["id"]


async def test_switch_accepts_the_reference_fields_it_does_not_need(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await create_device(api))["id"]["id"]
    token = (await switch(api, device_id, "ACCESS_TOKEN", credentialsId="old")).json()
    cert = issue("meter-1")

    response = await switch(
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
    device_id = (await create_device(api))["id"]["id"]
    cert = issue("meter-1")
    first = await switch(api, device_id, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)
    seq = await store.last_change_seq()

    again = await switch(api, device_id, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)

    assert again.status_code == 200
    assert again.json() == first.json()
    assert await store.last_change_seq() == seq
    assert await statuses(store, device_id) == [("X509_CERTIFICATE", "active")]


async def test_switching_certificates_revokes_the_old_one_for_good(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await create_device(api))["id"]["id"]
    old, new = issue("meter-1"), issue("meter-1")
    await switch(api, device_id, "X509_CERTIFICATE", credentialsValue=old.cert_pem)
    await switch(api, device_id, "X509_CERTIFICATE", credentialsValue=new.cert_pem)

    assert await statuses(store, device_id) == [
        ("X509_CERTIFICATE", "revoked"),
        ("X509_CERTIFICATE", "active"),
    ]
    back = await switch(api, device_id, "X509_CERTIFICATE", credentialsValue=old.cert_pem)
    assert_problem(back, 409, "revocation is final")


async def test_switching_back_to_a_disabled_token_enables_it(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await create_device(api))["id"]["id"]
    first = (await switch(api, device_id, "ACCESS_TOKEN", credentialsId="tok-a")).json()
    basic = json.dumps({"userName": "user-a", "password": "pw-a"})
    await switch(api, device_id, "MQTT_BASIC", credentialsValue=basic)

    again = await switch(api, device_id, "ACCESS_TOKEN", credentialsId="tok-a")

    assert again.json()["id"] == first["id"]
    assert await statuses(store, device_id) == [
        ("ACCESS_TOKEN", "active"),
        ("MQTT_BASIC", "disabled"),
    ]


async def test_certificate_of_another_device_is_409_and_changes_nothing(
    api: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker
) -> None:
    cert = issue("shared")
    owner = (await create_device(api, "owner"))["id"]["id"]
    other = (await create_device(api, "other"))["id"]["id"]
    await switch(api, owner, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)
    await switch(api, other, "ACCESS_TOKEN", credentialsId="other-token")
    changes = fake_broker.changes

    response = await switch(api, other, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)

    assert_problem(response, 409, "Device credentials are already assigned to another device!")
    assert await statuses(store, other) == [("ACCESS_TOKEN", "active")]
    assert fake_broker.changes == changes


async def test_token_of_another_device_is_409(api: httpx.AsyncClient) -> None:
    owner = (await create_device(api, "owner"))["id"]["id"]
    other = (await create_device(api, "other"))["id"]["id"]
    await switch(api, owner, "ACCESS_TOKEN", credentialsId="the-token")
    response = await switch(api, other, "ACCESS_TOKEN", credentialsId="the-token")
    assert_problem(response, 409, "already assigned to another device")


async def test_switch_for_an_unknown_device_is_404_as_the_reference_says(
    api: httpx.AsyncClient,
) -> None:
    cert = issue("ghost")
    response = await switch(api, str(uuid4()), "X509_CERTIFICATE", credentialsValue=cert.cert_pem)
    assert_problem(response, 404, "Can't assign device credentials to non-existent device!")


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
    device_id = (await create_device(api))["id"]["id"]
    await switch(api, device_id, "ACCESS_TOKEN", credentialsId="still-here")
    changes = fake_broker.changes
    value = make_value()

    response = await switch(api, device_id, "X509_CERTIFICATE", credentialsValue=value)

    assert_problem(response, 400, phrase)
    assert "PRIVATE KEY-----" not in response.text
    assert await statuses(store, device_id) == [("ACCESS_TOKEN", "active")]
    assert fake_broker.changes == changes


async def test_expired_certificate_is_accepted_when_asked(api: httpx.AsyncClient) -> None:
    device_id = (await create_device(api))["id"]["id"]
    past = dt.datetime.now(UTC) - dt.timedelta(days=1)
    cert = issue("meter-1", not_before=past - dt.timedelta(days=30), not_after=past)
    response = await switch(
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
    first = (await create_device(api, "chained"))["id"]["id"]
    second = (await create_device(api, "bare-key"))["id"]["id"]
    chained = await switch(
        api, first, "X509_CERTIFICATE", credentialsValue=leaf.cert_pem + ca.cert_pem
    )
    bare = await switch(api, second, "X509_CERTIFICATE", credentialsValue=issue("k").public_key_pem)

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
    device_id = (await create_device(api))["id"]["id"]
    response = await switch(api, device_id, "MQTT_BASIC", credentialsValue=value)
    assert_problem(response, 400, phrase)


async def test_basic_credentials_with_a_new_password_for_the_same_user_are_409(
    api: httpx.AsyncClient,
) -> None:
    device_id = (await create_device(api))["id"]["id"]
    same = json.dumps({"userName": "u", "password": "pw-1"})
    other = json.dumps({"userName": "u", "password": "pw-2"})
    assert (await switch(api, device_id, "MQTT_BASIC", credentialsValue=same)).status_code == 200
    assert (await switch(api, device_id, "MQTT_BASIC", credentialsValue=same)).status_code == 200
    response = await switch(api, device_id, "MQTT_BASIC", credentialsValue=other)
    assert_problem(response, 409, "another password or client id")


async def test_unknown_credentials_type_is_400(api: httpx.AsyncClient) -> None:
    device_id = (await create_device(api))["id"]["id"]
    response = await switch(api, device_id, "LWM2M_CREDENTIALS", credentialsValue="x")
    assert_problem(response, 400, "credentialsType")


async def test_device_without_credentials_has_none_to_show(api: httpx.AsyncClient) -> None:
    device_id = (await create_device(api))["id"]["id"]
    assert_problem(await api.get(f"/api/device/{device_id}/credentials"), 404, "no credentials")


async def test_a_revoked_credential_is_shown_when_no_other_remains(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device_id = (await create_device(api))["id"]["id"]
    cert = issue("meter-1")
    await switch(api, device_id, "X509_CERTIFICATE", credentialsValue=cert.cert_pem)
    await store.revoke_x509(UUID(device_id))

    shown = (await api.get(f"/api/device/{device_id}/credentials")).json()

    assert shown["status"] == CredentialStatus.REVOKED.value
    assert shown["credentialsType"] == CredentialType.X509_CERTIFICATE.value
