"""``Authenticator.decide_credential``: a certless connection decided again from the id of
the credential it was admitted with, as a cluster survivor does for a dead member's client's
will. The id comes from a will entry in NATS, written by another member: one that is no UUID
(another version's, or a damaged entry) is a one-line refusal, not a ValueError out of the
decision. Real SQLite credential store."""

from auth.decision import Reason
from broker.authn import Authenticator
from storage.sql import SqlCredentialStore


async def test_an_unreadable_credential_id_is_refused_in_one_line(
    sqlite_store: SqlCredentialStore,
) -> None:
    decision = await Authenticator(sqlite_store).decide_credential("not-a-uuid\nforged line")
    assert not decision.allowed
    assert decision.reason is Reason.UNKNOWN_TOKEN
    assert decision.detail == "credential id 'not-a-uuid\\nforged line' unreadable"
    assert "\n" not in decision.detail


async def test_a_credential_deleted_since_is_refused(sqlite_store: SqlCredentialStore) -> None:
    device = await sqlite_store.create_device("t1")
    token = await sqlite_store.add_token_credential(device.id, "token-of-t1-0123456789")
    decide = Authenticator(sqlite_store)
    assert (await decide.decide_credential(str(token.id))).allowed
    await sqlite_store.delete_device(device.id)
    decision = await decide.decide_credential(str(token.id))
    assert decision.detail == f"credential {token.id} no longer exists"
