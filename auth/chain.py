"""Devices whose certificates are issued by a trusted CA (the reference's "X.509 certificate
chain" strategy), decided without I/O.

A leaf that is not pinned by its own public key may still get in when it chains to a CA the
operator registered. The chain is checked with cryptography's RFC 5280 path validation; the
leaf's extended key usage and every CA's CRL are checked here as well, and the device name is
read from the leaf's CN with the CA's regular expression (group 1, or the whole CN), matched
in linear time by auth.cn_rule.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import verification

from auth.certificate import ParsedCredential, common_name, load_certificate, shown_name
from auth.cn_rule import MAX_CN_LENGTH, CnRuleUnusable, NoMatch, name_from_cn
from auth.decision import Decision, Reason, deny, leaf_problem
from auth.keys import DEFAULT_KEYS, KeyPolicy
from auth.validity import validity_problem

_NO_CERT_SIGN = "may not sign certificates: its key usage lacks keyCertSign"


def _may_sign_certificates(
    _policy: verification.Policy, cert: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    """RFC 5280 §4.2.1.3 and §6.1.4 (n): a CA certificate with a key usage extension must
    assert keyCertSign to issue certificates (OpenSSL checks it too). Without this a CA
    certificate issued for something else (an OCSP responder's, say) could mint devices."""
    if usage is not None and not usage.key_cert_sign:
        raise ValueError(_cert_sign_problem(cert))


def _cert_sign_problem(cert: x509.Certificate) -> str:
    return f"CA certificate '{shown_name(cert.subject)}' {_NO_CERT_SIGN}"


# RFC 5280 §4.2.1.9: a CA certificate asserts basicConstraints cA; if it has a key usage, it
# includes keyCertSign. The rest is left to the operator's PKI (many private CAs omit key
# identifiers or key usage). cryptography applies this to the trust anchor as well.
_CA_POLICY = (
    verification.ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _may_sign_certificates)
)
_LEAF_POLICY = verification.ExtensionPolicy.permit_all()  # EKU is checked with a clear reason


@dataclass(frozen=True)
class TrustAnchor:
    """A CA registered as trusted, with its device rules and current CRL (if any)."""

    ca_id: str
    name: str
    certificate: x509.Certificate
    cn_regex: str | None = None
    create_devices: bool = False
    crl: x509.CertificateRevocationList | None = None


@dataclass(frozen=True)
class ChainMatch:
    """A leaf that chains to ``anchor``; ``device_name`` comes from its CN."""

    anchor: TrustAnchor
    device_name: str


def match_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[TrustAnchor],
    *,
    now: datetime,
    check_validity: bool = True,
    keys: KeyPolicy = DEFAULT_KEYS,
) -> ChainMatch | Decision:
    """The anchor ``leaf`` chains to and the device name it claims, or a refusal."""
    unfit = leaf_problem(leaf, keys)
    if unfit is not None:
        return unfit
    if not anchors:
        return deny(Reason.UNTRUSTED_ISSUER, _untrusted(leaf))
    try:
        chain = _verify(leaf, intermediates, anchors, now if check_validity else _inside(leaf, now))
    except verification.VerificationError as exc:
        return _verification_refusal(leaf, intermediates, anchors, str(exc), now)
    anchor = next(a for a in anchors if a.certificate == chain[-1])
    revoked = revoked_in_chain(chain, anchors)
    if revoked is not None:
        return revoked
    return _device_name(leaf, anchor)


def _verify(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[TrustAnchor],
    at: datetime,
) -> list[x509.Certificate]:
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([a.certificate for a in anchors]))
        .time(at)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_LEAF_POLICY)
        .build_client_verifier()
    )
    return verifier.verify(leaf, list(intermediates)).chain


def _inside(leaf: x509.Certificate, now: datetime) -> datetime:
    """A time inside the leaf's validity, for MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT."""
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    return min(max(now, start + timedelta(seconds=1)), end)


def _untrusted(leaf: x509.Certificate) -> str:
    return f"unknown certificate key and issuer '{shown_name(leaf.issuer)}' is not a trusted CA"


def _verification_refusal(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[TrustAnchor],
    message: str,
    now: datetime,
) -> Decision:
    if "not valid at validation time" in message:
        problem = validity_problem(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now)
        if problem is None:
            return deny(
                Reason.UNTRUSTED_ISSUER, "a CA certificate in the chain is outside its validity"
            )
        # The verifier reports the leaf's validity before it looks for an issuer, so a
        # stranger's expired certificate would read "expired" and send the operator after the
        # wrong problem: say "expired" only for a leaf that a trusted CA signed.
        if not _signed_by_trusted(leaf, intermediates, anchors):
            return deny(Reason.UNTRUSTED_ISSUER, _untrusted(leaf))
        expired = now > leaf.not_valid_after_utc
        reason = Reason.CERTIFICATE_EXPIRED if expired else Reason.CERTIFICATE_NOT_YET_VALID
        return deny(reason, f"certificate {problem}")
    if _NO_CERT_SIGN in message:
        # The verifier wraps the validator's text: "... ValueError: CA certificate '...' ..."
        start = message.rfind("CA certificate '")
        return deny(Reason.UNTRUSTED_ISSUER, message[start:].split(" (encountered")[0])
    if "candidates exhausted" in message:
        return deny(Reason.UNTRUSTED_ISSUER, _untrusted(leaf))
    return deny(
        Reason.UNTRUSTED_ISSUER, f"certificate chain rejected: {message.split(' (encountered')[0]}"
    )


def _signed_by_trusted(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[TrustAnchor],
) -> bool:
    """Whether a trusted CA signed ``leaf``, directly or through one intermediate it signed,
    whatever the time (only used to word a refusal, never to accept)."""
    roots = [a.certificate for a in anchors]
    signers = roots + [i for i in intermediates if any(signed(i, r) for r in roots)]
    return any(signed(leaf, signer) for signer in signers)


def revoked_in_chain(
    chain: Sequence[x509.Certificate], anchors: Sequence[TrustAnchor]
) -> Decision | None:
    """RFC 5280 §6.3: each certificate of a validated path (leaf first) is checked against the
    CRL of the certificate that issued it, when that issuer is a trust anchor with a CRL.

    The CRL is chosen by the issuing certificate, not by its name: after a CA rollover the old
    and the new CA share a DN, and a CRL only covers what its own key signed (§6.3.3 (f)).
    """
    crls = {a.certificate: a.crl for a in anchors if a.crl is not None}
    for cert, issuer in pairwise(chain):
        crl = crls.get(issuer)
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number) if crl else None
        if entry is not None:
            return deny(
                Reason.REVOKED_BY_CA,
                f"certificate serial {cert.serial_number:x} is revoked by its CA "
                f"(CRL of '{shown_name(issuer.subject)}', "
                f"since {entry.revocation_date_utc:%Y-%m-%d})",
            )
    return None


def signed(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _device_name(leaf: x509.Certificate, anchor: TrustAnchor) -> ChainMatch | Decision:
    cn = common_name(leaf.subject)
    if not cn:
        return deny(Reason.NAME_NOT_ALLOWED, "CA-issued certificate has no CN to name the device")
    if len(cn) > MAX_CN_LENGTH:  # bounds what the CA's rule (and the store) sees
        return deny(
            Reason.NAME_NOT_ALLOWED,
            f"the CN is {len(cn)} characters long, RFC 5280 allows at most {MAX_CN_LENGTH}",
        )
    if anchor.cn_regex is None:
        return ChainMatch(anchor, cn)
    name = name_from_cn(anchor.cn_regex, cn)
    if isinstance(name, CnRuleUnusable):
        return deny(
            Reason.NAME_NOT_ALLOWED,
            f"CA '{anchor.name}' has an unusable CN rule, so its devices are refused: "
            f"{name.problem}",
        )
    if isinstance(name, NoMatch):
        return deny(
            Reason.NAME_NOT_ALLOWED, f"CN '{cn}' does not match the rule of CA '{anchor.name}'"
        )
    if not name:
        return deny(
            Reason.NAME_NOT_ALLOWED,
            f"CN '{cn}' gives an empty device name under CA '{anchor.name}'",
        )
    return ChainMatch(anchor, name)


def load_crl(data: bytes, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    """Parse a PEM or DER CRL and check it is signed by ``issuer`` (RFC 5280 §6.3.3 (f))."""
    from nanoiot.errors import PemError

    try:
        crl = (
            x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        )
    except ValueError as exc:
        raise PemError(f"not a CRL: {exc}") from None
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise PemError(f"the CRL is not signed by CA '{shown_name(issuer.subject)}'")
    return crl


def trusted_ca_problem(parsed: ParsedCredential) -> str | None:
    """Why ``parsed`` cannot be registered as a trusted CA, or None: RFC 5280 §4.2.1.9, only a
    certificate asserting basicConstraints cA may issue others, and §4.2.1.3, with keyCertSign
    if it has a key usage extension."""
    if not parsed.is_certificate:
        return "a trusted CA must be a certificate, not a bare public key"
    cert = load_certificate(parsed.pem)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        return (
            f"'{parsed.subject}' is not a CA certificate (basicConstraints cA is false or "
            "absent): give the CA that issues the device certificates"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not usage.key_cert_sign:  # refused at every handshake otherwise (_may_sign_certificates)
        return f"{_cert_sign_problem(cert)}: give the CA that issues the device certificates"
    return None
