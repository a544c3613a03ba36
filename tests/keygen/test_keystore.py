"""The PKCS#12 splice: our MAC equals the one cryptography computes, entries survive."""

import datetime as dt
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from nanoiot.keygen import keystore
from nanoiot.keygen.certs import Issued, client_certificate, new_key, server_certificate
from nanoiot.keygen.keystore import build_keystore, pkcs12_kdf
from nanoiot.keygen.properties import KeyAlgorithm, build_properties

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pair() -> tuple[Issued, Issued]:
    props = build_properties({"DOMAIN_SUFFIX": "broker", "CLIENT_CN": "dev"}, "t")
    server = server_certificate(props, new_key(KeyAlgorithm.EC, 256), NOW)
    return server, client_certificate(props, new_key(KeyAlgorithm.EC, 256), NOW)


@pytest.mark.parametrize("password", ["password", "x" * 40, "long " * 30, "pässwörd-ü"])
def test_our_mac_matches_cryptographys_for_any_password_length(
    pair: tuple[Issued, Issued], password: str
) -> None:
    # Recompute the MAC of a store cryptography wrote: an independent check of pkcs12_kdf
    # (RFC 7292 Appendix B), including passwords longer than one 64-byte block.
    _server, device = pair
    store = pkcs12.serialize_key_and_certificates(
        b"a", device.key, device.cert, None, keystore._encryption(password)
    )
    items, _algorithm, salt, iterations = keystore._pfx_parts(store)
    auth_safe = keystore._tlv(0x30, b"".join(items))
    key = pkcs12_kdf(keystore._bmp_password(password), salt, 3, iterations, 32)
    digest = hmac.new(key, auth_safe, hashlib.sha256).digest()
    assert digest in store


@pytest.mark.parametrize("password", ["password", "long " * 30])
def test_spliced_store_keeps_key_entry_and_trusted_entry(
    pair: tuple[Issued, Issued], password: str
) -> None:
    server, device = pair
    data = build_keystore(
        alias="clientalias",
        key=device.key,
        chain=[device.cert],
        password=password,
        trusted=[("serveralias", server.cert)],
    )
    loaded = pkcs12.load_pkcs12(data, password.encode())  # checks the MAC
    assert loaded.cert is not None
    assert loaded.cert.friendly_name == b"clientalias"
    assert [c.friendly_name for c in loaded.additional_certs] == [b"serveralias"]
    assert loaded.additional_certs[0].certificate == server.cert
    with pytest.raises(ValueError, match=r"[Ii]nvalid password|MAC"):
        pkcs12.load_pkcs12(data, b"wrong password")


def test_der_lengths_round_trip() -> None:
    for size in (0, 1, 127, 128, 255, 256, 70_000):
        element = keystore._tlv(0x04, b"x" * size)
        assert keystore._content(element, 0x04) == b"x" * size
