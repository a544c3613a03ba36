"""Text an operator stores and every list shows back must read as what it is: bidirectional
controls and other invisible format characters (Unicode category Cf, "Trojan Source",
CVE-2021-42574) are refused through the API as control characters are, with a one-line 400;
rows stored before the rule are served unchanged. And a CA's CN rule that Python's ``re``
would backtrack on for hours is harmless (RE2), one RE2 cannot use is a one-line 400."""

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from storage.models import DeviceRow
from storage.sql import SqlCredentialStore
from tests.admin.conftest import FakeBroker
from tests.admin.reference_helpers import assert_problem, create_device
from tests.certgen import issue

# Each is Unicode category Cf: it draws nothing, or reorders the text after it.
HIDDEN = {
    "RIGHT-TO-LEFT OVERRIDE": "\u202e",
    "LEFT-TO-RIGHT ISOLATE": "\u2066",
    "POP DIRECTIONAL ISOLATE": "\u2069",
    "LEFT-TO-RIGHT MARK": "\u200e",
    "RIGHT-TO-LEFT MARK": "\u200f",
    "ARABIC LETTER MARK": "\u061c",
    "ZERO WIDTH SPACE": "\u200b",
    "ZERO WIDTH JOINER": "\u200d",
    "BYTE ORDER MARK": "\ufeff",
}
REFUSED = "must not contain invisible formatting characters"


@pytest.mark.parametrize("char", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("field", ["name", "label", "type"])
async def test_hidden_characters_in_device_text_are_400(
    api: httpx.AsyncClient, fake_broker: FakeBroker, field: str, char: str
) -> None:
    body = {"name": "meter-1", field: f"invoice{char}gpj.exe"}
    response = await api.post("/api/device", json=body)
    assert_problem(response, 400, REFUSED, f"U+{ord(char):04X}")
    assert "\n" not in response.json()["message"]
    assert fake_broker.changes == 0


async def test_a_decomposed_name_that_shows_as_another_is_400(api: httpx.AsyncClient) -> None:
    await create_device(api, "Gérard")  # é as one code point (NFC)
    response = await api.post("/api/device", json={"name": "Ge\u0301rard"})
    assert_problem(response, 400, "normal form NFC", "'Ge\\u0301rard'")


async def test_hidden_characters_in_credential_text_are_400(api: httpx.AsyncClient) -> None:
    device = await create_device(api, "pump-1")
    url = f"/api/v1/devices/{device['id']['id']}/credentials"
    basic = {
        "credentialsType": "MQTT_BASIC",
        "username": "ops\u200b",
        "password": "pw-0123456789",
    }
    assert_problem(await api.post(url, json=basic), 400, REFUSED)
    with_device = {
        "device": {"name": "pump\u202e2"},
        "credentials": {"credentialsType": "ACCESS_TOKEN", "credentialsId": "tok-0123456789"},
    }
    assert_problem(await api.post("/api/device-with-credentials", json=with_device), 400, REFUSED)


@pytest.mark.parametrize("name", ["fleet\u202eac", "fleet\u200b", "Fle\u0301et"])
async def test_a_ca_name_that_shows_as_another_is_400(api: httpx.AsyncClient, name: str) -> None:
    pem = issue("Fleet CA", ca=True).cert_pem
    response = await api.post("/api/v1/trusted-cas", json={"name": name, "pem": pem})
    assert response.status_code == 400, response.text
    assert "CA name must" in response.json()["message"]


async def test_rows_stored_before_the_rule_are_served_unchanged(
    api: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    device = await store.create_device("legacy-1", label="old")
    spoofed = "legacy\u202e1"
    async with store._transactions() as session, session.begin():
        await session.execute(
            update(DeviceRow).where(DeviceRow.id == device.id).values(name=spoofed)
        )
    listed = (await api.get("/api/tenant/devices")).json()
    assert [d["name"] for d in listed["data"]] == [spoofed]
    fetched = await api.get(f"/api/device/{device.id}")
    assert fetched.json()["name"] == spoofed


@pytest.mark.parametrize("pattern", [r"(a+)+b", r"(a|aa)*c"])
async def test_a_catastrophic_cn_rule_is_stored_and_costs_nothing(
    api: httpx.AsyncClient, pattern: str
) -> None:
    pem = issue("Fleet CA", ca=True).cert_pem
    added = await api.post(
        "/api/v1/trusted-cas", json={"name": "fleet", "pem": pem, "cnRegex": pattern}
    )
    assert added.status_code == 201, added.text


@pytest.mark.parametrize(
    ("pattern", "phrase"),
    [
        (r"device-(\w)\1", "invalid escape sequence: \\1"),
        (r"(?=device)(.+)", "invalid perl operator"),
        ("x" * 300, "is 300 characters long, at most 256"),
    ],
    ids=["backreference", "lookahead", "too-long"],
)
async def test_a_cn_rule_re2_cannot_match_is_a_one_line_400(
    api: httpx.AsyncClient, fake_broker: FakeBroker, pattern: str, phrase: str
) -> None:
    pem = issue("Fleet CA", ca=True).cert_pem
    body: dict[str, Any] = {"name": "fleet", "pem": pem, "cnRegex": pattern}
    started = time.perf_counter()
    response = await api.post("/api/v1/trusted-cas", json=body)
    assert time.perf_counter() - started < 5
    assert_problem(response, 400, "CN rule '", phrase)
    assert "\n" not in response.json()["message"]
    assert fake_broker.changes == 0


async def test_a_certificate_subject_is_shown_escaped(api: httpx.AsyncClient) -> None:
    # A subject is the issuer's text, not the operator's: escaped, not refused. Before, the
    # override and the newline were stored and served as they are.
    device = await create_device(api, "pump-9")
    leaf = issue("invoice\u202egpj.exe\nforged")
    url = f"/api/v1/devices/{device['id']['id']}/credentials"
    added = await api.post(url, json={"credentialsType": "X509_CERTIFICATE", "pem": leaf.cert_pem})
    assert added.status_code == 201, added.text
    assert added.json()["subject"] == "CN=invoice\\u202egpj.exe\\nforged"
    ca = issue("Fleet\u200b CA", ca=True)
    trusted = await api.post("/api/v1/trusted-cas", json={"name": "fleet", "pem": ca.cert_pem})
    assert trusted.json()["subject"] == "CN=Fleet\\u200b CA"
