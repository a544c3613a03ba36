"""The ``v1/devices/me`` mapping: a device's own topics in the form it sends and receives them
(``auth.acl.to_canonical``, ``auth.acl.to_device_form``)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth.acl import MAX_CANONICAL_TOPIC_BYTES, Acl, Identity, to_canonical, to_device_form
from auth.topics import MAX_TOPIC_BYTES
from tests.auth.acls import DEVICE, compiled, rule
from tests.auth.topic_strategies import LEVEL


@pytest.mark.parametrize(
    ("me_form", "canonical"),
    [
        ("v1/devices/me/telemetry", "devices/dev-1/telemetry"),
        ("v1/devices/me/rpc/request/+", "devices/dev-1/rpc/request/+"),
        ("v1/devices/me/#", "devices/dev-1/#"),
        ("v1/devices/me", "devices/dev-1"),
        ("v1/devices/me/", "devices/dev-1/"),
    ],
)
def test_me_topics_map_both_ways(me_form: str, canonical: str) -> None:
    assert to_canonical(me_form, "dev-1") == canonical
    assert to_device_form(canonical, "dev-1") == me_form


@pytest.mark.parametrize(
    "topic",
    [
        "v1/devices/meX/telemetry",
        "v1/devices/me2",
        "v1/devices/mex",
        "V1/devices/me/telemetry",  # §4.7.3: case-sensitive
        "/v1/devices/me/telemetry",
        "v1/devices//me/telemetry",
        "v1/devices/+/telemetry",
        "v1/+/me/telemetry",
        "devices/dev-1/telemetry",
        "#",
    ],
)
def test_look_alikes_are_not_mapped(topic: str) -> None:
    assert to_canonical(topic, "dev-1") == topic


@pytest.mark.parametrize(
    "topic", ["devices/dev-2/telemetry", "devices/dev-10/x", "devices/dev-", "devices", "dev-1/x"]
)
def test_only_the_device_s_own_topics_go_out_in_me_form(topic: str) -> None:
    assert to_device_form(topic, "dev-1") == topic


@pytest.mark.parametrize("name", ["", "a/b", "+", "#", "$x", "a\x00"])
def test_mapping_refuses_a_name_that_is_not_one_level(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be a topic level"):
        to_canonical("v1/devices/me/telemetry", name)
    with pytest.raises(ValueError, match="cannot be a topic level"):
        to_device_form("devices/x/telemetry", name)


@given(st.lists(LEVEL | st.sampled_from(["+", "#"]), max_size=4), st.sampled_from(["d", "d-é"]))
def test_me_round_trip(rest: list[str], name: str) -> None:
    topic = "/".join(["v1/devices/me", *rest])
    canonical = to_canonical(topic, name)
    assert canonical.startswith(f"devices/{name}")
    assert to_device_form(canonical, name) == topic


def test_a_topic_too_long_in_one_of_its_forms_may_not_be_published() -> None:
    """§1.5.3: a PUBLISH carries at most 65,535 bytes of topic. A device's own topic of that
    length is longer as ``devices/<its name>/...``, and an application's ``devices/N/...`` is
    up to 4 bytes longer as ``v1/devices/me/...``: either could never be delivered."""
    device = Acl([]).for_identity(Identity("id-1", "dev-1"))
    app = Acl([]).for_identity(Identity("app-id", "backend", application=True))
    longest_me = "v1/devices/me/" + "x" * (MAX_TOPIC_BYTES - 14)
    assert not device.can_publish(to_canonical(longest_me, "dev-1"))  # 65,537 bytes
    request = "devices/a/rpc/request/"  # an application's, to device "a"
    fits = request + "é" * ((MAX_CANONICAL_TOPIC_BYTES - len(request)) // 2) + "x"
    assert len(fits.encode()) == MAX_CANONICAL_TOPIC_BYTES == 65_531
    assert len(to_device_form(fits, "a").encode()) == MAX_TOPIC_BYTES
    assert app.can_publish(fits)
    assert not app.can_publish(fits + "x")
    assert device.can_publish(to_canonical("v1/devices/me/" + "x" * 60_000, "dev-1"))
    # A topic outside ``devices/`` has one form: 65,535 bytes are delivered as they are.
    anywhere = compiled(DEVICE, rule("#"))
    assert anywhere.can_publish("t" * MAX_TOPIC_BYTES)
    assert not anywhere.can_publish("t" * (MAX_TOPIC_BYTES + 1))
