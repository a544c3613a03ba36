"""The change feed: every mutation appends, pollers resume, other processes see it."""

from auth.kinds import CredentialStatus
from storage.records import AuthOutcome, ChangeKind
from storage.sql import SqlCredentialStore
from tests.storage.helpers import ca_certificate, x509


async def test_every_mutation_appends_a_change(store: SqlCredentialStore) -> None:
    assert await store.last_change_seq() == 0
    device = await store.create_device("d")
    cert = await store.add_x509_credential(device.id, x509())
    token = await store.add_token_credential(device.id, "tok")
    basic = await store.add_basic_credential(device.id, username="u", password="p")
    await store.set_credential_status(token.id, CredentialStatus.DISABLED)
    await store.revoke_x509(device.id)
    await store.set_device_enabled(device.id, False)
    await store.set_device_enabled(device.id, True)
    ca = await store.add_trusted_ca("ca", ca_certificate())
    await store.set_ca_crl(ca.id, None)
    await store.delete_trusted_ca(ca.id)
    await store.delete_device(device.id)
    changes = await store.changes_since(0)
    assert [(c.kind, c.device_id, c.credential_id) for c in changes] == [
        (ChangeKind.DEVICE_CREATED, device.id, None),
        (ChangeKind.CREDENTIAL_ADDED, device.id, cert.id),
        (ChangeKind.CREDENTIAL_ADDED, device.id, token.id),
        (ChangeKind.CREDENTIAL_ADDED, device.id, basic.id),
        (ChangeKind.CREDENTIAL_CHANGED, device.id, token.id),
        (ChangeKind.CREDENTIAL_CHANGED, device.id, cert.id),
        (ChangeKind.DEVICE_DISABLED, device.id, None),
        (ChangeKind.DEVICE_UPDATED, device.id, None),
        (ChangeKind.CA_CHANGED, None, None),
        (ChangeKind.CA_CHANGED, None, None),
        (ChangeKind.CA_CHANGED, None, None),
        (ChangeKind.DEVICE_DELETED, device.id, None),
    ]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(set(seqs))
    assert await store.last_change_seq() == seqs[-1]
    assert all(c.at.tzinfo is not None for c in changes)


async def test_no_change_without_a_mutation(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    seq = await store.last_change_seq()
    await store.set_device_enabled(device.id, True)  # already enabled
    await store.record_auth_event(outcome=AuthOutcome.DENIED, reason="x")
    await store.get_device(device.id)
    assert await store.last_change_seq() == seq


async def test_changes_since_resumes_and_limits(store: SqlCredentialStore) -> None:
    for name in "abcde":
        await store.create_device(name)
    first = await store.changes_since(0, limit=2)
    assert len(first) == 2
    rest = await store.changes_since(first[-1].seq)
    assert len(rest) == 3
    assert rest[0].seq > first[-1].seq
    assert await store.changes_since(rest[-1].seq) == []


async def test_a_change_from_another_process_is_visible(
    store: SqlCredentialStore, other_store: SqlCredentialStore
) -> None:
    device = await store.create_device("d")
    parsed = x509()
    credential = await store.add_x509_credential(device.id, parsed)
    before = await store.find_x509(parsed.spki_sha256)  # the lookup connection is open now
    assert before is not None
    assert before.credential.status == CredentialStatus.ACTIVE
    seen = await store.last_change_seq()
    # The admin CLI (another engine, like another process) revokes the key ...
    await other_store.revoke_x509(device.id, parsed.spki_sha256)
    # ... and the broker's next poll sees it at once.
    changes = await store.changes_since(seen)
    assert [(c.kind, c.credential_id) for c in changes] == [
        (ChangeKind.CREDENTIAL_CHANGED, credential.id)
    ]
    match = await store.find_x509(parsed.spki_sha256)
    assert match is not None
    assert match.credential.status == CredentialStatus.REVOKED


async def test_change_marker_moves_with_another_writers_change(
    store: SqlCredentialStore, other_store: SqlCredentialStore
) -> None:
    # Both backends have a cheap marker: followers read the feed only when it moves.
    before = await store.change_marker()
    assert before is not None
    assert await store.change_marker() == before  # nothing committed meanwhile
    await other_store.record_auth_event(outcome=AuthOutcome.DENIED, reason="x")
    assert await store.change_marker() == before  # a commit, but not of a change
    await other_store.create_device("d")
    after = await store.change_marker()
    assert after is not None
    assert after != before
