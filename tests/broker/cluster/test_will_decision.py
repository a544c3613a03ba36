"""A dead member's client's will decided again before a survivor publishes it
(``broker.cluster.will_decision``), against a real SQLite credential store: refused once its
X.509 credential is revoked, its device disabled or deleted, its token's credential
disabled; published (None) while still admitted, when the store cannot answer, and for an
entry that does not say how its connection was admitted."""

import asyncio
import dataclasses
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from auth.certificate import parse_credential
from auth.kinds import CredentialStatus
from broker.authn import Authenticator
from broker.cluster import will_decision
from broker.cluster.will_decision import refusal_now
from broker.cluster.will_entries import StoredWill, decode_will, encode_will
from nanoiot.errors import StoreError
from storage.sql import SqlCredentialStore
from tests.certgen import issue


def _will(device_id: object, **how: object) -> StoredWill:
    will = StoredWill((str(device_id), "c"), 1, "devices/d/status", b"gone", 1, False, b"", 0)
    return dataclasses.replace(will, **how)  # type: ignore[arg-type]


async def _x509_will(store: SqlCredentialStore, name: str) -> StoredWill:
    issued = issue(name)
    device = await store.create_device(name)
    await store.add_x509_credential(device.id, parse_credential(issued.cert_pem.encode()))
    return _will(device.id, chain=(issued.cert.public_bytes(Encoding.DER),))


async def test_a_certificates_will_is_refused_once_revoked_or_its_device_deleted(
    sqlite_store: SqlCredentialStore,
) -> None:
    decide = Authenticator(sqlite_store)
    revoked, deleted = await _x509_will(sqlite_store, "d1"), await _x509_will(sqlite_store, "d2")
    assert await refusal_now(decide, revoked) is None
    assert await refusal_now(decide, deleted) is None
    await sqlite_store.revoke_x509(_id(revoked))
    await sqlite_store.delete_device(_id(deleted))
    assert "revoked" in (await refusal_now(decide, revoked) or "")
    assert "unknown certificate key" in (await refusal_now(decide, deleted) or "")


async def test_a_token_devices_will_is_refused_once_disabled_deleted_or_its_credential_off(
    sqlite_store: SqlCredentialStore,
) -> None:
    decide = Authenticator(sqlite_store)
    wills = []
    for name in ("t1", "t2", "t3"):
        device = await sqlite_store.create_device(name)
        token = await sqlite_store.add_token_credential(device.id, f"token-of-{name}-0123456789")
        wills.append(_will(device.id, credential=str(token.id)))
    for will in wills:
        assert await refusal_now(decide, will) is None
    await sqlite_store.set_device_enabled(_id(wills[0]), False)
    assert wills[1].credential is not None
    await sqlite_store.set_credential_status(UUID(wills[1].credential), CredentialStatus.DISABLED)
    await sqlite_store.delete_device(_id(wills[2]))
    assert "disabled" in (await refusal_now(decide, wills[0]) or "")
    assert "disabled" in (await refusal_now(decide, wills[1]) or "")
    assert "no longer exists" in (await refusal_now(decide, wills[2]) or "")


async def test_a_will_is_published_when_the_store_cannot_answer_or_the_entry_does_not_say(
    sqlite_store: SqlCredentialStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a single node, a store that cannot answer is no revocation."""
    decide = Authenticator(sqlite_store)
    certificate = await _x509_will(sqlite_store, "d1")
    device = await sqlite_store.create_device("t1")
    token = await sqlite_store.add_token_credential(device.id, "token-of-t1-0123456789")
    by_token = _will(device.id, credential=str(token.id))
    await sqlite_store.revoke_x509(_id(certificate))
    await sqlite_store.set_device_enabled(device.id, False)
    assert await refusal_now(decide, _will(device.id)) is None  # an earlier version's entry

    async def down(*_args: object) -> object:
        raise StoreError("database is locked")

    for method in ("find_x509", "get_credential"):
        monkeypatch.setattr(sqlite_store, method, down)
    assert await refusal_now(decide, certificate) is None
    assert await refusal_now(decide, by_token) is None

    async def hung(*_args: object) -> object:
        await asyncio.Event().wait()  # never set: slower than DECIDE_WITHIN
        raise AssertionError("never answered")

    monkeypatch.setattr(will_decision, "DECIDE_WITHIN", 0.05)
    for method in ("find_x509", "get_credential"):
        monkeypatch.setattr(sqlite_store, method, hung)
    assert await refusal_now(decide, certificate) is None
    assert await refusal_now(decide, by_token) is None


def test_how_a_connection_was_admitted_reads_back_and_an_earlier_entry_still_reads() -> None:
    chained = _will("d", chain=(b"\x30\x01leaf", b"\x30\x02ca"))
    assert decode_will(encode_will(chained)) == chained
    by_token = _will("d", credential="0190d4a0-0000-7000-8000-000000000001")
    assert decode_will(encode_will(by_token)) == by_token
    earlier = encode_will(_will("d")).replace(b', "chain": [], "credential": null', b"")
    assert b"chain" not in earlier
    assert decode_will(earlier) == _will("d")


def _id(will: StoredWill) -> UUID:
    return UUID(will.key[0])
