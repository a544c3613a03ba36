"""Per-client topic authorisation: default and operator rules, parsed and compiled.

Deny rules are in ``test_acl_deny``, the ``v1/devices/me`` mapping in ``test_acl_me_form``.
"""

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from auth.acl import (
    DEFAULT_RULES,
    Acl,
    AclRule,
    Action,
    CompiledAcl,
    Identity,
    Who,
    parse_rule,
    to_canonical,
)
from auth.topics import topic_matches
from nanoiot.errors import ConfigError
from tests.auth.acls import APP, DEVICE, OTHER, compiled, rule
from tests.auth.topic_strategies import LEVEL, narrowings, topics_matching

ME_API = [
    "v1/devices/me/telemetry",
    "v1/devices/me/attributes",
    "v1/devices/me/attributes/request/1",
    "v1/devices/me/attributes/response/1",
    "v1/devices/me/rpc/request/7",
    "v1/devices/me/rpc/response/7",
]
ME_FILTERS = [
    "v1/devices/me/attributes/request/+",
    "v1/devices/me/attributes/response/+",
    "v1/devices/me/rpc/request/+",
    "v1/devices/me/rpc/response/+",
    "v1/devices/me/#",
]


# --- default device rules ---------------------------------------------------------------


@pytest.mark.parametrize("topic", ME_API)
def test_device_may_use_the_me_api(topic: str) -> None:
    acl = compiled()
    canonical = to_canonical(topic, DEVICE.device_name)
    assert acl.can_publish(canonical)
    assert acl.can_subscribe(canonical)
    assert acl.can_receive(canonical)
    # Unmapped, the same topic is nobody's: forgetting the mapping fails closed.
    assert not acl.can_publish(topic)


@pytest.mark.parametrize("topic_filter", ME_FILTERS)
def test_device_may_subscribe_to_me_filters(topic_filter: str) -> None:
    assert compiled().can_subscribe(to_canonical(topic_filter, DEVICE.device_name))


@pytest.mark.parametrize("topic", ["devices/dev-1", "devices/dev-1/any/thing", "devices/dev-1/"])
def test_device_owns_everything_under_its_name(topic: str) -> None:
    acl = compiled()
    assert acl.can_publish(topic)
    assert acl.can_subscribe(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "devices/dev-2/telemetry",
        "devices/dev-10/telemetry",
        "devices/dev-/telemetry",
        "devices/dev-1x",
        "devices",
        "v1/devices/other/telemetry",
        "v1/devices/me/telemetry",
        "$SYS/broker/load",
        "other",
        "",
        "devices/dev-1/+",  # not a topic name (§3.3.2.1)
        "devices/dev-1/#",
        "devices/dev-1/a\x00",
    ],
)
def test_device_may_not_publish_elsewhere(topic: str) -> None:
    assert not compiled().can_publish(topic)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "+/dev-1/#",
        "+/+/+",
        "devices/+/telemetry",
        "devices/#",
        "devices/+",
        "devices/dev-2/#",
        "$SYS/#",
        "v1/devices/other/telemetry",
        "v1/devices/#",
        "devices/dev-1/#/x",  # invalid (§4.7.1.2)
        "",
    ],
)
def test_device_may_not_subscribe_across_devices(topic_filter: str) -> None:
    assert not compiled().can_subscribe(topic_filter)


def test_two_devices_publishing_to_me_land_on_their_own_topics() -> None:
    topic = "v1/devices/me/telemetry"
    mine, theirs = to_canonical(topic, "dev-1"), to_canonical(topic, "dev-2")
    assert mine != theirs
    assert compiled(DEVICE).can_publish(mine)
    assert not compiled(DEVICE).can_publish(theirs)
    assert compiled(OTHER).can_publish(theirs)
    assert not compiled(OTHER).can_publish(mine)
    assert compiled(APP).can_subscribe("devices/+/telemetry")
    assert topic_matches(mine, "devices/+/telemetry")


# --- default application rules ----------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("devices/dev-1/rpc/request/7", True),
        ("devices/dev-1/attributes", True),
        ("devices/dev-1/attributes/response/3", True),
        ("devices/dev-1/rpc/response/3", True),
        ("devices/dev-1/telemetry", False),  # only a device reports its own telemetry
        ("devices/dev-1/rpc/request/7/x", False),
        ("devices/backend/x", False),  # an application's name gives it nothing
        ("v1/devices/me/telemetry", False),
        ("$SYS/x", False),
    ],
)
def test_application_publish(topic: str, allowed: bool) -> None:
    assert compiled(APP).can_publish(topic) is allowed


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("devices/#", True),
        ("devices/+/telemetry", True),
        ("devices/dev-1/rpc/response/+", True),
        ("devices", True),  # '#' matches the parent (§4.7.1.2)
        ("#", False),
        ("+/#", False),
        ("$SYS/#", True),  # the broker's figures, by a default rule
        ("$SYSTEM/#", False),
        ("v1/devices/me/#", False),
    ],
)
def test_application_subscribe(topic_filter: str, allowed: bool) -> None:
    assert compiled(APP).can_subscribe(topic_filter) is allowed


def test_device_rules_do_not_apply_to_applications_and_back() -> None:
    assert not compiled(Identity("id", "dev-1", application=True)).can_publish("devices/dev-1/x")
    assert not compiled(DEVICE).can_publish("devices/dev-2/rpc/request/1")


def test_without_defaults_nothing_is_allowed() -> None:
    acl = compiled(DEVICE, defaults=False)
    assert not acl.can_publish("devices/dev-1/telemetry")
    assert not acl.can_subscribe("devices/dev-1/#")
    assert not acl.can_receive("devices/dev-1/telemetry")
    assert Acl().rules == DEFAULT_RULES


# --- operator rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("sensors/{cert_cn}/data", "sensors/cn-1/data"),
        ("sensors/{device_name}/data", "sensors/dev-1/data"),
        ("sensors/{device_id}/data", "sensors/id-1/data"),
        ("fleet/{device_name}-{device_id}", "fleet/dev-1-id-1"),
    ],
)
def test_placeholders_are_filled_per_identity(template: str, expected: str) -> None:
    acl = compiled(DEVICE, rule(template, action="publish"))
    assert acl.can_publish(expected)
    assert not acl.can_subscribe(expected)
    assert not compiled(OTHER, rule(template)).can_publish(expected)


def test_who_and_action_select_the_rule() -> None:
    subscribe_any = rule("news/#", who="any", action="subscribe")
    for identity in (DEVICE, APP):
        acl = compiled(identity, subscribe_any)
        assert acl.can_subscribe("news/+")
        assert acl.can_receive("news/a")
        assert not acl.can_publish("news/a")
    for_apps = rule("ops/#", who="application")
    assert compiled(APP, for_apps).can_publish("ops/x")
    assert not compiled(DEVICE, for_apps).can_publish("ops/x")


def test_operator_may_grant_server_topics_explicitly() -> None:
    acl = compiled(DEVICE, rule("$SYS/#", who="device", action="subscribe"))
    assert acl.can_subscribe("$SYS/broker/+")
    assert not compiled(DEVICE, rule("#", who="device")).can_subscribe("$SYS/#")  # §4.7.2


def test_cert_cn_rules_do_not_apply_without_a_certificate() -> None:
    certless = Identity("id-1", "dev-1", cert_cn=None)
    acl = compiled(certless, rule("sensors/{cert_cn}/data"))
    assert not acl.can_publish("sensors/None/data")
    assert acl.subscribe_filters == ("devices/dev-1/#",)


@pytest.mark.parametrize("value", ["", "a/b", "+", "#", "$SYS", "x\x00", "a/+/#"])
def test_placeholder_values_cannot_change_the_topic_shape(value: str) -> None:
    """A hostile CN or device name must not widen, deepen or relocate a rule: it drops it."""
    by_cn = compiled(Identity("id-1", "dev-1", cert_cn=value), rule("sensors/{cert_cn}/data"))
    assert by_cn.publish_filters == ("devices/dev-1/#",)
    by_name = compiled(Identity("id-1", value, cert_cn="cn"), rule("sensors/{device_name}/data"))
    assert by_name.publish_filters == ()
    assert by_name.subscribe_filters == ()
    for acl in (by_cn, by_name):
        assert not acl.can_subscribe("sensors/+/data")
        assert not acl.can_subscribe("#")
        assert not acl.can_publish(f"sensors/{value}/data")


def test_a_name_is_substituted_once() -> None:
    acl = compiled(Identity("id-1", "{device_id}", cert_cn="cn"), rule("x/{device_name}"))
    assert acl.can_publish("x/{device_id}")
    assert not acl.can_publish("x/id-1")


def test_an_unsafe_device_name_loses_even_its_default_rule() -> None:
    acl = compiled(Identity("id-1", "dev-1/../dev-2"))
    assert acl.publish_filters == ()
    assert not acl.can_publish("devices/dev-1/../dev-2/x")


# --- parsing rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"who": "devices", "action": "both", "topic": "a"}, "who 'devices' must be one of"),
        ({"who": "any", "action": "pub", "topic": "a"}, "action 'pub' must be one of"),
        ({"who": 1, "action": "both", "topic": "a"}, "who 1 must be one of"),
        ({"who": "any", "action": "both", "topic": 3}, "topic must be a string, not int"),
        ({"who": "any", "action": "both"}, "missing key 'topic'"),
        ({"who": "any", "action": "both", "topic": "a", "topc": "b"}, "unknown key 'topc'"),
        ({"who": "any", "action": "both", "topic": "s/{cn}"}, "unknown placeholder {cn}"),
        ({"who": "any", "action": "both", "topic": "s/{device_name"}, "'{' and '}' may only"),
        ({"who": "any", "action": "both", "topic": "a/#/b"}, "'#' must be the last level"),
        ({"who": "any", "action": "both", "topic": "a/b+"}, "'+' must occupy a whole level"),
        ({"who": "any", "action": "both", "topic": "+{device_name}"}, "'+' must occupy"),
        ({"who": "any", "action": "both", "topic": "{cert_cn}#"}, "'#' must be the last"),
        ({"who": "any", "action": "both", "topic": ""}, "must not be empty"),
        ({"who": "any", "action": "both", "topic": "a", "effect": "block"}, "effect 'block'"),
        ({"who": "any", "action": "both", "topic": "a", "effect": True}, "effect True must be"),
    ],
)
def test_bad_rules_are_config_errors(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^acl\.rules\[2\]: ") as caught:
        parse_rule(mapping, where="acl.rules[2]")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_good_rule_parses() -> None:
    parsed = parse_rule({"who": "any", "action": "subscribe", "topic": "s/{cert_cn}/+"})
    assert parsed == AclRule(Who.ANY, Action.SUBSCRIBE, "s/{cert_cn}/+")


def test_rules_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="unknown placeholder"):
        AclRule(Who.ANY, Action.BOTH, "{nope}")


def test_compiled_acl_refuses_invalid_filters() -> None:
    with pytest.raises(ValueError, match="not a valid topic filter"):
        CompiledAcl(["a/#/b"], [])


def test_one_off_checks_match_the_compiled_ones() -> None:
    acl = Acl()
    assert acl.can_publish(DEVICE, "devices/dev-1/x")
    assert acl.can_subscribe(DEVICE, "devices/dev-1/#")
    assert acl.can_receive(DEVICE, "devices/dev-1/x")
    assert not acl.can_receive(DEVICE, "devices/dev-2/x")


# --- properties -------------------------------------------------------------------------

RULE_TOPICS = st.sampled_from(
    ["a/{device_name}/#", "a/+/b", "{cert_cn}/+", "#", "$s/#", "a", "+/{device_id}", "b/+/#"]
)
IDENTITIES = st.builds(
    Identity,
    device_id=st.sampled_from(["a", "b", "id"]),
    device_name=st.sampled_from(["a", "b", "dev-1"]),
    cert_cn=st.sampled_from([None, "a", "b"]),
    application=st.booleans(),
)


@given(IDENTITIES, st.lists(RULE_TOPICS, max_size=3), st.data())
def test_subscribe_coverage_is_sound(
    identity: Identity, templates: list[str], data: st.DataObject
) -> None:
    """Whatever a granted subscription can deliver, the client may receive."""
    acl = compiled(identity, *(rule(each, who="any", action="subscribe") for each in templates))
    topic_filter = data.draw(st.sampled_from(acl.subscribe_filters).flatmap(narrowings))
    assume(acl.can_subscribe(topic_filter))
    topic = data.draw(topics_matching(topic_filter))
    assume(topic_matches(topic, topic_filter))
    assert acl.can_receive(topic)


@given(IDENTITIES, st.lists(RULE_TOPICS, max_size=3), st.lists(LEVEL, min_size=1, max_size=4))
def test_publish_agrees_with_topic_matches(
    identity: Identity, templates: list[str], levels: list[str]
) -> None:
    acl = compiled(identity, *(rule(each, who="any", action="publish") for each in templates))
    topic = "/".join(levels)
    assume(topic)
    expected = any(topic_matches(topic, each) for each in acl.publish_filters)
    assert acl.can_publish(topic) is expected
