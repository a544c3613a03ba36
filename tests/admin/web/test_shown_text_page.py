"""The web UI's forms refuse text that would show as something else (bidirectional controls,
zero-width characters: Unicode category Cf) and CN rules RE2 cannot match, inline, as they
refuse a control character: the input kept, nothing stored."""

import httpx
import pytest

from auth.certificate import parse_credential
from storage.sql import SqlCredentialStore
from tests.admin.conftest import FakeBroker
from tests.admin.web.conftest import post_form
from tests.certgen import issue

REFUSED = "must not contain invisible formatting characters"


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"name": "invoice\u202egpj.exe"}, f"{REFUSED} (U+202E"),
        ({"name": "pump\u200b1"}, f"{REFUSED} (U+200B"),
        ({"name": "pump-1", "label": "Roof \u2066east\u2069"}, f"label {REFUSED} (U+2066"),
        ({"name": "Ge\u0301rard"}, "normal form NFC"),
    ],
    ids=["rlo-name", "zero-width-name", "isolate-label", "decomposed-name"],
)
async def test_add_device_refuses_text_that_shows_as_another(
    ui: httpx.AsyncClient,
    store: SqlCredentialStore,
    fake_broker: FakeBroker,
    fields: dict[str, str],
    phrase: str,
) -> None:
    response = await post_form(ui, "/ui/devices", "/ui/devices", fields)
    assert response.status_code == 400
    assert 'role="alert"' in response.text
    assert phrase in response.text
    assert (await store.list_devices()).total == 0
    assert fake_broker.changes == 0


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"name": "plant\u202e"}, f"CA name {REFUSED}"),
        (
            {"name": "plant", "cn_regex": r"(\w+)-\1"},
            "is not a valid regular expression for RE2 (invalid escape sequence: \\1)",
        ),
        ({"name": "plant", "cn_regex": "(?!x)(.*)"}, "invalid perl operator"),
    ],
    ids=["rlo-ca-name", "backreference", "lookahead"],
)
async def test_add_ca_refuses_hidden_names_and_rules_re2_cannot_match(
    ui: httpx.AsyncClient, store: SqlCredentialStore, fields: dict[str, str], phrase: str
) -> None:
    pem = issue("Plant Device CA", ca=True).cert_pem
    response = await post_form(ui, "/ui/cas", "/ui/cas", {"pem": pem, **fields})
    assert response.status_code == 400
    assert phrase in response.text
    assert await store.list_trusted_cas() == []


async def test_a_certificate_subject_is_shown_escaped_on_the_device_page(
    ui: httpx.AsyncClient, store: SqlCredentialStore
) -> None:
    leaf = issue("invoice\u202egpj.exe")
    device, _ = await store.create_device_with_credential(
        "pump-9", x509=parse_credential(leaf.cert_pem)
    )
    page = (await ui.get(f"/ui/devices/{device.id}")).text
    assert "CN=invoice\\u202egpj.exe" in page
    assert "\u202e" not in page
