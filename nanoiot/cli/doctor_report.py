"""What ``nanoiot doctor`` prints: the certificate, the broker's verdict and the next step.

The verdict comes from ``nanoiot.diagnosis`` (the broker's own decision, without writing
anything). Loaded only when ``doctor`` runs: the decision brings the broker's authentication
and the store with it.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import typer
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from auth.certificate import common_name, describe_key, shown_name
from auth.decision import Reason
from auth.fingerprint import spki_sha256
from auth.keys import KeyPolicy
from nanoiot.cli.ca import say
from nanoiot.cli.common import MAX_CERTIFICATE_FILE, fail, read_file, state, with_store
from nanoiot.diagnosis import Outcome, Policy, diagnose, read_certificates
from nanoiot.errors import PemError
from storage.interface import CredentialStore

E = TypeVar("E", bound=x509.ExtensionType)
SOON = timedelta(days=30)  # an accepted certificate closer than this to its end gets a note


def report(ctx: typer.Context, cert: Path, client_id: str | None) -> None:
    """Print the verdict on ``cert``; exit 0 when the broker would accept it, else 1."""
    chain = _read_chain(cert)
    settings = state(ctx).settings
    policy = Policy(
        check_validity=not settings.mqtt_ssl_skip_validity_check_for_client_cert,
        strict_client_id=settings.strict_client_id,
        keys=KeyPolicy(settings.min_rsa_key_bits, settings.min_ec_key_bits),
        whole_certificate=settings.pin_whole_certificate,
    )
    now = datetime.now(UTC)

    async def _diagnose(store: CredentialStore) -> Outcome:
        return await diagnose(store, chain, now=now, policy=policy, client_id=client_id)

    outcome = with_store(ctx, _diagnose)
    _print_certificate(cert, chain)
    say(_verdict(outcome))
    if not outcome.decision.allowed:
        decision = outcome.decision
        say(
            f"the device reads: MQTT 5 CONNACK reason code {decision.reason_code:#04x} and the "
            f"words above as its reason string; MQTT 3.1.1 return code {decision.connack:d}"
        )
        say(f"next step: {_next_step(outcome, Facts.of(chain[0], cert))}")
    elif chain[0].not_valid_after_utc - now < SOON:
        say(f"note: {_ending(chain[0].not_valid_after_utc, now)}")
    for note in outcome.notes:
        say(f"note: {note}")
    raise typer.Exit(0 if outcome.decision.allowed else 1)


def _ending(not_after: datetime, now: datetime) -> str:
    if not_after >= now:
        return f"the certificate expires on {not_after:%Y-%m-%d}: renew it before then"
    return (
        f"the certificate expired on {not_after:%Y-%m-%d}; it is accepted only because "
        "MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT is set"
    )


def _read_chain(path: Path) -> list[x509.Certificate]:
    data = read_file(path, limit=MAX_CERTIFICATE_FILE, holding="a certificate")
    try:
        return read_certificates(data)
    except PemError as exc:
        fail(f"{path}: {exc}")


def _print_certificate(path: Path, chain: list[x509.Certificate]) -> None:
    leaf = chain[0]
    key_type, key_size = describe_key(leaf.public_key())
    self_signed = " (self-signed)" if leaf.issuer == leaf.subject else ""
    say(f"certificate  {path}")
    say(f"  fingerprint  sha256:{spki_sha256(leaf.public_key())}")
    say(f"  subject      {shown_name(leaf.subject)}")
    say(f"  issuer       {shown_name(leaf.issuer)}{self_signed}")
    say(f"  serial       {leaf.serial_number:x}")
    say(
        f"  valid        {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} to "
        f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )
    say(f"  key          {key_type} ({key_size} bits)")
    for extra in chain[1:]:
        say(f"  chain        {shown_name(extra.subject)}")


def _verdict(outcome: Outcome) -> str:
    decision = outcome.decision
    if not decision.allowed:
        return f"REFUSED: {decision.detail}"
    name = decision.holder.device_name if decision.holder else "?"
    if outcome.ca_name is None:
        return f"ACCEPTED as device '{name}' (pinned public key)"
    if outcome.creates_device:
        return (
            f"ACCEPTED: issued by trusted CA '{outcome.ca_name}'; "
            f"device '{name}' would be created at first connect"
        )
    return (
        f"ACCEPTED: issued by trusted CA '{outcome.ca_name}'; as device '{name}' "
        "(the certificate is added to its credentials at first connect)"
    )


@dataclass(frozen=True)
class Facts:
    """What the advice needs to know about the certificate itself."""

    path: Path
    name: str  # the device name to suggest: the holder's, else the CN, else NAME
    is_ca: bool
    server_only: bool  # EKU has serverAuth and not clientAuth
    self_signed: bool
    issuer: str
    not_after: datetime
    not_before: datetime

    @classmethod
    def of(cls, leaf: x509.Certificate, path: Path) -> "Facts":
        usages = _extension(leaf, x509.ExtendedKeyUsage)
        constraints = _extension(leaf, x509.BasicConstraints)
        server_only = usages is not None and (
            ExtendedKeyUsageOID.SERVER_AUTH in usages
            and ExtendedKeyUsageOID.CLIENT_AUTH not in usages
        )
        return cls(
            path=path,
            name=common_name(leaf.subject) or "NAME",
            is_ca=constraints is not None and constraints.ca,
            server_only=server_only,
            self_signed=leaf.issuer == leaf.subject,
            issuer=shown_name(leaf.issuer),
            not_after=leaf.not_valid_after_utc,
            not_before=leaf.not_valid_before_utc,
        )


def _extension(cert: x509.Certificate, kind: type[E]) -> E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _next_step(outcome: Outcome, facts: Facts) -> str:
    holder = outcome.decision.holder
    if holder is not None:
        facts = replace(facts, name=holder.device_name)
    # A CA or server certificate in the device's place is the likelier mistake, whatever
    # rule refused it first.
    wrong_kind = _wrong_kind(facts)
    if wrong_kind is not None:
        return wrong_kind
    return _STEPS.get(outcome.decision.reason, _generic)(outcome, facts)


def _wrong_kind(facts: Facts) -> str | None:
    if facts.is_ca:
        return (
            "this is a CA certificate, not a device certificate: trust it with "
            f"nanoiot ca add NAME {facts.path} --create-devices, and connect with a "
            "certificate it issued (client.keygen.sh --ca --cn DEVICE)"
        )
    if facts.server_only:
        return (
            "server certificate given instead of a device certificate? EKU lacks clientAuth "
            "(it is for TLS servers only): use the device's .nopass.pem or .pub.pem from "
            "client.keygen.sh"
        )
    return None


def _register(outcome: Outcome, facts: Facts) -> str:
    step = (
        f"register it: nanoiot device add {facts.name} && "
        f"nanoiot credentials add-x509 {facts.name} {facts.path}"
    )
    if facts.self_signed:
        return step
    return (
        f"{step}; or trust its issuer '{facts.issuer}': nanoiot ca add NAME ISSUER-CA.pem "
        "--create-devices (if an intermediate CA issued it, the device must send it too: "
        "put it after the device certificate in its file)"
    )


def _untrusted(outcome: Outcome, facts: Facts) -> str:
    if "outside its validity" in outcome.decision.detail:
        return (
            "a CA of the chain has expired or is not yet valid: renew the CA "
            "(server.keygen.sh --ca), register it with nanoiot ca add, and issue new devices"
        )
    if outcome.decision.detail.startswith("certificate chain rejected"):
        return (
            "the chain to the trusted CA is invalid (see above): check that the issuing CA "
            "has basicConstraints cA and that the certificate was signed by it"
        )
    return _register(outcome, facts)


def _expired(outcome: Outcome, facts: Facts) -> str:
    return (
        f"the certificate expired on {facts.not_after:%Y-%m-%d %H:%M} UTC: issue a new one, "
        + _new_certificate(facts)
    )


def _new_certificate(facts: Facts) -> str:
    """How to make a replacement: a trusted CA's leaf needs no registration, a pinned one does."""
    if facts.self_signed:
        return (
            f"with client.keygen.sh --cn {facts.name} --prefix {facts.name}, and register it: "
            f"nanoiot credentials add-x509 {facts.name} {facts.name}.pub.pem"
        )
    return f"with client.keygen.sh --ca --cn {facts.name} (signed by the device CA)"


def _generic(outcome: Outcome, facts: Facts) -> str:
    return f"see the reason above ({outcome.decision.reason.value})"


def _name_not_allowed(outcome: Outcome, facts: Facts) -> str:
    if outcome.missing_device is not None:
        return (
            f"create the device first: nanoiot device add {outcome.missing_device} "
            f"(CA '{outcome.ca_name}' was registered without --create-devices; registering it "
            "again would also cut off the devices it already admitted)"
        )
    return (
        "the device name comes from the certificate's CN through the CA's --cn-regex "
        "(group 1; nanoiot ca list shows it): issue the certificate with a CN that matches "
        "and makes a valid device name (client.keygen.sh --ca --cn ...)"
    )


_STEPS: dict[Reason, Callable[[Outcome, Facts], str]] = {
    Reason.UNKNOWN_KEY: _register,
    Reason.UNTRUSTED_ISSUER: _untrusted,
    Reason.CERTIFICATE_EXPIRED: _expired,
    Reason.CERTIFICATE_NOT_YET_VALID: lambda _o, f: (
        f"the certificate is not valid before {f.not_before:%Y-%m-%d %H:%M} UTC: check the "
        "clock of the machine that issued it, or wait until then"
    ),
    Reason.DEVICE_DISABLED: lambda _o, f: f"the device is disabled: nanoiot device enable {f.name}",
    Reason.CREDENTIAL_REVOKED: lambda _o, f: (
        f"revoked credentials cannot be re-enabled: issue a new key, {_new_certificate(f)}"
    ),
    Reason.CREDENTIAL_DISABLED: lambda _o, f: (
        f"this credential of '{f.name}' is disabled (nanoiot credentials list {f.name}); "
        "enable it again through the admin API, or register a new certificate"
    ),
    Reason.NOT_FOR_CLIENT_AUTH: lambda _o, _f: (
        "issue the device a certificate for client authentication: extended key usage "
        "clientAuth and key usage digitalSignature, or neither extension (client.keygen.sh "
        "does)"
    ),
    Reason.REVOKED_BY_CA: lambda _o, f: (
        f"its CA revoked it (CRL): issue a new key, {_new_certificate(f)}"
    ),
    Reason.CA_NO_LONGER_TRUSTED: lambda _o, f: (
        "the CA that issued it was deleted or disabled: trust it again (nanoiot ca add), or "
        f"issue a new key, {_new_certificate(f)}"
    ),
    Reason.NAME_NOT_ALLOWED: _name_not_allowed,
    Reason.NOT_BOUND_TO_CA: lambda o, _f: (
        "a trusted CA's certificate attaches only to a device that CA created or that is "
        f"bound to it: nanoiot device bind {o.existing_device} {o.ca_name} (if that CA is to "
        "speak for the device)"
    ),
    Reason.DEVICE_NOT_CAS: lambda o, _f: (
        f"device '{o.existing_device}' keeps to the certificates registered for it, and a "
        "CA's certificate cannot take it over: name this device differently in the CN, or "
        f"revoke and remove what '{o.existing_device}' has if it should move to CA "
        f"'{o.ca_name}'"
    ),
    Reason.WEAK_KEY: lambda _o, f: (
        f"issue the device a stronger key (EC P-256 or Ed25519; RSA of at least 2048 bits): "
        f"client.keygen.sh --cn {f.name}"
    ),
    Reason.CERTIFICATE_NOT_PINNED: lambda _o, f: (
        "pin_whole_certificate is on: the device must present the very certificate "
        f"registered; to renew it, {_new_certificate(f)}"
    ),
    Reason.ISSUER_MISMATCH: lambda _o, f: (
        "the certificate registered for this key came from a CA, and this one was not signed "
        "by it: use a certificate of that CA (with its intermediate after it), or "
        + _new_certificate(f)
    ),
    Reason.CLIENT_ID_MISMATCH: lambda _o, f: (
        f"connect with client id '{f.name}' or an empty one (strict_client_id is on)"
    ),
}
