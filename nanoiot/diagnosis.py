"""Would the broker accept this certificate now? The logic behind ``nanoiot doctor``.

``diagnose`` follows ``broker.authn.Authenticator`` step for step, with the same pure
decisions (``auth/``) and the same store reads (``storage.interface``), but writes nothing:
where the broker would create the device or store the leaf at first connect, the verdict says
so. ``nanoiot.cli.doctor`` prints it, with the next step for each refusal.

Must not import typer or rich (the CLI prints), nor any database driver (the store does I/O).
"""

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography import x509

from auth.binding import attach_problem
from auth.certificate import load_certificate
from auth.chain import TrustAnchor, load_crl, match_chain
from auth.decision import Decision, Holder, Reason, decide_certificate, deny
from auth.fingerprint import spki_sha256
from auth.keys import DEFAULT_KEYS, KeyPolicy
from auth.kinds import CredentialStatus
from auth.pem import split_pem
from auth.pinning import decide_pinned
from broker.authn import existing_device, holder_of
from nanoiot.errors import NanoIoTError, NotFoundError, PemError, ValidationError
from storage.interface import CredentialStore
from storage.names import validate_device_name
from storage.records import TrustedCA

# Only CERTIFICATE blocks are ever decoded: a .nopass.pem also holds the device's private key,
# which must not be read, parsed or echoed (RFC 7468 §2 labels; see auth.pem).
_CERTIFICATE_BLOCK = re.compile(
    r"-----BEGIN (X509 )?CERTIFICATE-----.*?-----END \1?CERTIFICATE-----", re.DOTALL
)
_ANY_LABEL = re.compile(r"-----BEGIN ([A-Za-z0-9 ]+)-----")
_NEW = "(created at first connect)"


@dataclass(frozen=True)
class Policy:
    """The broker settings that change a decision."""

    check_validity: bool = True  # not MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT
    strict_client_id: bool = False
    keys: KeyPolicy = DEFAULT_KEYS  # min_rsa_key_bits, min_ec_key_bits
    whole_certificate: bool = False  # pin_whole_certificate


@dataclass(frozen=True)
class Outcome:
    """The broker's decision, and how it got there (for the verdict line and the advice)."""

    decision: Decision
    ca_name: str | None = None  # the trusted CA that issued the leaf (not pinned)
    creates_device: bool = False  # the broker would create the device at first connect
    missing_device: str | None = None  # no such device, and the CA may not create it
    existing_device: str | None = None  # the device a CA's leaf names, not that CA's
    notes: tuple[str, ...] = field(default=())


def read_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM file (leaf first) or of a DER file; nothing else is decoded."""
    text = data.decode("utf-8", errors="replace")
    if "-----BEGIN " not in text:
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise PemError("not a certificate: neither PEM nor DER") from None
    found = [m.group(0) for m in _CERTIFICATE_BLOCK.finditer(text.replace("\r\n", "\n"))]
    if not found:
        labels = list(dict.fromkeys(m.upper() for m in _ANY_LABEL.findall(text)))
        if "CERTIFICATE" in labels or "X509 CERTIFICATE" in labels:
            raise PemError("the CERTIFICATE block has no matching END line (was it cut short?)")
        raise PemError(f"no CERTIFICATE block in the file (it holds: {', '.join(labels)})")
    try:
        return [x509.load_der_x509_certificate(b.der) for b in split_pem("\n".join(found))]
    except ValueError as exc:
        raise PemError(f"a CERTIFICATE block is not a valid X.509 certificate: {exc}") from None


async def diagnose(
    store: CredentialStore,
    chain: Sequence[x509.Certificate],
    *,
    now: datetime,
    policy: Policy,
    client_id: str | None = None,
) -> Outcome:
    """What the broker would decide for a client presenting ``chain`` (leaf first) now."""
    leaf = chain[0]
    anchors, notes, ca_names = await trust_anchors(store, now)
    match = await store.find_x509(spki_sha256(leaf.public_key()))
    if match is not None or not anchors:
        # As the broker: the CRL of an issuing trusted CA applies to a pinned leaf, and a leaf
        # stored through a trusted CA needs that CA still trusted and chaining.
        decision = decide_pinned(
            leaf, chain[1:], holder_of(match) if match else None, anchors, now=now,
            check_validity=policy.check_validity, ca_names=ca_names, keys=policy.keys,
            whole_certificate=policy.whole_certificate,
        )  # fmt: skip
        outcome = Outcome(decision)
    else:
        outcome = await _by_trusted_ca(store, leaf, chain[1:], anchors, now, policy, ca_names)
    outcome = _check_client_id(outcome, client_id, policy)
    return replace(outcome, notes=notes + outcome.notes)


async def trust_anchors(
    store: CredentialStore, now: datetime
) -> tuple[tuple[TrustAnchor, ...], tuple[str, ...], dict[str, str]]:
    """The anchors the broker uses, notes on the CAs it leaves out or whose CRL is stale, and
    the name of every CA by id (disabled ones too)."""
    anchors: list[TrustAnchor] = []
    notes: list[str] = []
    cas = await store.list_trusted_cas()
    for ca in cas:
        if not ca.enabled:
            notes.append(f"trusted CA '{ca.name}' is disabled: the broker ignores it")
            continue
        try:
            anchors.append(_anchor(ca))
        except NanoIoTError as exc:
            # As the broker does: a CA whose CRL no longer verifies is left out (fail closed).
            notes.append(
                f"trusted CA '{ca.name}' is ignored by the broker: its CRL is unusable ({exc}); "
                f"upload a good one: nanoiot ca crl {ca.name} CRLFILE"
            )
            continue
        crl = anchors[-1].crl
        if crl is not None and crl.next_update_utc is not None and crl.next_update_utc < now:
            notes.append(
                f"the CRL of CA '{ca.name}' was due for renewal on "
                f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC (the broker still uses it): "
                f"upload a fresh one with nanoiot ca crl {ca.name} CRLFILE"
            )
    return tuple(anchors), tuple(notes), {str(ca.id): ca.name for ca in cas}


def _anchor(ca: TrustedCA) -> TrustAnchor:
    certificate = load_certificate(ca.pem)
    crl = load_crl(ca.crl_pem.encode(), certificate) if ca.crl_pem else None
    return TrustAnchor(
        ca_id=str(ca.id), name=ca.name, certificate=certificate, cn_regex=ca.cn_regex,
        create_devices=ca.create_devices, crl=crl,
    )  # fmt: skip


async def _by_trusted_ca(
    store: CredentialStore,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[TrustAnchor],
    now: datetime,
    policy: Policy,
    known_cas: Collection[str],
) -> Outcome:
    """As ``Authenticator._ca_issued``, without storing: the holder the leaf would get."""
    check, keys = policy.check_validity, policy.keys
    chained = match_chain(leaf, intermediates, anchors, now=now, check_validity=check, keys=keys)
    if isinstance(chained, Decision):
        return Outcome(chained)
    name, ca = chained.device_name, chained.anchor
    try:
        device = await store.get_device_by_name(name)
    except NotFoundError:
        refusal = _cannot_create(name, ca)
        if refusal is not None:
            return refusal
        holder = Holder(_NEW, name, True, _NEW, CredentialStatus.ACTIVE)
        decision = decide_certificate(leaf, holder, now=now, check_validity=check, keys=keys)
        return Outcome(decision, ca.name, creates_device=decision.allowed)
    existing = await existing_device(store, device, known_cas)
    unbound = attach_problem(existing, ca.ca_id, ca.name)
    if unbound is not None:
        return Outcome(unbound, ca.name, existing_device=device.name)
    # The leaf would be stored as a new, active credential of the existing device.
    holder = Holder(str(device.id), device.name, device.enabled, _NEW, CredentialStatus.ACTIVE)
    decision = decide_certificate(leaf, holder, now=now, check_validity=check, keys=keys)
    return Outcome(decision, ca.name)


def _cannot_create(name: str, ca: TrustAnchor) -> Outcome | None:
    if not ca.create_devices:
        refusal = deny(
            Reason.NAME_NOT_ALLOWED,
            f"no device '{name}' and CA '{ca.name}' does not create devices",
        )
        return Outcome(refusal, ca.name, missing_device=name)
    try:
        validate_device_name(name)  # the store's rule for the device the broker would create
    except ValidationError as exc:
        return Outcome(deny(Reason.NAME_NOT_ALLOWED, f"CA '{ca.name}': {exc}"), ca.name)
    return None


def _check_client_id(outcome: Outcome, client_id: str | None, policy: Policy) -> Outcome:
    """As ``broker.admission``: with strict_client_id a device connects as itself."""
    holder = outcome.decision.holder
    if not outcome.decision.allowed or holder is None or holder.application:
        return outcome
    if not policy.strict_client_id:
        return outcome
    if client_id is None:
        note = f"strict_client_id is on: connect with client id '{holder.device_name}' or none"
        return replace(outcome, notes=(*outcome.notes, note))
    if client_id in ("", holder.device_name):
        return outcome
    refusal = deny(
        Reason.CLIENT_ID_MISMATCH,
        f"client id '{client_id}' is not the device name '{holder.device_name}'",
        holder=holder, fingerprint=outcome.decision.fingerprint,
    )  # fmt: skip
    return replace(outcome, decision=refusal, creates_device=False)
