"""The Trusted CAs page: add (pasted or uploaded), refuse what cannot be a CA, CRL upload,
delete with its confirmation step."""

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from auth.certificate import parse_credential
from storage.records import TrustedCA
from storage.sql import SqlCredentialStore
from tests.admin.conftest import FakeBroker
from tests.admin.web.conftest import csrf_of, post_form
from tests.certgen import Issued, issue, revocation_list


@pytest.fixture
def authority() -> Issued:
    return issue("Plant Device CA", ca=True)


@pytest.fixture
async def trusted(store: SqlCredentialStore, authority: Issued) -> TrustedCA:
    return await store.add_trusted_ca("plant", parse_credential(authority.cert_pem))


async def test_add_a_ca_with_its_rules(
    ui: httpx.AsyncClient, store: SqlCredentialStore, fake_broker: FakeBroker, authority: Issued
) -> None:
    response = await post_form(
        ui,
        "/ui/cas",
        "/ui/cas",
        {
            "name": "plant",
            "pem": authority.cert_pem,
            "cn_regex": r"^(.*)\.plant$",
            "create_devices": "yes",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/cas?done=ca-added"
    [ca] = await store.list_trusted_cas()
    assert (ca.name, ca.cn_regex, ca.create_devices) == ("plant", r"^(.*)\.plant$", True)
    assert fake_broker.changes == 1
    page = (await ui.get("/ui/cas")).text
    assert "CN=Plant Device CA" in page
    assert "Creates devices" in page
    assert ca.spki_sha256 in page


async def test_add_a_ca_from_uploaded_files_pem_or_der(
    ui: httpx.AsyncClient, store: SqlCredentialStore, authority: Issued
) -> None:
    other = issue("Second CA", ca=True)
    token = csrf_of((await ui.get("/ui/cas")).text)
    for name, filename, content in (
        ("from-der", "ca.der", authority.cert_der),
        ("from-pem", "ca.pem", other.cert_pem.encode()),
    ):
        response = await ui.post(
            "/ui/cas",
            data={"csrf_token": token, "name": name},
            files={"pem_file": (filename, content, "application/octet-stream")},
        )
        assert response.status_code == 303, response.text
    names = {ca.name: ca.subject for ca in await store.list_trusted_cas()}
    assert names == {"from-der": "CN=Plant Device CA", "from-pem": "CN=Second CA"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "leaf", "pem": issue("device-1").cert_pem}, "is not a CA certificate"),
        ({"name": "", "pem": "x"}, "Enter a name for the CA."),
        ({"name": "nothing", "pem": ""}, "Paste the CA certificate"),
        (
            {"name": "bad-rule", "pem": issue("CA", ca=True).cert_pem, "cn_regex": "(unclosed"},
            "not a valid regular expression",
        ),
    ],
    ids=["leaf-certificate", "no-name", "no-pem", "bad-regex"],
)
async def test_refused_cas_are_shown_inline(
    ui: httpx.AsyncClient, store: SqlCredentialStore, fields: dict[str, str], message: str
) -> None:
    response = await post_form(ui, "/ui/cas", "/ui/cas", fields)
    assert response.status_code == 400
    assert message in response.text
    if fields["name"]:
        assert f'value="{fields["name"]}"' in response.text
    assert await store.list_trusted_cas() == []


async def test_crl_upload_and_removal(
    ui: httpx.AsyncClient,
    store: SqlCredentialStore,
    fake_broker: FakeBroker,
    authority: Issued,
    trusted: TrustedCA,
) -> None:
    crl = revocation_list(authority, 1234, 5678).public_bytes(Encoding.DER)
    token = csrf_of((await ui.get("/ui/cas")).text)
    response = await ui.post(
        f"/ui/cas/{trusted.id}/crl",
        data={"csrf_token": token},
        files={"crl_file": ("plant.crl", crl, "application/pkix-crl")},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/cas?done=crl-saved"
    [stored] = await store.list_trusted_cas()
    assert stored.crl_pem is not None
    assert stored.crl_pem.startswith("-----BEGIN X509 CRL-----")
    assert "2 revoked" in (await ui.get("/ui/cas")).text
    cleared = await post_form(ui, "/ui/cas", f"/ui/cas/{trusted.id}/crl", {"clear": "yes"})
    assert cleared.headers["location"] == "/ui/cas?done=crl-cleared"
    assert (await store.list_trusted_cas())[0].crl_pem is None
    assert fake_broker.changes == 2


async def test_a_pasted_crl_past_64_kib_is_taken_whole(
    ui: httpx.AsyncClient, store: SqlCredentialStore, authority: Issued, trusted: TrustedCA
) -> None:
    """A pasted CRL is bound by http_max_crl_bytes, as an uploaded one is; before, the text
    was cut at 64 KiB and the CRL refused as "not a CRL"."""
    pem = revocation_list(authority, *range(1, 3000)).public_bytes(Encoding.PEM).decode()
    assert len(pem) > 64 * 1024
    response = await post_form(ui, "/ui/cas", f"/ui/cas/{trusted.id}/crl", {"crl": pem})
    assert response.status_code == 303, response.text[-300:]
    assert "2999 revoked" in (await ui.get("/ui/cas")).text


async def test_a_crl_signed_by_someone_else_is_refused(
    ui: httpx.AsyncClient, store: SqlCredentialStore, authority: Issued, trusted: TrustedCA
) -> None:
    forged = revocation_list(authority, 1, signer=issue("Other CA", ca=True))
    token = csrf_of((await ui.get("/ui/cas")).text)
    response = await ui.post(
        f"/ui/cas/{trusted.id}/crl",
        data={"csrf_token": token},
        files={"crl_file": ("plant.crl", forged.public_bytes(Encoding.PEM), "text/plain")},
    )
    assert response.status_code == 400
    assert "the CRL is not signed by CA" in response.text
    assert (await store.list_trusted_cas())[0].crl_pem is None


async def test_an_empty_crl_upload_says_what_to_choose(
    ui: httpx.AsyncClient, trusted: TrustedCA
) -> None:
    response = await post_form(ui, "/ui/cas", f"/ui/cas/{trusted.id}/crl", {})
    assert response.status_code == 400
    assert "Choose the CRL file" in response.text


async def test_delete_asks_first_then_deletes(
    ui: httpx.AsyncClient, store: SqlCredentialStore, trusted: TrustedCA
) -> None:
    confirm = await ui.get(f"/ui/cas/{trusted.id}/delete")
    assert "Stop trusting “plant”?" in confirm.text
    assert len(await store.list_trusted_cas()) == 1
    page = f"/ui/cas/{trusted.id}/delete"
    response = await post_form(ui, page, page, {})
    assert response.headers["location"] == "/ui/cas?done=ca-deleted"
    assert await store.list_trusted_cas() == []
