"""Trusted CAs and the authentication history."""

import uuid

import pytest

from nanoiot.errors import ConflictError, NotFoundError, ValidationError
from storage.records import AuthOutcome
from storage.sql import SqlCredentialStore
from tests.storage.helpers import ca_certificate, public_key

CRL = "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"


async def test_add_list_crl_delete_ca(store: SqlCredentialStore) -> None:
    parsed = ca_certificate("Factory CA")
    ca = await store.add_trusted_ca(
        "factory", parsed, cn_regex=r"^sensor-\d+$", create_devices=True
    )
    assert (ca.name, ca.subject, ca.spki_sha256) == ("factory", "CN=Factory CA", parsed.spki_sha256)
    assert (ca.cn_regex, ca.create_devices, ca.enabled, ca.crl_pem) == (
        r"^sensor-\d+$",
        True,
        True,
        None,
    )
    assert ca.not_after == parsed.not_after
    other = await store.add_trusted_ca("another", ca_certificate("Other CA"))
    assert [c.name for c in await store.list_trusted_cas()] == ["another", "factory"]
    with_crl = await store.set_ca_crl(ca.id, CRL)
    assert with_crl.crl_pem == CRL
    assert (await store.set_ca_crl(ca.id, None)).crl_pem is None
    await store.delete_trusted_ca(ca.id)
    assert await store.list_trusted_cas() == [other]
    with pytest.raises(NotFoundError):
        await store.delete_trusted_ca(ca.id)
    with pytest.raises(NotFoundError):
        await store.set_ca_crl(uuid.uuid4(), CRL)


async def test_ca_conflicts_and_validation(store: SqlCredentialStore) -> None:
    parsed = ca_certificate()
    await store.add_trusted_ca("one", parsed)
    with pytest.raises(ConflictError, match="named 'one' already exists"):
        await store.add_trusted_ca("one", ca_certificate())
    with pytest.raises(ConflictError, match=r"already trusted \(as 'one'\)"):
        await store.add_trusted_ca("two", parsed)
    with pytest.raises(ValidationError, match="not a bare public key"):
        await store.add_trusted_ca("bare", public_key())
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        await store.add_trusted_ca("bad-re", ca_certificate(), cn_regex="(")


async def test_auth_events_newest_first_and_filtered(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    await store.record_auth_event(
        outcome=AuthOutcome.DENIED,
        reason="unknown key",
        fingerprint="ab" * 32,
        remote_address="192.0.2.1:50000",
    )
    await store.record_auth_event(outcome=AuthOutcome.ALLOWED, reason="ok", device_id=device.id)
    await store.record_auth_event(outcome=AuthOutcome.DENIED, reason="revoked", device_id=device.id)
    events = await store.list_auth_events()
    assert [e.reason for e in events] == ["revoked", "ok", "unknown key"]
    assert events[0].id > events[1].id > events[2].id
    assert events[0].at >= events[2].at
    assert events[0].at.tzinfo is not None
    assert (events[2].fingerprint, events[2].remote_address, events[2].device_id) == (
        "ab" * 32,
        "192.0.2.1:50000",
        None,
    )
    by_device = await store.list_auth_events(device_id=device.id)
    assert [e.reason for e in by_device] == ["revoked", "ok"]
    denied = await store.list_auth_events(outcome=AuthOutcome.DENIED)
    assert [e.reason for e in denied] == ["revoked", "unknown key"]
    both = await store.list_auth_events(device_id=device.id, outcome=AuthOutcome.ALLOWED)
    assert [e.reason for e in both] == ["ok"]
    assert len(await store.list_auth_events(limit=1)) == 1
