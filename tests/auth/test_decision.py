import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from auth.connack import ConnackCode
from auth.decision import (
    Holder,
    Reason,
    decide_basic,
    decide_certificate,
    decide_token,
    no_credentials,
    store_unavailable,
)
from auth.fingerprint import spki_sha256
from auth.kinds import CredentialStatus
from tests.certgen import issue


def now() -> dt.datetime:
    """The time of the check, taken when it runs: certificates are made then too, valid from
    a few minutes before, and a full run reaches these tests long after it imported them."""
    return dt.datetime.now(dt.UTC)


DEVICE = issue("dev-1")


def holder(status: CredentialStatus = CredentialStatus.ACTIVE, enabled: bool = True) -> Holder:
    return Holder("id-1", "dev-1", enabled, "cred-1", status)


def test_known_active_key_of_enabled_device_is_allowed() -> None:
    decision = decide_certificate(DEVICE.cert, holder(), now=now())
    assert decision.allowed
    assert decision.reason is Reason.ALLOWED
    assert decision.connack is ConnackCode.ACCEPTED
    assert decision.fingerprint == spki_sha256(DEVICE.key.public_key())
    assert decision.holder == holder()


def test_unknown_key_names_its_fingerprint() -> None:
    decision = decide_certificate(DEVICE.cert, None, now=now())
    assert not decision.allowed
    assert decision.reason is Reason.UNKNOWN_KEY
    assert decision.connack is ConnackCode.NOT_AUTHORIZED
    assert spki_sha256(DEVICE.key.public_key()) in decision.detail


@pytest.mark.parametrize(
    ("status", "enabled", "reason"),
    [
        (CredentialStatus.REVOKED, True, Reason.CREDENTIAL_REVOKED),
        (CredentialStatus.DISABLED, True, Reason.CREDENTIAL_DISABLED),
        (CredentialStatus.ACTIVE, False, Reason.DEVICE_DISABLED),
        (CredentialStatus.REVOKED, False, Reason.CREDENTIAL_REVOKED),
    ],
)
def test_state_refusals(status: CredentialStatus, enabled: bool, reason: Reason) -> None:
    decision = decide_certificate(DEVICE.cert, holder(status, enabled), now=now())
    assert (decision.allowed, decision.reason, decision.connack) == (
        False,
        reason,
        ConnackCode.NOT_AUTHORIZED,
    )
    assert "dev-1" in decision.detail
    assert decision.holder is not None


def test_expired_and_not_yet_valid_unless_validity_is_skipped() -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    expired = issue("dev-1", not_before=past, not_after=past + dt.timedelta(days=1))
    decision = decide_certificate(expired.cert, holder(), now=now())
    assert decision.reason is Reason.CERTIFICATE_EXPIRED
    assert "expired on 2020-01-02" in decision.detail
    assert decide_certificate(expired.cert, holder(), now=now(), check_validity=False).allowed

    future = now() + dt.timedelta(days=10)
    early = issue("dev-1", not_before=future, not_after=future + dt.timedelta(days=1))
    assert (
        decide_certificate(early.cert, holder(), now=now()).reason
        is Reason.CERTIFICATE_NOT_YET_VALID
    )


def test_server_only_certificate_is_refused_even_when_pinned() -> None:
    server_only = issue("dev-1", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    decision = decide_certificate(server_only.cert, holder(), now=now())
    assert decision.reason is Reason.NOT_FOR_CLIENT_AUTH
    assert "serverAuth" in decision.detail
    no_eku = issue("dev-1", eku=None)
    assert decide_certificate(no_eku.cert, holder(), now=now()).allowed


def test_tokens_basic_and_the_rest() -> None:
    assert decide_token(holder()).allowed
    assert decide_token(None).reason is Reason.UNKNOWN_TOKEN
    assert decide_token(holder(enabled=False)).reason is Reason.DEVICE_DISABLED
    bad = decide_basic(None, "u1")
    assert bad.connack is ConnackCode.BAD_USERNAME_OR_PASSWORD
    assert "'u1'" in bad.detail
    assert decide_basic(holder(), "u1").allowed
    assert no_credentials().connack is ConnackCode.NOT_AUTHORIZED
    assert store_unavailable("refused").connack is ConnackCode.SERVER_UNAVAILABLE


def key_usage(**bits: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment")
    more = ("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: bits.get(name, False) for name in names + more})


@pytest.mark.parametrize(
    ("bits", "shown"),
    [
        ({"key_encipherment": True}, "keyEncipherment"),
        ({"key_cert_sign": True, "crl_sign": True}, "keyCertSign, crlSign"),
        ({"key_agreement": True}, "keyAgreement"),
        ({}, "none"),
    ],
)
def test_a_key_usage_without_digital_signature_is_refused_even_when_pinned(
    bits: dict[str, bool], shown: str
) -> None:
    """RFC 5280 §4.2.1.3: a TLS client signs its handshake with the key; a certificate whose
    key usage leaves signing out was not issued for that."""
    decision = decide_certificate(
        issue("dev-1", key_usage=key_usage(**bits)).cert, holder(), now=now()
    )
    assert decision.reason is Reason.NOT_FOR_CLIENT_AUTH
    assert decision.detail == (
        "certificate key is not for signing, which a TLS client does "
        f"(key usage: {shown}; digitalSignature is needed)"
    )


def test_a_key_usage_with_digital_signature_is_allowed() -> None:
    signing = key_usage(digital_signature=True, key_encipherment=True)
    assert decide_certificate(issue("dev-1", key_usage=signing).cert, holder(), now=now()).allowed
