"""build_server_context: credentials (PEM, PKCS#12 keystores), policy, and the pyOpenSSL
verify-callback contract that the whole device-authentication design rests on."""

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    load_pem_private_key,
    pkcs12,
)
from OpenSSL import SSL, crypto

from broker.tls import accept_any_client_chain, build_server_context, load_server_credentials
from nanoiot.errors import ConfigError, TlsConfigError
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki, encrypted, write_key
from tests.broker.tls_handshakes import handshake, signing_key
from tests.certgen import issue, new_key

# X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT (OpenSSL x509_vfy.h)
SELF_SIGNED_LEAF = 18


def client_context(client: ClientFiles | None) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if client is not None:
        ctx.use_certificate(client.issued.cert)
        ctx.use_privatekey(signing_key(client.issued.key))
    return ctx


# --- the pyOpenSSL contract ---


def test_verify_callback_contract_accepts_an_unknown_self_signed_cert(
    pki: ServerPki, client_ec: ClientFiles
) -> None:
    """Fails if pyOpenSSL changes what set_verify's callback gets or what its result means."""
    key, chain = load_server_credentials(
        Settings(mqtt_ssl_pem_cert=pki.cert_file, mqtt_ssl_pem_key=pki.key_file)
    )
    calls: list[tuple[object, ...]] = []
    verdict = True

    def callback(conn: SSL.Connection, cert: object, errno: int, depth: int, ok: int) -> bool:
        calls.append((conn, cert, errno, depth, ok))
        return verdict

    def server_context() -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.use_certificate(chain[0])
        ctx.use_privatekey(key)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, callback)
        return ctx

    server, _ = handshake(server_context(), client_context(client_ec))
    conn, cert, errno, depth, ok = calls[0]
    assert conn is server
    assert isinstance(cert, crypto.X509)
    assert cert.to_cryptography() == client_ec.issued.cert
    assert (errno, depth, ok) == (SELF_SIGNED_LEAF, 0, 0)
    assert server.get_peer_certificate(as_cryptography=True) == client_ec.issued.cert

    verdict = False  # and the callback's answer is what decides
    with pytest.raises(SSL.Error):
        handshake(server_context(), client_context(client_ec))


def test_our_context_sends_no_ca_names_and_accepts_any_client_cert(
    client_rsa: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    server, client = handshake(build_server_context(tls_settings()), client_context(client_rsa))
    # RFC 8446 §4.3.2: no certificate_authorities extension, so clients send any certificate.
    assert client.get_client_ca_list() == []
    assert server.get_peer_certificate(as_cryptography=True) == client_rsa.issued.cert
    assert accept_any_client_chain(server, None, SELF_SIGNED_LEAF, 0, 0) is True


def test_required_client_cert_is_enforced_in_the_handshake(
    tls_settings: Callable[..., Settings],
) -> None:
    ctx = build_server_context(tls_settings(require_client_certificate=True))
    assert ctx.get_verify_mode() == SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    with pytest.raises(SSL.Error):
        handshake(ctx, client_context(None))
    optional = build_server_context(tls_settings(require_client_certificate=False))
    assert optional.get_verify_mode() == SSL.VERIFY_PEER
    server, _ = handshake(optional, client_context(None))
    assert server.get_peer_certificate() is None


def test_policy_options(tls_settings: Callable[..., Settings]) -> None:
    options = build_server_context(tls_settings()).set_options(0)  # returns the options in force
    assert options & SSL.OP_NO_COMPRESSION
    assert options & SSL.OP_NO_RENEGOTIATION


def test_legacy_protocols_log_a_warning(
    tls_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="broker.tls"):
        build_server_context(tls_settings(tls_allow_legacy_protocols=True))
    assert any("RFC 8996" in r.getMessage() for r in caplog.records)


def test_legacy_protocols_contradict_a_tls_1_3_minimum(
    tls_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(TlsConfigError, match="mqtt_ssl_protocol"):
        build_server_context(
            tls_settings(tls_allow_legacy_protocols=True, mqtt_ssl_protocol="TLSv1.3")
        )


# --- PEM credentials ---


def test_pem_with_key_password(pki: ServerPki, tmp_path: Path) -> None:
    key_file = write_key(pki.server.key, tmp_path / "k.pem", encrypted(b"s3cret"))
    settings = Settings(
        mqtt_ssl_pem_cert=pki.cert_file,
        mqtt_ssl_pem_key=key_file,
        mqtt_ssl_pem_key_password="s3cret",
    )
    _, chain = load_server_credentials(settings)
    assert chain == [pki.server.cert, pki.ca.cert]
    build_server_context(settings)


def test_pem_key_inside_the_certificate_file(pki: ServerPki, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(pki.key_file.read_bytes() + pki.cert_file.read_bytes())
    build_server_context(Settings(mqtt_ssl_pem_cert=both))


def test_password_for_an_unencrypted_key_is_harmless(pki: ServerPki) -> None:
    build_server_context(
        Settings(
            mqtt_ssl_pem_cert=pki.cert_file,
            mqtt_ssl_pem_key=pki.key_file,
            mqtt_ssl_pem_key_password="unused",
        )
    )


@pytest.mark.parametrize(
    ("password", "message"),
    [("wrong", "wrong password"), (None, "encrypted; set mqtt_ssl_pem_key_password")],
)
def test_pem_key_password_errors(
    password: str | None, message: str, pki: ServerPki, tmp_path: Path
) -> None:
    key_file = write_key(pki.server.key, tmp_path / "k.pem", encrypted(b"s3cret"))
    settings = Settings(
        mqtt_ssl_pem_cert=pki.cert_file,
        mqtt_ssl_pem_key=key_file,
        mqtt_ssl_pem_key_password=password,
    )
    with pytest.raises(TlsConfigError, match=message) as caught:
        build_server_context(settings)
    assert str(key_file) in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_wrong_password_that_decrypts_to_garbage_is_still_a_wrong_password(
    pki: ServerPki, tmp_path: Path
) -> None:
    """About one wrong password in 256 passes the decryption's padding check and yields
    bytes that fail to parse: the operator must still be told the password is wrong."""
    key_file = write_key(pki.server.key, tmp_path / "k.pem", encrypted(b"s3cret"))
    pem = key_file.read_bytes()
    password = next(p for p in (f"wrong{n}" for n in range(20000)) if _garbage(pem, p))
    settings = Settings(
        mqtt_ssl_pem_cert=pki.cert_file,
        mqtt_ssl_pem_key=key_file,
        mqtt_ssl_pem_key_password=password,
    )
    with pytest.raises(TlsConfigError, match="wrong password"):
        build_server_context(settings)


def _garbage(pem: bytes, password: str) -> bool:
    """Whether ``password`` gets past the padding check of ``pem`` (then fails to parse)."""
    try:
        load_pem_private_key(pem, password.encode())
    except ValueError as exc:
        return "password" not in str(exc).lower()
    return False


def test_key_that_does_not_match_the_certificate(pki: ServerPki, tmp_path: Path) -> None:
    other = write_key(new_key("ec"), tmp_path / "other.key")
    with pytest.raises(TlsConfigError, match="does not match") as caught:
        build_server_context(Settings(mqtt_ssl_pem_cert=pki.cert_file, mqtt_ssl_pem_key=other))
    assert str(other) in str(caught.value)
    assert str(pki.cert_file) in str(caught.value)


def test_unreadable_and_malformed_files(pki: ServerPki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(TlsConfigError, match="cannot read") as caught:
        build_server_context(Settings(mqtt_ssl_pem_cert=missing, mqtt_ssl_pem_key=pki.key_file))
    assert str(missing) in str(caught.value)

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match="no readable PEM certificate"):
        build_server_context(Settings(mqtt_ssl_pem_cert=junk, mqtt_ssl_pem_key=pki.key_file))
    with pytest.raises(TlsConfigError, match="no readable PEM private key"):
        build_server_context(Settings(mqtt_ssl_pem_cert=pki.cert_file, mqtt_ssl_pem_key=junk))
    with pytest.raises(TlsConfigError, match="mqtt_ssl_pem_cert is not set"):
        build_server_context(Settings())
    assert issubclass(TlsConfigError, ConfigError)


# --- PKCS#12 keystores ---


def write_p12(
    path: Path, pki: ServerPki, alias: bytes | None, password: bytes, cas: list[x509.Certificate]
) -> Path:
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            alias,
            signing_key(pki.server.key),
            pki.server.cert,
            cas,
            BestAvailableEncryption(password),
        )
    )
    return path


def keystore_settings(path: Path, **values: str | None) -> Settings:
    return Settings(mqtt_ssl_credentials_type="KEYSTORE", mqtt_ssl_key_store=path, **values)


@pytest.mark.parametrize("name", ["server.p12", "server.jks"])
def test_keystore_with_alias_and_password(name: str, pki: ServerPki, tmp_path: Path) -> None:
    store = write_p12(tmp_path / name, pki, b"serveralias", b"storepw", [pki.ca.cert])
    for alias in ("serveralias", "ServerAlias", None):  # Java aliases ignore case
        key, chain = load_server_credentials(
            keystore_settings(
                store, mqtt_ssl_key_store_password="storepw", mqtt_ssl_key_alias=alias
            )
        )
        assert key.public_key() == pki.server.cert.public_key()
        assert chain == [pki.server.cert]  # the self-signed root is not sent
    # A key password falls back to the store password (Java 9+ keytool uses the store's).
    build_server_context(
        keystore_settings(
            store, mqtt_ssl_key_store_password="storepw", mqtt_ssl_key_password="storepw"
        )
    )


def test_keystore_alias_not_found_lists_the_aliases(pki: ServerPki, tmp_path: Path) -> None:
    store = write_p12(tmp_path / "s.p12", pki, b"serveralias", b"storepw", [])
    with pytest.raises(TlsConfigError) as caught:
        load_server_credentials(
            keystore_settings(store, mqtt_ssl_key_store_password="storepw", mqtt_ssl_key_alias="x")
        )
    assert str(caught.value) == (
        f"mqtt_ssl_key_alias 'x' not found in keystore {store}; keys found: 'serveralias'"
    )


def test_keystore_wrong_password(pki: ServerPki, tmp_path: Path) -> None:
    store = write_p12(tmp_path / "s.p12", pki, b"a", b"storepw", [])
    with pytest.raises(TlsConfigError, match="wrong mqtt_ssl_key_store_password") as caught:
        load_server_credentials(keystore_settings(store, mqtt_ssl_key_store_password="nope"))
    assert str(store) in str(caught.value)


def test_keystore_chain_includes_intermediates(pki: ServerPki, tmp_path: Path) -> None:
    root = issue("Root", ca=True)
    intermediate = issue("Intermediate", ca=True, issuer=root)
    leaf = issue("localhost", issuer=intermediate, eku=None)
    store = tmp_path / "chain.p12"
    store.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"leaf",
            signing_key(leaf.key),
            leaf.cert,
            [root.cert, intermediate.cert],
            BestAvailableEncryption(b"pw"),
        )
    )
    _, chain = load_server_credentials(keystore_settings(store, mqtt_ssl_key_store_password="pw"))
    assert chain == [leaf.cert, intermediate.cert]


def test_legacy_java_keystore_is_explained(tmp_path: Path) -> None:
    store = tmp_path / "old.jks"
    store.write_bytes(b"\xfe\xed\xfe\xed" + b"\x00" * 60)
    with pytest.raises(TlsConfigError, match="keytool -importkeystore"):
        load_server_credentials(keystore_settings(store, mqtt_ssl_key_store_password="x"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("keytool") is None, reason="needs Java's keytool")
def test_keystore_with_several_keys_selects_by_alias(tmp_path: Path) -> None:
    store = tmp_path / "multi.jks"  # PKCS#12 inside, as keytool writes since Java 9
    for alias, algorithm in (("first", ["EC", "-groupname", "secp256r1"]), ("second", ["RSA"])):
        subprocess.run(
            ["keytool", "-genkeypair", "-keystore", str(store), "-storetype", "pkcs12",
             "-storepass", "storepw", "-alias", alias, "-keyalg", *algorithm,
             "-dname", f"CN={alias}", "-validity", "2"],
            check=True, capture_output=True,
        )  # fmt: skip
    key, chain = load_server_credentials(
        keystore_settings(store, mqtt_ssl_key_store_password="storepw", mqtt_ssl_key_alias="second")
    )
    assert key.public_key() == chain[0].public_key()
    assert chain[0].subject.rfc4514_string() == "CN=second"
    with pytest.raises(TlsConfigError, match="holds 2 keys \\('first', 'second'\\)"):
        load_server_credentials(keystore_settings(store, mqtt_ssl_key_store_password="storepw"))
