"""Which device keys and certificates are strong enough to identify a device, without I/O.

Checked where a certificate is registered and again at every handshake, so a key registered
before the minimums were raised is refused too. The minimums are settings
(``min_rsa_key_bits``, ``min_ec_key_bits``); the defaults follow NIST SP 800-57 Part 1
(rev. 5) §5.6.1: RSA below 2048 bits and curves below 256 bits no longer give 112 bits of
security. Ed25519 and Ed448 have fixed, sufficient sizes; DSA is refused (FIPS 186-5 dropped
it for signatures). A CA certificate another CA issued (an intermediate) is never a
device's.
"""

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from auth.certificate import ParsedCredential, describe_key, is_issued_ca_certificate
from nanoiot.errors import PemError

_ACCEPTED = "use EC P-256, Ed25519 or RSA"

__all__ = ["CA_AS_DEVICE", "DEFAULT_KEYS", "KeyPolicy", "is_issued_ca_certificate", "key_problem"]


@dataclass(frozen=True)
class KeyPolicy:
    """The smallest keys a device may use, in bits."""

    min_rsa_bits: int = 2048
    min_ec_bits: int = 256


DEFAULT_KEYS = KeyPolicy()


def key_problem(public_key: PublicKeyTypes, policy: KeyPolicy = DEFAULT_KEYS) -> str | None:
    """Why ``public_key`` is too weak to identify a device (one short phrase), or None."""
    try:
        key_type, key_size = describe_key(public_key)
    except PemError:
        return f"{type(public_key).__name__} keys are not accepted ({_ACCEPTED})"
    return described_key_problem(key_type, key_size, policy)


def described_key_problem(key_type: str, key_size: int, policy: KeyPolicy) -> str | None:
    """``key_problem`` for a key described as ``auth.certificate.describe_key`` does."""
    if key_type == "RSA":
        if key_size < policy.min_rsa_bits:
            return (
                f"RSA key of {key_size} bits is too weak "
                f"(at least {policy.min_rsa_bits}: min_rsa_key_bits)"
            )
        return None
    if key_type.startswith("EC "):
        if key_size < policy.min_ec_bits:
            return (
                f"{key_type} key ({key_size} bits) is too weak "
                f"(at least {policy.min_ec_bits}: min_ec_key_bits)"
            )
        return None
    if key_type in ("Ed25519", "Ed448"):
        return None
    return f"{key_type} keys are not accepted ({_ACCEPTED})"


def registration_problem(parsed: ParsedCredential, policy: KeyPolicy) -> str | None:
    """Why ``parsed`` cannot be registered as a device credential, or None."""
    if parsed.is_ca:
        return CA_AS_DEVICE
    return described_key_problem(parsed.key_type, parsed.key_size, policy)


CA_AS_DEVICE = (
    "a CA certificate issued by another CA (basicConstraints CA:TRUE) cannot be a device "
    "certificate: trust it as a CA (nanoiot ca add) and give the device a certificate it issued"
)
