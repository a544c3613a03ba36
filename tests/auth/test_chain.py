import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID

from auth.certificate import parse_credential
from auth.chain import ChainMatch, TrustAnchor, load_crl, match_chain, trusted_ca_problem
from auth.connack import ConnackCode
from auth.decision import Decision, Holder, Reason
from auth.kinds import CredentialStatus
from auth.pinning import decide_pinned
from nanoiot.errors import PemError
from tests.certgen import Issued, issue, revocation_list


def now() -> dt.datetime:
    """The time of the check, taken when it runs: certificates are made then too, valid from
    a few minutes before, and a full run reaches these tests long after it imported them."""
    return dt.datetime.now(dt.UTC)


CA = issue("Fleet CA", ca=True)
OTHER_CA = issue("Other CA", ca=True)


def anchor(ca: Issued = CA, **kwargs: object) -> TrustAnchor:
    return TrustAnchor("ca-1", ca.cert.subject.rfc4514_string(), ca.cert, **kwargs)  # type: ignore[arg-type]


def crl_revoking(ca: Issued, *serials: int) -> x509.CertificateRevocationList:
    return revocation_list(ca, *serials)


def refused(result: ChainMatch | Decision) -> Decision:
    assert isinstance(result, Decision), result
    assert not result.allowed
    return result


def test_leaf_of_trusted_ca_matches_with_cn_as_device_name() -> None:
    leaf = issue("sensor-17", issuer=CA)
    result = match_chain(leaf.cert, [], [anchor(OTHER_CA), anchor()], now=now())
    assert isinstance(result, ChainMatch)
    assert result.device_name == "sensor-17"
    assert result.anchor.certificate == CA.cert


def test_intermediate_sent_by_the_client_is_used() -> None:
    intermediate = issue("Plant CA", issuer=CA, ca=True)
    leaf = issue("sensor-2", issuer=intermediate)
    assert isinstance(
        match_chain(leaf.cert, [intermediate.cert], [anchor()], now=now()), ChainMatch
    )
    missing = refused(match_chain(leaf.cert, [], [anchor()], now=now()))
    assert missing.reason is Reason.UNTRUSTED_ISSUER


def test_untrusted_issuer_and_no_anchors() -> None:
    leaf = issue("x", issuer=OTHER_CA)
    decision = refused(match_chain(leaf.cert, [], [anchor()], now=now()))
    assert decision.reason is Reason.UNTRUSTED_ISSUER
    assert "CN=Other CA" in decision.detail
    assert refused(match_chain(leaf.cert, [], [], now=now())).reason is Reason.UNTRUSTED_ISSUER


def test_issuer_that_is_not_a_ca_is_refused() -> None:
    not_ca = issue("plain")
    leaf = issue("x", issuer=not_ca)
    assert (
        refused(match_chain(leaf.cert, [], [anchor(not_ca)], now=now())).reason
        is Reason.UNTRUSTED_ISSUER
    )


def test_crl_revokes_a_leaf() -> None:
    leaf = issue("sensor-3", issuer=CA, serial=4242)
    revoked = anchor(crl=crl_revoking(CA, 4242))
    decision = refused(match_chain(leaf.cert, [], [revoked], now=now()))
    assert decision.reason is Reason.REVOKED_BY_CA
    assert "1092" in decision.detail  # 4242 in hex
    other = issue("sensor-4", issuer=CA, serial=4243)
    assert isinstance(match_chain(other.cert, [], [revoked], now=now()), ChainMatch)


def test_expiry_unless_skipped_and_eku() -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    long_lived = issue("Old CA", ca=True, not_before=past - dt.timedelta(days=365))
    old = issue("old", issuer=long_lived, not_before=past, not_after=past + dt.timedelta(days=1))
    expired = refused(match_chain(old.cert, [], [anchor(long_lived)], now=now()))
    assert expired.reason is Reason.CERTIFICATE_EXPIRED
    skipped = match_chain(old.cert, [], [anchor(long_lived)], now=now(), check_validity=False)
    assert isinstance(skipped, ChainMatch)
    server = issue("s", issuer=CA, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    wrong_use = refused(match_chain(server.cert, [], [anchor()], now=now()))
    assert wrong_use.reason is Reason.NOT_FOR_CLIENT_AUTH


def test_cn_regex_group_one_names_the_device() -> None:
    rule = anchor(cn_regex=r"device-(\w+)\.fleet\.example")
    leaf = issue("device-abc.fleet.example", issuer=CA)
    result = match_chain(leaf.cert, [], [rule], now=now())
    assert isinstance(result, ChainMatch)
    assert result.device_name == "abc"
    stranger = issue("intruder.example", issuer=CA)
    assert (
        refused(match_chain(stranger.cert, [], [rule], now=now())).reason is Reason.NAME_NOT_ALLOWED
    )


def test_load_crl_checks_the_signature() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    crl = crl_revoking(CA, 1)
    assert load_crl(crl.public_bytes(Encoding.PEM), CA.cert).issuer == CA.cert.subject
    assert load_crl(crl.public_bytes(Encoding.DER), CA.cert) is not None
    with pytest.raises(PemError, match="not signed by CA"):
        load_crl(crl.public_bytes(Encoding.PEM), OTHER_CA.cert)
    with pytest.raises(PemError, match="not a CRL"):
        load_crl(b"garbage", CA.cert)


def _holder(issuer_ca_id: str | None) -> Holder:
    return Holder("dev-1", "sensor-5", True, "cred-1", CredentialStatus.ACTIVE, False, issuer_ca_id)


def test_pinned_leaf_of_a_ca_needs_that_ca_still_trusted() -> None:
    leaf = issue("sensor-5", issuer=CA, serial=77)
    holder = _holder("ca-1")
    assert decide_pinned(leaf.cert, [], holder, [anchor()], now=now()).allowed
    # Deleted or disabled (no anchor with its id, even if another anchor has the same key).
    for anchors in ([], [TrustAnchor("ca-2", "again", CA.cert)]):
        gone = decide_pinned(leaf.cert, [], holder, anchors, now=now(), ca_names={"ca-1": "fleet"})
        assert gone.reason is Reason.CA_NO_LONGER_TRUSTED
        assert gone.detail == "certificate was issued by CA 'fleet' which is no longer trusted"
        assert gone.holder == holder
        assert gone.connack == ConnackCode.NOT_AUTHORIZED
    unnamed = decide_pinned(leaf.cert, [], holder, [], now=now())
    assert "CA 'ca-1'" in unnamed.detail
    # Still trusted: the chain is checked again, with the CA's CRL.
    revoked = decide_pinned(leaf.cert, [], holder, [anchor(crl=crl_revoking(CA, 77))], now=now())
    assert revoked.reason is Reason.REVOKED_BY_CA
    assert revoked.holder == holder


def test_pinned_leaf_through_an_intermediate_obeys_its_revocation() -> None:
    intermediate = issue("Plant CA", issuer=CA, ca=True, serial=99)
    leaf = issue("sensor-5", issuer=intermediate)
    holder = _holder("ca-1")
    assert decide_pinned(leaf.cert, [intermediate.cert], holder, [anchor()], now=now()).allowed
    crl = anchor(crl=crl_revoking(CA, 99))
    revoked = decide_pinned(leaf.cert, [intermediate.cert], holder, [crl], now=now())
    assert revoked.reason is Reason.REVOKED_BY_CA


def test_operator_pinned_leaf_needs_no_ca() -> None:
    leaf = issue("sensor-5", issuer=CA, serial=78)
    holder = _holder(None)
    assert decide_pinned(leaf.cert, [], holder, [], now=now()).allowed
    # ... but obeys the CRL of a trusted CA that issued it, as before.
    crl = anchor(crl=crl_revoking(CA, 78))
    assert decide_pinned(leaf.cert, [], holder, [crl], now=now()).reason is Reason.REVOKED_BY_CA
    assert decide_pinned(leaf.cert, [], None, [], now=now()).reason is Reason.UNKNOWN_KEY


def test_only_a_certificate_asserting_ca_may_be_trusted() -> None:
    """RFC 5280 §4.2.1.9: the REST API, the web UI and the CLI refuse the same things."""
    assert trusted_ca_problem(parse_credential(CA.cert_pem)) is None
    leaf = trusted_ca_problem(parse_credential(issue("sensor-1", issuer=CA).cert_pem))
    assert leaf is not None
    assert leaf.startswith("'CN=sensor-1' is not a CA certificate")
    spki = CA.cert.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    bare_key = trusted_ca_problem(parse_credential(spki))
    assert bare_key == "a trusted CA must be a certificate, not a bare public key"


def signing_only() -> x509.KeyUsage:
    """A key usage for signatures but not for certificates (an OCSP responder's, say)."""
    return x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def test_a_ca_whose_key_usage_lacks_key_cert_sign_issues_no_device() -> None:
    """RFC 5280 §4.2.1.3 and §6.1.4 (n): a CA certificate with a key usage extension issues
    certificates only if it asserts keyCertSign, intermediate or trusted root alike."""
    not_issuing = issue("Responder", issuer=CA, ca=True, key_usage=signing_only())
    leaf = issue("sensor-1", issuer=not_issuing)
    decision = refused(match_chain(leaf.cert, [not_issuing.cert], [anchor()], now=now()))
    assert decision.reason is Reason.UNTRUSTED_ISSUER
    assert decision.detail == (
        "CA certificate 'CN=Responder' may not sign certificates: its key usage lacks keyCertSign"
    )
    issuing_usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    issuing = issue("Issuing CA", issuer=CA, ca=True, key_usage=issuing_usage)
    good = issue("sensor-2", issuer=issuing)
    assert isinstance(match_chain(good.cert, [issuing.cert], [anchor()], now=now()), ChainMatch)
    root = issue("Signing Root", ca=True, key_usage=signing_only())
    direct = issue("sensor-3", issuer=root)
    decision = refused(match_chain(direct.cert, [], [anchor(root)], now=now()))
    assert decision.detail.startswith("CA certificate 'CN=Signing Root' may not sign")


def test_a_ca_whose_key_usage_lacks_key_cert_sign_cannot_be_trusted() -> None:
    root = issue("Signing Root", ca=True, key_usage=signing_only())
    assert trusted_ca_problem(parse_credential(root.cert_pem)) == (
        "CA certificate 'CN=Signing Root' may not sign certificates: its key usage lacks "
        "keyCertSign: give the CA that issues the device certificates"
    )
