"""Devices: create, read, list, enable/disable, delete (on SQLite and PostgreSQL)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nanoiot.errors import ConflictError, NotFoundError, ValidationError
from storage.records import AuthOutcome
from storage.sql import MAX_PAGE, MAX_PAGE_SIZE, SqlCredentialStore
from tests.storage.helpers import x509


async def test_create_and_get(store: SqlCredentialStore) -> None:
    before = datetime.now(UTC)
    device = await store.create_device("sensor-1", type="thermo", label="Kitchen")
    assert (device.name, device.type, device.label, device.enabled) == (
        "sensor-1",
        "thermo",
        "Kitchen",
        True,
    )
    assert device.created_at.tzinfo is UTC
    assert before - timedelta(seconds=1) <= device.created_at <= datetime.now(UTC)
    assert await store.get_device(device.id) == device
    assert await store.get_device_by_name("sensor-1") == device


async def test_unknown_device_is_not_found(store: SqlCredentialStore) -> None:
    with pytest.raises(NotFoundError):
        await store.get_device(uuid.uuid4())
    with pytest.raises(NotFoundError, match="'ghost'"):
        await store.get_device_by_name("ghost")


async def test_duplicate_name_conflicts_naming_it(store: SqlCredentialStore) -> None:
    await store.create_device("dup")
    with pytest.raises(ConflictError, match="Device with name 'dup' already exists!"):
        await store.create_device("dup")


@pytest.mark.parametrize("name", ["", "a/b", "a+b", "a#b", "a\x00b", " a", "$SYS", "x" * 129])
async def test_invalid_names_are_refused(store: SqlCredentialStore, name: str) -> None:
    with pytest.raises(ValidationError, match="invalid device name"):
        await store.create_device(name)
    assert (await store.list_devices()).total == 0


async def test_list_pages_in_name_order(store: SqlCredentialStore) -> None:
    for name in ["c", "a", "e", "b", "d"]:
        await store.create_device(name)
    first = await store.list_devices(page_size=2)
    assert [d.name for d in first.items] == ["a", "b"]
    assert (first.total, first.total_pages, first.has_next) == (5, 3, True)
    last = await store.list_devices(page=2, page_size=2)
    assert [d.name for d in last.items] == ["e"]
    assert not last.has_next


async def test_text_search_is_a_case_insensitive_substring(store: SqlCredentialStore) -> None:
    for name in ["Kitchen-Sensor", "garage-sensor", "door", "100%_sure"]:
        await store.create_device(name)
    found = await store.list_devices(text_search="SENSOR")
    assert [d.name for d in found.items] == ["Kitchen-Sensor", "garage-sensor"]
    assert found.total == 2
    # LIKE wildcards in the search text are literal characters.
    assert [d.name for d in (await store.list_devices(text_search="%_")).items] == ["100%_sure"]


async def test_text_search_takes_every_character_literally(store: SqlCredentialStore) -> None:
    # An underscore is LIKE's any-one-character, a backslash PostgreSQL's default escape, a
    # slash the escape of the query's ESCAPE clause (not in a name: an MQTT topic level).
    for name in ["axb", "a_b", "a\\b", "A%B"]:
        await store.create_device(name)

    async def found(text: str) -> list[str]:
        return [d.name for d in (await store.list_devices(text_search=text)).items]

    assert await found("a_b") == ["a_b"]
    assert await found("a/b") == []
    assert await found("a\\b") == ["a\\b"]
    assert await found("\\") == ["a\\b"]
    assert await found("a%b") == ["A%B"]
    assert await found("_") == ["a_b"]


async def test_bad_paging_is_refused(store: SqlCredentialStore) -> None:
    with pytest.raises(ValidationError):
        await store.list_devices(page=-1)
    with pytest.raises(ValidationError):
        await store.list_devices(page_size=0)
    # Past MAX_PAGE the offset would overflow 64 bits: before, OverflowError (SQLite) or
    # "value out of int64 range" (PostgreSQL) instead of a refusal.
    with pytest.raises(ValidationError, match="page must be 0 to 1,000,000"):
        await store.list_devices(page=10**26)
    assert (await store.list_devices(page=MAX_PAGE, page_size=MAX_PAGE_SIZE)).items == ()


async def test_disable_and_enable(store: SqlCredentialStore) -> None:
    device = await store.create_device("d")
    disabled = await store.set_device_enabled(device.id, False)
    assert not disabled.enabled
    assert not (await store.get_device(device.id)).enabled
    assert (await store.set_device_enabled(device.id, True)).enabled
    with pytest.raises(NotFoundError):
        await store.set_device_enabled(uuid.uuid4(), True)


async def test_delete_removes_credentials_but_keeps_auth_history(
    store: SqlCredentialStore,
) -> None:
    device = await store.create_device("gone")
    credential = await store.add_x509_credential(device.id, x509())
    await store.record_auth_event(outcome=AuthOutcome.ALLOWED, reason="ok", device_id=device.id)
    await store.delete_device(device.id)
    with pytest.raises(NotFoundError):
        await store.get_device(device.id)
    with pytest.raises(NotFoundError):
        await store.get_credential(credential.id)
    assert credential.spki_sha256 is not None
    assert await store.find_x509(credential.spki_sha256) is None
    events = await store.list_auth_events(device_id=device.id)
    assert [e.reason for e in events] == ["ok"]
    with pytest.raises(NotFoundError):
        await store.delete_device(device.id)
    # The name is free again.
    await store.create_device("gone")
