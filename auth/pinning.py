"""Deciding a leaf that was found by its public key, against the credential registered for it.

Identity is the key pair (``auth.fingerprint``), but what was registered still binds it:

- A credential an operator pinned obeys the CRL of a trusted CA that issued the presented
  certificate, and of the one that issued the registered certificate (RFC 5280 §6.3): a CRL
  entry for the registered certificate revokes its key, whatever certificate comes next.
- A credential registered from a CA-issued certificate stays bound to that CA: a certificate
  other than the registered one must be signed by the CA that signed the registered one (a
  trusted CA, or an intermediate the device sends). The same key re-signed by itself is not.
- With whole-certificate pinning (the ``pin_whole_certificate`` setting, the reference
  system's behaviour), an operator's credential admits only the very certificate registered,
  so its dates count; a credential registered as a bare public key has no certificate to pin
  and stays pinned by its key.
- A credential stored through a trusted CA (``Holder.issuer_ca_id``) stands only as long as
  that CA: still trusted and the leaf still chaining to it (CRL and intermediates included).
"""

from collections.abc import Mapping, Sequence
from datetime import datetime

from cryptography import x509

from auth.certificate import common_name, shown_name
from auth.chain import TrustAnchor, match_chain, revoked_in_chain, signed
from auth.decision import Decision, Holder, Reason, decide_certificate, deny
from auth.keys import DEFAULT_KEYS, KeyPolicy

_CERTIFICATE_PEM = "-----BEGIN CERTIFICATE-----"


def registered_certificate(holder: Holder) -> x509.Certificate | None:
    """The certificate registered for ``holder``'s key, or None for a bare public key."""
    pem = holder.pinned_pem
    if not pem or not pem.lstrip().startswith(_CERTIFICATE_PEM):
        return None
    # Parsed for each decision and not kept: parsing is about 6 µs of a 2 ms connect, and
    # a parsed certificate kept per device would be about 2.5 KiB (10 MiB for 4,096).
    return x509.load_pem_x509_certificate(pem.encode())


def vouched_common_name(leaf: x509.Certificate, holder: Holder) -> str | None:
    """The CN of an admitted ``leaf`` that ``{cert_cn}`` rules may use (``auth.acl``): one
    the device cannot choose. Identity is the key, so a device re-signs its own key with any
    subject and is admitted (``_registered_problem``): the leaf's CN counts only when another
    party vouches for it, a trusted CA the credential was stored through or the CA that issued
    the registered certificate (the leaf must be signed by it), or when the leaf is the very
    certificate registered. Any other leaf of a self-signed registration has the registered
    CN; a bare public key's, none."""
    if holder.issuer_ca_id is not None:
        return common_name(leaf.subject)
    registered = registered_certificate(holder)
    if registered is None:
        return None
    if leaf == registered or not _self_signed(registered):
        return common_name(leaf.subject)
    return common_name(registered.subject)


def crl_refusal(cert: x509.Certificate, anchors: Sequence[TrustAnchor]) -> Decision | None:
    """A refusal if a trusted CA whose key signed ``cert`` lists it in its CRL.

    No path is built for a pinned certificate, so the issuer is each anchor with a CRL whose
    key signed it (a name match alone could pick another CA's CRL, §6.3.3 (f)).
    """
    for anchor in anchors:
        if anchor.crl is None or not signed(cert, anchor.certificate):
            continue
        refusal = revoked_in_chain([cert, anchor.certificate], anchors)
        if refusal is not None:
            return refusal
    return None


def decide_pinned(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    holder: Holder | None,
    anchors: Sequence[TrustAnchor],
    *,
    now: datetime,
    check_validity: bool = True,
    ca_names: Mapping[str, str] | None = None,
    keys: KeyPolicy = DEFAULT_KEYS,
    whole_certificate: bool = False,
) -> Decision:
    """Decide a leaf found (or not) by its public key; ``holder`` is what the store found.

    ``ca_names`` names CAs by id for the refusal (a disabled CA is no anchor but still has a
    name); ``whole_certificate`` is the ``pin_whole_certificate`` setting.
    """
    decision = decide_certificate(leaf, holder, now=now, check_validity=check_validity, keys=keys)
    if not decision.allowed or holder is None:
        return decision
    pinned_by_operator = holder.issuer_ca_id is None
    refusal = _registered_problem(
        leaf, intermediates, holder, anchors, whole_certificate and pinned_by_operator
    )
    if refusal is None and pinned_by_operator:
        refusal = crl_refusal(leaf, anchors)
    if refusal is None and not pinned_by_operator:
        policy = (now, check_validity, keys)
        refusal = _issuing_ca_problem(leaf, intermediates, holder, anchors, policy, ca_names or {})
    if refusal is not None:
        return deny(refusal.reason, refusal.detail, holder=holder, fingerprint=decision.fingerprint)
    return decision


def _registered_problem(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    holder: Holder,
    anchors: Sequence[TrustAnchor],
    whole_certificate: bool,
) -> Decision | None:
    """Why ``leaf`` may not stand in for the certificate registered with its key, or None."""
    registered = registered_certificate(holder)
    if registered is None or leaf == registered:
        return None  # a bare key, or the very certificate: the other checks cover it
    if whole_certificate:
        return deny(
            Reason.CERTIFICATE_NOT_PINNED,
            f"certificate (serial {leaf.serial_number:x}) is not the one registered for device "
            f"'{holder.device_name}' (serial {registered.serial_number:x}) and "
            "pin_whole_certificate is on",
        )
    revoked = crl_refusal(registered, anchors)
    if revoked is not None:
        return deny(revoked.reason, f"registered {revoked.detail}")
    if _self_signed(registered):
        return None
    signers = [a.certificate for a in anchors] + list(intermediates)
    issuers = [s for s in signers if signed(registered, s)]
    if not any(signed(leaf, issuer) for issuer in issuers):
        return deny(
            Reason.ISSUER_MISMATCH,
            f"the certificate registered for device '{holder.device_name}' was issued by "
            f"'{shown_name(registered.issuer)}' and this one is not signed by that CA "
            "(a device sends an intermediate CA after its own certificate)",
        )
    return None


def _issuing_ca_problem(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    holder: Holder,
    anchors: Sequence[TrustAnchor],
    policy: tuple[datetime, bool, KeyPolicy],
    ca_names: Mapping[str, str],
) -> Decision | None:
    """A credential stored through a trusted CA: that CA must still be trusted and the leaf
    must still chain to it, so deleting or disabling the CA, its CRL and an intermediate's
    revocation all apply."""
    ca_id = holder.issuer_ca_id
    assert ca_id is not None
    issuers = [a for a in anchors if a.ca_id == ca_id]
    if not issuers:
        label = ca_names.get(ca_id, ca_id)
        return deny(
            Reason.CA_NO_LONGER_TRUSTED,
            f"certificate was issued by CA '{label}' which is no longer trusted",
        )
    now, check_validity, keys = policy
    chained = match_chain(
        leaf, intermediates, issuers, now=now, check_validity=check_validity, keys=keys
    )
    return chained if isinstance(chained, Decision) else None


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and signed(cert, cert)
