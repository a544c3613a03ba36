"""Which topics a client may publish to, subscribe to and receive; the ``me`` topic mapping.

Pure: imports only the stdlib, ``auth.topics`` and ``nanoiot.errors``. The broker asks
``Acl.for_identity`` once per connection and keeps the ``CompiledAcl``; every PUBLISH then
costs one precompiled match, with no placeholder substitution or regex compilation.

Canonical topics and the ``me`` mapping
---------------------------------------
Inside the broker every topic is canonical: a device's own topics live under
``devices/<device name>/``. Devices may also use the reference device API, whose topics all say
``me`` instead of a name; for a device named N the broker rewrites them on the way in::

    to_canonical("v1/devices/me/telemetry", "N")       == "devices/N/telemetry"
    to_canonical("v1/devices/me/rpc/request/+", "N")   == "devices/N/rpc/request/+"
    to_canonical("v1/devices/me/#", "N")               == "devices/N/#"
    to_canonical("v1/devices/me", "N")                 == "devices/N"

and, for a message delivered through a subscription the device made in that form, back::

    to_device_form("devices/N/rpc/request/7", "N")     == "v1/devices/me/rpc/request/7"

So two devices publishing to ``v1/devices/me/telemetry`` land on ``devices/A/telemetry`` and
``devices/B/telemetry``, and a backend subscribed to ``devices/+/telemetry`` sees both, with
the name in the topic. MQTT 3.1.1 rules the mapping follows:

* §4.7.1.1: levels are whole strings between '/', so only the whole levels ``v1``, ``devices``,
  ``me`` are the prefix; ``v1/devices/meX/...`` and ``v1/devices/me2`` stay as they are.
* §4.7.3: topics are case-sensitive, so ``V1/devices/ME`` is not mapped either.
* §4.7.1.2: ``v1/devices/me/#`` matches ``v1/devices/me`` itself; mapped, ``devices/N/#``
  matches ``devices/N``, which goes back out as ``v1/devices/me``.
* Wildcards after the prefix are kept (§4.7.1.2, §4.7.1.3); wildcards in it (``v1/+/me/...``)
  are not the ``me`` API and are left to the ACL, which refuses them.

Applications (backends) are never mapped: they address devices by name.

Rules
-----
Default deny. A rule allows unless it says ``"effect": "deny"``; a matching deny wins over
every allow, for publish and for subscribe (as Mosquitto's dynamic security and EMQX do), so an
operator can forbid one topic under a broad allow. A SUBSCRIBE is refused when a deny filter
covers all of it; one that only overlaps a deny filter is granted, and the denied topics are
not delivered through it (``CompiledAcl.receive_denied``).

A device may use ``devices/{device_name}/#`` (which, mapped, is the whole ``me`` API);
applications subscribe to ``devices/#`` and ``$SYS/#`` (the broker's figures) and publish
what answers or commands a device. Operators add rules with ``{device_name}``,
``{device_id}`` and ``{cert_cn}`` (a CN the device cannot choose:
``auth.pinning.vouched_common_name``).
A placeholder value that could change a topic's shape (empty, '/', '+', '#', NUL, leading '$';
see ``auth.topics.is_plain_level``) makes the rule not apply to that client; so does
``{cert_cn}`` for a client without a certificate.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from auth.topics import (
    MAX_TOPIC_BYTES,
    SEPARATOR,
    compile_filters,
    filter_covers,
    is_plain_level,
    topic_filter_problem,
    valid_topic_filter,
)
from nanoiot.errors import ConfigError

ME_PREFIX = "v1/devices/me"
DEVICES_PREFIX = "devices"
# Bytes of a topic in the broker's form that every form it is delivered in fits in (§1.5.3:
# 65,535): ``v1/devices/me`` is up to 4 bytes longer than ``devices/N``. A device's own
# 65,535-byte ``v1/devices/me/...`` topic is longer as ``devices/<its name>/...``, which no
# PUBLISH could carry: delivering it failed, again at each reconnect of a persistent session
# that had queued it.
MAX_CANONICAL_TOPIC_BYTES = MAX_TOPIC_BYTES - (len(ME_PREFIX) - len(DEVICES_PREFIX) - 2)
DEVICES_TOPIC_PREFIX = DEVICES_PREFIX + SEPARATOR


class Who(StrEnum):
    """Whom a rule is for."""

    DEVICE = "device"
    APPLICATION = "application"
    ANY = "any"


class Action(StrEnum):
    """What a rule allows or denies."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    BOTH = "both"


class Effect(StrEnum):
    """Whether a matching rule allows or forbids; a deny wins over any allow."""

    ALLOW = "allow"
    DENY = "deny"


PLACEHOLDERS = ("device_name", "device_id", "cert_cn")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_RULE_KEYS = ("who", "action", "topic")
_OPTIONAL_KEYS = ("effect",)


@dataclass(frozen=True, slots=True)  # one per connected client
class Identity:
    """Who a connected client is, as authentication established it."""

    device_id: str
    device_name: str
    cert_cn: str | None = None  # None without a client certificate
    application: bool = False


@dataclass(frozen=True)
class AclRule:
    """One rule; ``topic`` is a topic filter that may contain placeholders."""

    who: Who
    action: Action
    topic: str
    effect: Effect = Effect.ALLOW

    def __post_init__(self) -> None:
        problem = rule_topic_problem(self.topic)
        if problem is not None:
            raise ConfigError(f"ACL rule: topic {self.topic!r}: {problem}")

    def applies_to(self, identity: Identity) -> bool:
        wanted = Who.APPLICATION if identity.application else Who.DEVICE
        return self.who in (wanted, Who.ANY)

    def topic_for(self, identity: Identity) -> str | None:
        """The filter this rule allows ``identity``, or None if a placeholder cannot be filled."""
        values = {
            "device_name": identity.device_name,
            "device_id": identity.device_id,
            "cert_cn": identity.cert_cn,
        }
        plain = {name: value for name, value in values.items() if is_plain_level(value)}
        if any(name not in plain for name in _PLACEHOLDER.findall(self.topic)):
            return None
        # One pass: a value that looks like "{cert_cn}" is not substituted again.
        topic = _PLACEHOLDER.sub(lambda match: plain[match.group(1)], self.topic)
        # Long values could push the filter past §1.5.3's 65535 bytes.
        return topic if valid_topic_filter(topic) else None


def rule_topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be a rule's topic (one short phrase), or None."""
    for name in _PLACEHOLDER.findall(topic):
        if name not in PLACEHOLDERS:
            known = ", ".join(f"{{{each}}}" for each in PLACEHOLDERS)
            return f"unknown placeholder {{{name}}} (known: {known})"
    # A plain level stands in for each placeholder: any value used later is one too.
    shape = _PLACEHOLDER.sub("x", topic)
    if "{" in shape or "}" in shape:
        return "'{' and '}' may only enclose a placeholder"
    return topic_filter_problem(shape)


DEVICE_RULES = (AclRule(Who.DEVICE, Action.BOTH, "devices/{device_name}/#"),)
APPLICATION_RULES = (
    AclRule(Who.APPLICATION, Action.SUBSCRIBE, "devices/#"),
    AclRule(Who.APPLICATION, Action.PUBLISH, "devices/+/attributes"),
    AclRule(Who.APPLICATION, Action.PUBLISH, "devices/+/attributes/response/+"),
    AclRule(Who.APPLICATION, Action.PUBLISH, "devices/+/rpc/request/+"),
    AclRule(Who.APPLICATION, Action.PUBLISH, "devices/+/rpc/response/+"),
    AclRule(Who.APPLICATION, Action.SUBSCRIBE, "$SYS/#"),  # the broker's figures
)
DEFAULT_RULES = DEVICE_RULES + APPLICATION_RULES


def parse_rule(mapping: Mapping[str, object], *, where: str = "ACL rule") -> AclRule:
    """An ``AclRule`` from config; ConfigError naming the bad field otherwise.

    ``where`` starts the message, for example ``"conf/nanoiot.yaml: acl.rules[2]"``.
    """
    unknown = sorted(str(key) for key in mapping if key not in (*_RULE_KEYS, *_OPTIONAL_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (expected who, action, topic, effect)"
        )
    for key in _RULE_KEYS:
        if key not in mapping:
            raise ConfigError(f"{where}: missing key {key!r}")
    who = _choice(mapping["who"], Who, "who", where)
    action = _choice(mapping["action"], Action, "action", where)
    topic = mapping["topic"]
    if not isinstance(topic, str):
        raise ConfigError(f"{where}: topic must be a string, not {type(topic).__name__}")
    problem = rule_topic_problem(topic)
    if problem is not None:
        raise ConfigError(f"{where}: topic {topic!r}: {problem}")
    effect = _choice(mapping.get("effect", Effect.ALLOW.value), Effect, "effect", where)
    return AclRule(Who(who), Action(action), topic, Effect(effect))


def _choice(value: object, kind: type[StrEnum], field: str, where: str) -> str:
    allowed = [member.value for member in kind]
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{where}: {field} {value!r} must be one of {', '.join(allowed)}")
    return value


class CompiledAcl:
    """What one client may do, with placeholders filled in: built once per connection.

    All topics and filters given to it are canonical (see ``to_canonical``). The deny filters
    win over the allowed ones.
    """

    __slots__ = (
        "_publish",
        "_publish_denied",
        "_receive",
        "deny_publish_filters",
        "deny_subscribe_filters",
        "publish_filters",
        "receive_denied",
        "subscribe_filters",
    )

    def __init__(
        self,
        publish_filters: Sequence[str],
        subscribe_filters: Sequence[str],
        deny_publish_filters: Sequence[str] = (),
        deny_subscribe_filters: Sequence[str] = (),
    ) -> None:
        every = (*publish_filters, *subscribe_filters, *deny_publish_filters)
        for each in (*every, *deny_subscribe_filters):
            if not valid_topic_filter(each):
                raise ValueError(f"not a valid topic filter: {each!r}")
        self.publish_filters = tuple(dict.fromkeys(publish_filters))
        self.subscribe_filters = tuple(dict.fromkeys(subscribe_filters))
        self.deny_publish_filters = tuple(dict.fromkeys(deny_publish_filters))
        self.deny_subscribe_filters = tuple(dict.fromkeys(deny_subscribe_filters))
        # Compiled by the first check that needs them: a connect pays for its own regex only
        # if the client publishes or receives (every device has its own topics, so a large
        # fleet misses the broker's cache of these and would compile on every connect).
        self._publish: re.Pattern[str] | None = None
        self._receive: re.Pattern[str] | None = None
        self._publish_denied = (
            compile_filters(self.deny_publish_filters) if self.deny_publish_filters else None
        )
        # Routing asks this of every delivery, so it is None (one attribute test) without denies.
        self.receive_denied: re.Pattern[str] | None = (
            compile_filters(self.deny_subscribe_filters) if self.deny_subscribe_filters else None
        )

    def __repr__(self) -> str:
        return (
            f"CompiledAcl(publish={self.publish_filters!r}, subscribe={self.subscribe_filters!r}, "
            f"deny_publish={self.deny_publish_filters!r}, "
            f"deny_subscribe={self.deny_subscribe_filters!r})"
        )

    def can_publish(self, topic: str) -> bool:
        """May the client publish to ``topic`` (in the broker's form)? False for anything not
        a topic name, or longer than every form it is delivered in fits in."""
        if len(topic) * 4 > MAX_CANONICAL_TOPIC_BYTES and len(topic.encode()) > (
            # Only a ``devices/N/...`` topic has a longer form (§4.7.3: any other of 65,535
            # bytes is delivered as it is).
            MAX_CANONICAL_TOPIC_BYTES if topic.startswith(DEVICES_TOPIC_PREFIX) else MAX_TOPIC_BYTES
        ):
            return False
        publish = self._publish
        if publish is None:
            publish = self._publish = compile_filters(self.publish_filters)
        if publish.fullmatch(topic) is None:
            return False
        return self._publish_denied is None or self._publish_denied.fullmatch(topic) is None

    def can_subscribe(self, topic_filter: str) -> bool:
        """May the client subscribe to ``topic_filter``?

        Only if one allowed filter matches every topic it can match (``filter_covers``):
        ``devices/N/+`` is fine for device N, ``devices/+/telemetry`` and ``#`` are not; and
        no deny filter matches every topic it can match. A filter that overlaps a deny filter
        only in part is allowed; ``receive_denied`` keeps those topics from it.
        """
        return valid_topic_filter(topic_filter) and self.allows_subscription(topic_filter)

    def allows_subscription(self, topic_filter: str) -> bool:
        """``can_subscribe`` for a filter whose syntax (§4.7.1) the caller checked already:
        the broker's SUBSCRIBE checks each filter once, not once more here."""
        if any(filter_covers(denied, topic_filter) for denied in self.deny_subscribe_filters):
            return False
        return any(filter_covers(allowed, topic_filter) for allowed in self.subscribe_filters)

    def can_receive(self, topic: str) -> bool:
        """May a message on ``topic`` reach the client (for example a retained one)?"""
        receive = self._receive
        if receive is None:
            receive = self._receive = compile_filters(self.subscribe_filters)
        if receive.fullmatch(topic) is None:
            return False
        return self.receive_denied is None or self.receive_denied.fullmatch(topic) is None


class Acl:
    """The broker's rules: the defaults unless told otherwise, plus the operator's."""

    def __init__(
        self, extra_rules: Sequence[AclRule] = (), *, include_defaults: bool = True
    ) -> None:
        self.rules: tuple[AclRule, ...] = (
            *(DEFAULT_RULES if include_defaults else ()),
            *extra_rules,
        )

    def for_identity(self, identity: Identity) -> CompiledAcl:
        """The rules resolved for ``identity``; keep it for the connection's lifetime."""
        kinds = (Action.PUBLISH, Action.SUBSCRIBE)
        lists: dict[tuple[Effect, Action], list[str]] = {
            (effect, action): [] for effect in Effect for action in kinds
        }
        for rule in self.rules:
            topic = rule.topic_for(identity) if rule.applies_to(identity) else None
            if topic is None:
                continue
            if rule.action in (Action.PUBLISH, Action.BOTH):
                lists[rule.effect, Action.PUBLISH].append(topic)
            if rule.action in (Action.SUBSCRIBE, Action.BOTH):
                lists[rule.effect, Action.SUBSCRIBE].append(topic)
        return CompiledAcl(
            lists[Effect.ALLOW, Action.PUBLISH],
            lists[Effect.ALLOW, Action.SUBSCRIBE],
            lists[Effect.DENY, Action.PUBLISH],
            lists[Effect.DENY, Action.SUBSCRIBE],
        )

    # One-off checks (tests, the admin API); the broker keeps ``for_identity``'s result.
    def can_publish(self, identity: Identity, topic: str) -> bool:
        return self.for_identity(identity).can_publish(topic)

    def can_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        return self.for_identity(identity).can_subscribe(topic_filter)

    def can_receive(self, identity: Identity, topic: str) -> bool:
        return self.for_identity(identity).can_receive(topic)


def to_canonical(topic_or_filter: str, device_name: str) -> str:
    """Map device N's ``v1/devices/me[/...]`` topic or filter to ``devices/N[/...]``.

    Anything else is returned unchanged. Only for devices: applications are never mapped.
    ValueError if ``device_name`` is not a plain topic level (the store never registers one),
    since it would add levels or wildcards to the topic.
    """
    if topic_or_filter != ME_PREFIX and not topic_or_filter.startswith(ME_PREFIX + SEPARATOR):
        return topic_or_filter
    return _device_base(device_name) + topic_or_filter[len(ME_PREFIX) :]


def to_device_form(topic: str, device_name: str) -> str:
    """Map ``devices/N[/...]`` back to ``v1/devices/me[/...]`` for device N.

    For a message delivered through a subscription N made in the ``me`` form. Any other
    topic is returned unchanged; ValueError as for ``to_canonical``.
    """
    base = _device_base(device_name)
    if topic != base and not topic.startswith(base + SEPARATOR):
        return topic
    return ME_PREFIX + topic[len(base) :]


def _device_base(device_name: str) -> str:
    if not is_plain_level(device_name):
        raise ValueError(f"device name {device_name!r} cannot be a topic level")
    return DEVICES_PREFIX + SEPARATOR + device_name
