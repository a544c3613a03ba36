"""Credentials: X.509 (certificates and bare keys), tokens, basic; conflicts and life cycle."""

import uuid
from dataclasses import replace

import pytest

from auth.kinds import CredentialStatus, CredentialType
from nanoiot.errors import ConflictError, NotFoundError, ValidationError
from storage.sql import SqlCredentialStore
from tests.storage.helpers import ca_certificate, public_key, x509

ACTIVE, DISABLED, REVOKED = (
    CredentialStatus.ACTIVE,
    CredentialStatus.DISABLED,
    CredentialStatus.REVOKED,
)
SAME_DEVICE = "Specified credentials are already registered!"
OTHER_DEVICE = r"Device credentials are already assigned to another device! \(device 'first'\)"


@pytest.mark.parametrize("kind", ["ec", "rsa"])
async def test_add_certificate_keeps_its_details(store: SqlCredentialStore, kind: str) -> None:
    device = await store.create_device("d")
    parsed = x509("d", kind)
    credential = await store.add_x509_credential(device.id, parsed)
    assert credential.type == CredentialType.X509_CERTIFICATE
    assert credential.status == ACTIVE
    assert (credential.spki_sha256, credential.credentials_id, credential.pem) == (
        parsed.spki_sha256,
        parsed.credentials_id,
        parsed.pem,
    )
    assert (credential.subject, credential.issuer, credential.serial) == (
        "CN=d",
        "CN=d",
        parsed.serial,
    )
    assert credential.not_before == parsed.not_before
    assert credential.not_after == parsed.not_after
    assert await store.get_credential(credential.id) == credential
    assert await store.list_credentials(device.id) == [credential]


async def test_add_bare_public_key(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    parsed = public_key()
    credential = await store.add_x509_credential(device.id, parsed)
    assert credential.subject is None
    assert credential.not_after is None
    match = await store.find_x509(parsed.spki_sha256)
    assert match is not None
    assert match.credential == credential


async def test_x509_conflicts(store: SqlCredentialStore) -> None:
    first = await store.create_device("first")
    second = await store.create_device("second")
    parsed = x509()
    await store.add_x509_credential(first.id, parsed)
    with pytest.raises(ConflictError, match=SAME_DEVICE):
        await store.add_x509_credential(first.id, parsed)
    with pytest.raises(ConflictError, match=OTHER_DEVICE):
        await store.add_x509_credential(second.id, parsed)
    assert await store.list_credentials(second.id) == []


async def test_unknown_device_cannot_get_a_credential(store: SqlCredentialStore) -> None:
    message = "Can't assign device credentials to non-existent device!"
    with pytest.raises(NotFoundError, match=message):
        await store.add_x509_credential(uuid.uuid4(), x509())
    with pytest.raises(NotFoundError, match=message):
        await store.add_token_credential(uuid.uuid4(), "tok")
    with pytest.raises(NotFoundError, match=message):
        await store.add_basic_credential(uuid.uuid4(), username="u", password="p")


async def test_a_revoked_key_can_never_be_added_again(store: SqlCredentialStore) -> None:
    first = await store.create_device("first")
    second = await store.create_device("second")
    parsed = x509()
    await store.add_x509_credential(first.id, parsed)
    await store.revoke_x509(first.id, parsed.spki_sha256)
    with pytest.raises(ConflictError, match=SAME_DEVICE):
        await store.add_x509_credential(first.id, parsed)
    with pytest.raises(ConflictError, match=OTHER_DEVICE):
        await store.add_x509_credential(second.id, parsed)


async def test_token_credential_and_conflicts(store: SqlCredentialStore) -> None:
    first = await store.create_device("first")
    second = await store.create_device("second")
    credential = await store.add_token_credential(first.id, "A1_TEST_TOKEN")
    assert (credential.type, credential.token) == (CredentialType.ACCESS_TOKEN, "A1_TEST_TOKEN")
    with pytest.raises(ConflictError, match=SAME_DEVICE):
        await store.add_token_credential(first.id, "A1_TEST_TOKEN")
    with pytest.raises(ConflictError, match=OTHER_DEVICE):
        await store.add_token_credential(second.id, "A1_TEST_TOKEN")
    with pytest.raises(ValidationError):
        await store.add_token_credential(first.id, "")
    match = await store.find_token("A1_TEST_TOKEN")
    assert match is not None
    # The token is in the answer that created it only: the store keeps a hash.
    assert (match.device, match.credential) == (first, replace(credential, token=None))
    assert await store.find_token("other") is None


async def test_basic_credential(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    credential = await store.add_basic_credential(
        device.id, username="user", password="pw", client_id="client-1", application=True
    )
    assert credential.type == CredentialType.MQTT_BASIC
    assert (credential.username, credential.client_id, credential.application) == (
        "user",
        "client-1",
        True,
    )
    assert "pw" not in repr(credential)
    match = await store.check_basic("user", "pw", "client-1")
    assert match is not None
    assert (match.device, match.credential) == (device, credential)
    assert await store.check_basic("user", "wrong", "client-1") is None
    assert await store.check_basic("user", "pw", "client-2") is None
    assert await store.check_basic("user", "pw", None) is None
    assert await store.check_basic("nobody", "pw", "client-1") is None


async def test_basic_without_client_id_accepts_any(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    await store.add_basic_credential(device.id, username="user", password="pw")
    assert await store.check_basic("user", "pw", "anything") is not None
    assert await store.check_basic("user", "pw", None) is not None


async def test_basic_user_name_conflicts(store: SqlCredentialStore) -> None:
    first = await store.create_device("first")
    second = await store.create_device("second")
    await store.add_basic_credential(first.id, username="user", password="pw")
    with pytest.raises(ConflictError, match=SAME_DEVICE):
        await store.add_basic_credential(first.id, username="user", password="x")
    with pytest.raises(ConflictError, match=OTHER_DEVICE):
        await store.add_basic_credential(second.id, username="user", password="x")
    with pytest.raises(ValidationError):
        await store.add_basic_credential(first.id, username="other", password="")


async def test_rotation_two_active_certificates(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    old, new = x509("d"), x509("d", "rsa")
    await store.add_x509_credential(device.id, old)
    await store.add_x509_credential(device.id, new)
    credentials = await store.list_credentials(device.id)
    assert [c.status for c in credentials] == [ACTIVE, ACTIVE]
    for parsed in (old, new):
        match = await store.find_x509(parsed.spki_sha256)
        assert match is not None
        assert match.device == device
    revoked = await store.revoke_x509(device.id, old.spki_sha256.upper())
    assert [c.spki_sha256 for c in revoked] == [old.spki_sha256]
    assert [c.status for c in await store.list_credentials(device.id)] == [REVOKED, ACTIVE]


async def test_revoke_all_and_unknown_fingerprint(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    token = await store.add_token_credential(device.id, "tok")
    for _ in range(2):
        await store.add_x509_credential(device.id, x509())
    revoked = await store.revoke_x509(device.id)
    assert len(revoked) == 2
    assert all(c.status == REVOKED for c in revoked)
    assert (await store.get_credential(token.id)).status == ACTIVE  # only X.509 is revoked
    assert await store.revoke_x509(device.id) == []  # nothing left to revoke
    with pytest.raises(NotFoundError, match=r"no X\.509 credential with fingerprint"):
        await store.revoke_x509(device.id, "00" * 32)
    with pytest.raises(NotFoundError):
        await store.revoke_x509(uuid.uuid4())


async def test_status_transitions_and_revocation_is_final(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    credential = await store.add_x509_credential(device.id, x509())
    assert (await store.set_credential_status(credential.id, DISABLED)).status == DISABLED
    assert (await store.set_credential_status(credential.id, ACTIVE)).status == ACTIVE
    assert (await store.set_credential_status(credential.id, REVOKED)).status == REVOKED
    for status in (ACTIVE, DISABLED):
        with pytest.raises(ValidationError, match="revocation is final"):
            await store.set_credential_status(credential.id, status)
    assert (await store.set_credential_status(credential.id, REVOKED)).status == REVOKED
    with pytest.raises(NotFoundError):
        await store.set_credential_status(uuid.uuid4(), ACTIVE)


@pytest.mark.parametrize("status", [DISABLED, REVOKED])
async def test_lookups_return_matches_whatever_the_status(
    store: SqlCredentialStore, status: CredentialStatus
) -> None:
    device = await store.create_device("d")
    parsed = x509()
    cert = await store.add_x509_credential(device.id, parsed)
    token = await store.add_token_credential(device.id, "tok")
    basic = await store.add_basic_credential(device.id, username="u", password="p")
    for credential in (cert, token, basic):
        await store.set_credential_status(credential.id, status)
    await store.set_device_enabled(device.id, False)
    found = [
        await store.find_x509(parsed.spki_sha256),
        await store.find_token("tok"),
        await store.check_basic("u", "p", None),
    ]
    for match in found:
        assert match is not None
        assert match.credential.status == status
        assert match.device.enabled is False
        # Same value types as every other read (the SQLite lookups take a shortcut).
        assert isinstance(match.credential.id, uuid.UUID)
        assert isinstance(match.credential.type, CredentialType)
        assert match.credential.created_at.tzinfo is not None
        assert match.credential.application is False
    assert await store.find_x509("ff" * 32) is None


async def test_create_device_with_certificate(store: SqlCredentialStore) -> None:
    parsed = x509("new")
    device, credential = await store.create_device_with_credential("new", x509=parsed)
    assert credential.device_id == device.id
    assert await store.list_credentials(device.id) == [credential]
    _, with_token = await store.create_device_with_credential("other", token="t0k")
    assert with_token.token == "t0k"


async def test_create_device_with_credential_is_atomic(store: SqlCredentialStore) -> None:
    parsed = x509()
    first, _ = await store.create_device_with_credential("first", x509=parsed)
    await store.add_token_credential(first.id, "taken")
    last_seq = await store.last_change_seq()
    with pytest.raises(ConflictError, match=OTHER_DEVICE):
        await store.create_device_with_credential("second", x509=parsed)
    with pytest.raises(ConflictError, match=OTHER_DEVICE):
        await store.create_device_with_credential("third", token="taken")
    # Nothing half-made: no device, no credential, no change-feed entry.
    assert [d.name for d in (await store.list_devices()).items] == ["first"]
    assert await store.last_change_seq() == last_seq
    with pytest.raises(ValidationError, match="exactly one"):
        await store.create_device_with_credential("both", x509=parsed, token="t")
    with pytest.raises(ValidationError, match="exactly one"):
        await store.create_device_with_credential("neither")


async def test_the_issuing_ca_of_a_certificate_outlives_the_ca(store: SqlCredentialStore) -> None:
    ca = await store.add_trusted_ca("fleet", ca_certificate())
    device, first = await store.create_device_with_credential(
        "d", x509=x509("d"), issuer_ca_id=ca.id
    )
    second = await store.add_x509_credential(device.id, x509("d"), issuer_ca_id=ca.id)
    pinned = await store.add_x509_credential(device.id, x509("d"))  # by an operator
    assert (first.issuer_ca_id, second.issuer_ca_id, pinned.issuer_ca_id) == (ca.id, ca.id, None)
    await store.delete_trusted_ca(ca.id)
    # The id stays (no foreign key): the mark that these leaves stood on a CA.
    for credential, expected in ((first, ca.id), (second, ca.id), (pinned, None)):
        assert credential.spki_sha256 is not None
        found = await store.find_x509(credential.spki_sha256)  # the connect path's lookup
        assert found is not None
        assert found.credential.issuer_ca_id == expected
        assert found.credential == await store.get_credential(credential.id)
