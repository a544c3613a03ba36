"""Deny rules: a deny wins over any allow, wherever it is, for whom and what it names."""

from auth.acl import Acl, AclRule, Effect, Identity, parse_rule
from tests.auth.acls import APP, DEVICE, compiled, rule


def deny(topic: str, who: str = "device", action: str = "both") -> AclRule:
    return parse_rule({"who": who, "action": action, "topic": topic, "effect": "deny"})


def test_effect_defaults_to_allow() -> None:
    assert rule("a/b").effect is Effect.ALLOW
    assert deny("a/b").effect is Effect.DENY


def test_a_deny_wins_over_a_broad_allow_for_publish() -> None:
    acl = compiled(DEVICE, deny("devices/{device_name}/secret", action="publish"))
    assert not acl.can_publish("devices/dev-1/secret")
    assert acl.can_publish("devices/dev-1/secret/deeper")  # a topic, not a filter: not matched
    assert acl.can_publish("devices/dev-1/telemetry")
    assert acl.can_subscribe("devices/dev-1/secret")  # publish-only deny


def test_order_does_not_matter_deny_wins_wherever_it_is() -> None:
    first = Acl([deny("t/x"), rule("t/#")], include_defaults=False).for_identity(DEVICE)
    last = Acl([rule("t/#"), deny("t/x")], include_defaults=False).for_identity(DEVICE)
    for acl in (first, last):
        assert not acl.can_publish("t/x")
        assert not acl.can_subscribe("t/x")
        assert acl.can_publish("t/y")


def test_a_subscription_wholly_inside_a_deny_is_refused() -> None:
    acl = compiled(DEVICE, rule("#"), deny("test/nosubscribe", action="subscribe"))
    assert not acl.can_subscribe("test/nosubscribe")
    acl = compiled(DEVICE, rule("#"), deny("private/#", action="subscribe"))
    assert not acl.can_subscribe("private/+")
    assert not acl.can_subscribe("private/a/b")
    assert not acl.can_subscribe("private")  # '#' covers its parent level (§4.7.1.2)


def test_a_wider_subscription_is_granted_but_never_receives_the_denied_topics() -> None:
    acl = compiled(DEVICE, rule("#"), deny("test/nosubscribe", action="subscribe"))
    assert acl.can_subscribe("#")
    assert acl.can_subscribe("test/+")
    assert not acl.can_receive("test/nosubscribe")
    assert acl.can_receive("test/other")
    assert acl.receive_denied is not None
    assert acl.receive_denied.fullmatch("test/nosubscribe")


def test_no_deny_rule_costs_nothing_on_delivery() -> None:
    assert compiled(DEVICE).receive_denied is None


def test_deny_rules_apply_only_to_whom_they_name() -> None:
    acl = Acl([rule("shared/#", who="any"), deny("shared/admin", who="device")])
    assert not acl.can_publish(DEVICE, "shared/admin")
    assert acl.can_publish(APP, "shared/admin")


def test_a_deny_with_an_unfillable_placeholder_does_not_apply() -> None:
    no_cert = Identity("id-3", "dev-3")
    acl = Acl([rule("x/#"), deny("x/{cert_cn}")])
    assert acl.can_publish(no_cert, "x/anything")
    assert not acl.can_publish(DEVICE, "x/cn-1")
