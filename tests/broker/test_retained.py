"""Retained messages (MQTT 3.1.1 §3.3.1.3) within their limits, in all and per device."""

from broker.mqtt.properties import Properties, Property
from broker.retained import RetainedStore, RetainLimits


def _store(**limits: int) -> RetainedStore:
    return RetainedStore(RetainLimits(**limits))


def test_the_last_message_of_a_topic_is_kept_and_an_empty_one_deletes_it() -> None:
    store = _store()
    assert store.retain("a/b", b"1", 1, "dev") is None
    assert store.retain("a/b", b"22", 0, "dev") is None
    [kept] = store.matching("a/#")
    assert (kept.payload, kept.qos, store.total_bytes) == (b"22", 0, len("a/b") + 2)
    assert store.retain("a/b", b"", 0, "dev") is None
    assert (len(store), store.total_bytes, store.owned_by("dev")) == (0, 0, 0)


def test_per_device_limits_refuse_the_next_topic_not_a_replacement() -> None:
    store = _store(max_messages_per_device=2, max_bytes_per_device=20)
    assert store.retain("t/1", b"x", 0, "dev") is None
    assert store.retain("t/2", b"x", 0, "dev") is None
    assert store.retain("t/3", b"x", 0, "dev") == "max_retained_messages_per_device"
    assert store.retain("t/1", b"y", 0, "dev") is None  # a replacement is no new message
    assert store.retain("t/2", b"z" * 20, 0, "dev") == "max_retained_bytes_per_device"
    assert store.retain("t/3", b"x", 0, "other") is None  # another device has its own
    assert store.owned_by("dev") == 2


def test_a_message_s_properties_count_as_its_bytes() -> None:
    # MQTT 5 user properties (§3.3.2.3.7) can be most of a message.
    store = _store(max_bytes_per_device=1000)
    heavy = Properties([(Property.USER_PROPERTY, ("k", "v" * 1000))])
    assert store.retain("t/1", b"x", 0, "dev", heavy) == "max_retained_bytes_per_device"
    assert store.retain("t/1", b"x", 0, "dev") is None


def test_totals_bound_every_device_together() -> None:
    store = _store(max_messages=2, max_bytes=100)
    assert store.retain("a", b"x", 0, "one") is None
    assert store.retain("b", b"x", 0, "two") is None
    assert store.retain("c", b"x", 0, "three") == "max_retained_messages"
    assert store.retain("a", b"x" * 200, 0, "one") == "max_retained_bytes"


def test_a_topic_taken_over_by_another_device_moves_its_accounting() -> None:
    store = _store(max_messages_per_device=1)
    assert store.retain("shared", b"x", 0, "one") is None
    assert store.retain("shared", b"y", 0, "two") is None
    assert (store.owned_by("one"), store.owned_by("two")) == (0, 1)
    assert store.retain("mine", b"x", 0, "one") is None


def test_a_deleted_devices_messages_go_and_the_brokers_own_are_not_limited() -> None:
    store = _store(max_messages_per_device=1)
    store.retain("devices/a/x", b"1", 0, "a")
    store.retain("$SYS/broker/uptime", b"1 seconds", 0, None)
    store.retain("$SYS/broker/version", b"NanoIoT", 0, None)
    assert store.forget_device("a") == 1
    assert [r.topic for r in store.matching("#")] == []  # '#' never shows $SYS (§4.7.2)
    assert len(store.matching("$SYS/#")) == 2
