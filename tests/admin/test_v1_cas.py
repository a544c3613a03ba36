"""/api/v1 trusted CAs: add, list, get, delete, and their CRLs."""

import uuid
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auth.certificate import parse_credential
from tests.admin.conftest import FakeBroker
from tests.certgen import Issued, issue, revocation_list


@pytest.fixture
def device_ca() -> Issued:
    return issue("Fleet CA", ca=True)


async def add_ca(api: httpx.AsyncClient, pem: str, **extra: Any) -> httpx.Response:
    return await api.post("/api/v1/trusted-cas", json={"name": "fleet", "pem": pem, **extra})


async def test_add_list_get_delete(
    api: httpx.AsyncClient, device_ca: Issued, fake_broker: FakeBroker
) -> None:
    added = await add_ca(api, device_ca.cert_pem, cnRegex=r"meter-(\d+)", createDevices=True)
    assert added.status_code == 201
    body = added.json()
    assert body["name"] == "fleet"
    assert body["subject"] == "CN=Fleet CA"
    assert body["spkiSha256"] == parse_credential(device_ca.cert_pem).spki_sha256
    assert body["cnRegex"] == r"meter-(\d+)"
    assert body["createDevices"] is True
    assert body["crl"] is None
    assert fake_broker.changes == 1

    assert (await api.get("/api/v1/trusted-cas")).json() == [body]
    assert (await api.get(f"/api/v1/trusted-cas/{body['id']}")).json() == body

    deleted = await api.delete(f"/api/v1/trusted-cas/{body['id']}")
    assert deleted.status_code == 204
    assert (await api.get("/api/v1/trusted-cas")).json() == []
    assert fake_broker.changes == 2


@pytest.mark.parametrize(
    ("pem", "extra", "expected"),
    [
        (None, {"cnRegex": "meter-(\\d+"}, "is not a valid regular expression"),
        ("leaf", {}, "is not a CA certificate"),
        ("public-key", {}, "must be a certificate, not a bare public key"),
        ("garbage", {}, "not PEM"),
        (None, {"createDevice": True}, "createDevice"),
        ("no-cert-sign", {}, "may not sign certificates: its key usage lacks keyCertSign"),
    ],
    ids=["bad-regex", "leaf-not-ca", "bare-key", "garbage", "misspelt-field", "no-cert-sign"],
)
async def test_what_cannot_be_trusted_is_400(
    api: httpx.AsyncClient,
    device_ca: Issued,
    fake_broker: FakeBroker,
    pem: str | None,
    extra: dict[str, Any],
    expected: str,
) -> None:
    leaf = issue("meter-1", issuer=device_ca)
    # RFC 5280 §4.2.1.3: a CA's key usage, when present, includes keyCertSign to issue.
    signing_only = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    given = {
        None: device_ca.cert_pem,
        "leaf": leaf.cert_pem,
        "public-key": device_ca.public_key_pem,
        "garbage": "hello",
        "no-cert-sign": issue("Signing CA", ca=True, key_usage=signing_only).cert_pem,
    }[pem]
    response = await add_ca(api, given, **extra)
    assert response.status_code == 400, response.text
    assert expected in response.json()["message"]
    assert fake_broker.changes == 0


async def test_the_same_name_or_key_twice_is_409(
    api: httpx.AsyncClient, device_ca: Issued, fake_broker: FakeBroker
) -> None:
    assert (await add_ca(api, device_ca.cert_pem)).status_code == 201
    same_name = await add_ca(api, issue("Other CA", ca=True).cert_pem)
    assert same_name.status_code == 409
    assert "already exists" in same_name.json()["message"]
    same_key = await api.post(
        "/api/v1/trusted-cas", json={"name": "again", "pem": device_ca.cert_pem}
    )
    assert same_key.status_code == 409
    assert "already trusted (as 'fleet')" in same_key.json()["message"]
    assert fake_broker.changes == 1


async def test_unknown_ca_is_404(api: httpx.AsyncClient, fake_broker: FakeBroker) -> None:
    url = f"/api/v1/trusted-cas/{uuid.uuid4()}"
    assert (await api.get(url)).status_code == 404
    assert (await api.delete(url)).status_code == 404
    assert (await api.delete(f"{url}/crl")).status_code == 404
    crl = await api.put(f"{url}/crl", content="x", headers={"content-type": "text/plain"})
    assert crl.status_code == 404
    assert "does not exist" in crl.json()["message"]
    assert fake_broker.changes == 0


@pytest.mark.parametrize("form", ["pem-text", "pem-file", "der", "json"])
async def test_a_crl_is_stored_in_every_form_it_comes_in(
    api: httpx.AsyncClient, device_ca: Issued, fake_broker: FakeBroker, form: str
) -> None:
    ca_id = (await add_ca(api, device_ca.cert_pem)).json()["id"]
    crl = revocation_list(device_ca, 7, 9)
    pem = crl.public_bytes(Encoding.PEM)
    url = f"/api/v1/trusted-cas/{ca_id}/crl"
    sent = {
        "pem-text": {"content": pem, "headers": {"content-type": "text/plain"}},
        "pem-file": {"content": pem, "headers": {"content-type": "application/x-pem-file"}},
        "der": {
            "content": crl.public_bytes(Encoding.DER),
            "headers": {"content-type": "application/pkix-crl"},
        },
        "json": {"json": {"crl": pem.decode()}},
    }[form]
    response = await api.put(url, **sent)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    summary = response.json()["crl"]
    assert summary["entries"] == 2
    assert summary["nextUpdate"] == int(crl.next_update_utc.timestamp() * 1000)  # type: ignore[union-attr]
    assert "error" not in summary or summary["error"] is None
    assert (await api.get(f"/api/v1/trusted-cas/{ca_id}")).json()["crl"] == summary
    assert fake_broker.changes == 2

    cleared = await api.delete(url)
    assert cleared.status_code == 200
    assert cleared.json()["crl"] is None
    assert fake_broker.changes == 3


@pytest.mark.parametrize(
    ("content", "content_type", "status", "expected"),
    [
        (b"hello", "text/plain", 400, "CRL for trusted CA 'fleet': not a CRL"),
        (
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
            "text/plain",
            400,
            "not a CRL",
        ),
        (b"signed-by-other", "text/plain", 400, "is not signed by CA 'CN=Fleet CA'"),
        (b'{"crl": 1}', "application/json", 400, 'JSON {"crl": "<PEM>"}: crl: Input should be'),
        (b'{"clr": "x"}', "application/json", 400, "crl: Field required; clr: Extra inputs"),
        (b'{"crl": ' + b"[" * 1000, "application/json", 400, "not valid JSON: arrays and"),
        (b"x", "application/octet-stream", 415, "application/pkix-crl"),
    ],
    ids=[
        "garbage",
        "bad-der",
        "other-signer",
        "json-not-text",
        "json-misspelt",
        "json-deep",
        "media-type",
    ],
)
async def test_a_bad_crl_is_refused_saying_why(
    api: httpx.AsyncClient,
    device_ca: Issued,
    fake_broker: FakeBroker,
    content: bytes,
    content_type: str,
    status: int,
    expected: str,
) -> None:
    ca_id = (await add_ca(api, device_ca.cert_pem)).json()["id"]
    if content == b"signed-by-other":
        impostor = issue("Impostor", ca=True)
        content = revocation_list(device_ca, 7, signer=impostor).public_bytes(Encoding.PEM)
    response = await api.put(
        f"/api/v1/trusted-cas/{ca_id}/crl", content=content, headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    assert expected in response.json()["message"]
    # One line, not echoing the body (pydantic's own text did both).
    assert "\n" not in response.json()["message"]
    assert "[[[" not in response.json()["message"]
    assert (await api.get(f"/api/v1/trusted-cas/{ca_id}")).json()["crl"] is None
    assert fake_broker.changes == 1  # the CA only


async def test_a_device_is_bound_to_a_trusted_ca_and_unbound(
    api: httpx.AsyncClient, device_ca: Issued, fake_broker: FakeBroker
) -> None:
    ca = (await add_ca(api, device_ca.cert_pem)).json()
    device = (await api.post("/api/device", json={"name": "pump-2"})).json()["id"]["id"]
    bound = await api.put(f"/api/v1/devices/{device}/trusted-ca", json={"caId": ca["id"]})
    assert bound.status_code == 200, bound.text
    assert (bound.json()["name"], bound.json()["boundCaId"]) == ("pump-2", ca["id"])
    unbound = await api.put(f"/api/v1/devices/{device}/trusted-ca", json={"caId": None})
    assert unbound.json()["boundCaId"] is None
    unknown_ca = await api.put(
        f"/api/v1/devices/{device}/trusted-ca", json={"caId": str(uuid.uuid4())}
    )
    assert unknown_ca.status_code == 404
    assert "trusted CA" in unknown_ca.text
    unknown_device = await api.put(
        f"/api/v1/devices/{uuid.uuid4()}/trusted-ca", json={"caId": ca["id"]}
    )
    assert unknown_device.status_code == 404
    assert (await api.put(f"/api/v1/devices/{device}/trusted-ca", json={})).status_code == 400
