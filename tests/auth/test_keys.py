"""Key minimums and CA certificates as device certificates (auth.keys)."""

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from auth.certificate import parse_credential
from auth.keys import KeyPolicy, key_problem, registration_problem
from tests.certgen import issue


def test_minimums_and_what_is_always_accepted() -> None:
    rsa_1024 = rsa.generate_private_key(65537, 1024).public_key()  # noqa: S505 - the attack
    assert key_problem(rsa_1024) == (
        "RSA key of 1024 bits is too weak (at least 2048: min_rsa_key_bits)"
    )
    assert key_problem(rsa_1024, KeyPolicy(min_rsa_bits=1024)) is None
    assert key_problem(rsa.generate_private_key(65537, 2048).public_key()) is None
    p224 = ec.generate_private_key(ec.SECP224R1()).public_key()
    assert (
        key_problem(p224) == "EC P-224 key (224 bits) is too weak (at least 256: min_ec_key_bits)"
    )
    assert key_problem(ec.generate_private_key(ec.SECP256R1()).public_key()) is None
    assert key_problem(ed25519.Ed25519PrivateKey.generate().public_key()) is None
    dsa_key = dsa.generate_private_key(2048).public_key()
    assert key_problem(dsa_key) == "DSA keys are not accepted (use EC P-256, Ed25519 or RSA)"


def test_registration_refuses_issued_ca_certificates_and_weak_keys() -> None:
    root = issue("Fleet CA", ca=True)
    intermediate = parse_credential(issue("Plant CA", ca=True, issuer=root).cert_pem)
    assert intermediate.is_ca
    assert (registration_problem(intermediate, KeyPolicy()) or "").startswith(
        "a CA certificate issued by another CA (basicConstraints CA:TRUE) cannot be a device"
    )
    # Self-signed with CA:TRUE, as `openssl req -x509` makes by default: pinned by its key.
    assert registration_problem(parse_credential(root.cert_pem), KeyPolicy()) is None
    weak = issue("m", key=rsa.generate_private_key(65537, 1024))  # noqa: S505 - the attack
    assert "too weak" in (registration_problem(parse_credential(weak.cert_pem), KeyPolicy()) or "")
    device = parse_credential(issue("m").cert_pem)
    assert not device.is_ca
    assert registration_problem(device, KeyPolicy()) is None
