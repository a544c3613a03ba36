"""A leaf found by its public key, against what was registered for that key (auth.pinning)."""

import datetime as dt

from auth.chain import TrustAnchor
from auth.decision import Decision, Holder, Reason
from auth.kinds import CredentialStatus
from auth.pinning import decide_pinned, registered_certificate, vouched_common_name
from tests.certgen import Issued, issue, revocation_list

CA = issue("Fleet CA", ca=True)
OTHER_CA = issue("Other CA", ca=True)


def holder(registered: Issued | str, issuer_ca_id: str | None = None) -> Holder:
    pem = registered if isinstance(registered, str) else registered.cert_pem
    return Holder(
        "dev-1", "meter", True, "cred-1", CredentialStatus.ACTIVE,
        issuer_ca_id=issuer_ca_id, pinned_pem=pem,
    )  # fmt: skip


def anchor(ca: Issued = CA, crl_serials: tuple[int, ...] = ()) -> TrustAnchor:
    crl = revocation_list(ca, *crl_serials) if crl_serials else None
    return TrustAnchor("ca-1", "fleet", ca.cert, crl=crl)


def decide(
    presented: Issued, registered: Holder, anchors: list[TrustAnchor], **kw: object
) -> Decision:
    # The clock is read per decision, not at import: certificates are issued valid from five
    # minutes back, and a module can be imported longer than that before its tests run.
    now = dt.datetime.now(dt.UTC)
    return decide_pinned(presented.cert, [], registered, anchors, now=now, **kw)  # type: ignore[arg-type]


def test_a_revoked_ca_issued_certificate_does_not_come_back_self_signed() -> None:
    """The attack: a pinned CA-issued leaf is listed in its CA's CRL; the device re-signs the
    same key as a self-signed certificate, which used to be admitted by the key alone."""
    leaf = issue("meter", issuer=CA)
    resigned = issue("meter", key=leaf.key)  # self-signed, same key
    revoked = [anchor(crl_serials=(leaf.cert.serial_number,))]
    refused = decide(resigned, holder(leaf), revoked)
    assert refused.reason is Reason.REVOKED_BY_CA
    assert refused.detail.startswith("registered certificate serial")
    # Before any CRL entry the re-signed certificate is refused too: it is not the CA's.
    not_the_ca = decide(resigned, holder(leaf), [anchor()])
    assert not_the_ca.reason is Reason.ISSUER_MISMATCH
    assert "was issued by 'CN=Fleet CA'" in not_the_ca.detail
    # Even when the CA is not (or no longer) trusted at all.
    assert decide(resigned, holder(leaf), []).reason is Reason.ISSUER_MISMATCH
    # The registered certificate itself, and a renewal of the key by the same CA, stand.
    assert decide(leaf, holder(leaf), [anchor()]).allowed
    assert decide(issue("meter", key=leaf.key, issuer=CA), holder(leaf), [anchor()]).allowed
    # Another CA's certificate for the key does not.
    other = issue("meter", key=leaf.key, issuer=OTHER_CA)
    assert (
        decide(other, holder(leaf), [anchor(), anchor(OTHER_CA)]).reason is Reason.ISSUER_MISMATCH
    )


def test_a_crl_entry_for_the_registered_certificate_revokes_its_key() -> None:
    """For a credential stored through a trusted CA as well: the CA re-issuing the key after
    revoking its certificate does not bring the key back."""
    leaf = issue("meter", issuer=CA)
    reissued = issue("meter", key=leaf.key, issuer=CA)
    revoked = [anchor(crl_serials=(leaf.cert.serial_number,))]
    assert (
        decide(reissued, holder(leaf, issuer_ca_id="ca-1"), revoked).reason is Reason.REVOKED_BY_CA
    )
    assert decide(reissued, holder(leaf), revoked).reason is Reason.REVOKED_BY_CA


def test_self_signed_credentials_are_pinned_by_key_unless_the_whole_certificate_is() -> None:
    registered, now = issue("meter"), dt.datetime.now(dt.UTC)
    resigned = issue(  # same key, new dates: what an expired device can do by itself
        "meter", key=registered.key, not_after=now + dt.timedelta(days=3650)
    )
    assert decide(resigned, holder(registered), []).allowed  # the key is the identity
    pinned = decide(resigned, holder(registered), [], whole_certificate=True)
    assert pinned.reason is Reason.CERTIFICATE_NOT_PINNED
    assert "is not the one registered for device 'meter'" in pinned.detail
    assert decide(registered, holder(registered), [], whole_certificate=True).allowed
    # The registered certificate's own dates then count.
    expired = issue(
        "meter", not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)
    )
    late = decide(expired, holder(expired), [], whole_certificate=True)
    assert late.reason is Reason.CERTIFICATE_EXPIRED


def test_a_bare_public_key_has_no_certificate_to_pin() -> None:
    device = issue("meter")
    assert decide(device, holder(device.public_key_pem), [], whole_certificate=True).allowed


def test_no_parsed_certificate_is_kept_per_device() -> None:
    """The registered certificate is parsed for each decision: a cache of them would hold a
    few KiB for every device of a fleet."""
    leaf = issue("meter", issuer=CA)
    registered = holder(leaf)
    assert decide(leaf, registered, [anchor()]).allowed
    first, second = registered_certificate(registered), registered_certificate(registered)
    assert first == second == leaf.cert
    assert first is not second


def test_the_cn_rules_see_is_one_the_device_cannot_choose() -> None:
    """``{cert_cn}`` (auth.acl): a leaf's own CN only when the very certificate registered,
    or when a CA vouches for it; a self-signed registration's CN for any other leaf of its
    key; none for a bare public key, which any certificate of the key stands in for."""
    own = issue("meter")
    forged = issue("other-meter", key=own.key)  # the same key, re-signed by the device
    assert vouched_common_name(own.cert, holder(own)) == "meter"
    assert vouched_common_name(forged.cert, holder(own)) == "meter"
    assert vouched_common_name(forged.cert, holder(own.public_key_pem)) is None
    issued = issue("meter", issuer=CA)
    renewed = issue("meter-2", key=issued.key, issuer=CA)  # the CA's word
    assert vouched_common_name(renewed.cert, holder(issued)) == "meter-2"
    assert vouched_common_name(renewed.cert, holder(issued, issuer_ca_id="ca-1")) == "meter-2"
