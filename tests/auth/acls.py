"""Identities and ACLs built in code for the per-client topic authorisation tests
(``auth.acl``): a device, another device and an application, and one identity's compiled ACL."""

from auth.acl import Acl, AclRule, CompiledAcl, Identity, parse_rule

DEVICE = Identity("id-1", "dev-1", cert_cn="cn-1")
OTHER = Identity("id-2", "dev-2", cert_cn="cn-2")
APP = Identity("app-id", "backend", application=True)


def compiled(identity: Identity = DEVICE, *rules: AclRule, defaults: bool = True) -> CompiledAcl:
    return Acl(rules, include_defaults=defaults).for_identity(identity)


def rule(topic: str, who: str = "device", action: str = "both") -> AclRule:
    return parse_rule({"who": who, "action": action, "topic": topic})
