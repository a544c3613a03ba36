"""PKCS#12 keystores that Java (keytool 9+) and ``openssl pkcs12`` (OpenSSL 3) both read.

``cryptography`` writes the key entry (``serialize_key_and_certificates``) and, separately, a
Java trust store (``serialize_java_truststore``: certificate bags carrying Oracle's
"trusted key usage" attribute, OID 2.16.840.1.113894.746875.1.1, without which Java does not
list a certificate as a ``trustedCertEntry``). It cannot put both in one file, and the
reference's client keystore holds both: the device key (``clientalias``) and the broker's
certificate (``serveralias``). So we splice them: a PFX (RFC 7292 §4) is a list of
independently encrypted ContentInfos plus one MAC over that list; we concatenate the two
lists and recompute the MAC (RFC 7292 Appendix B). Both stores are encrypted with the same
password, and ``cryptography`` re-reads the result (checking the MAC) before it is returned.

Passwords: one per file. PKCS#12 as read by Java 9+ effectively has one password (keytool
ignores a different ``-keypass`` for PKCS12); a key encrypted with another password fails in
Java clients with "Given final block not properly padded". So the key is encrypted with the
store password; the caller warns when the properties ask for a different key password.
"""

import hashlib
import hmac
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import (
    KeySerializationEncryption,
    PrivateFormat,
    pkcs12,
)

from nanoiot.errors import KeygenError
from nanoiot.keygen.certs import PrivateKey

# Java 17's own PKCS12 defaults: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, 10,000 rounds,
# SHA-256 MAC. OpenSSL 3 reads the same; the legacy RC2/3DES scheme is off by default there.
_KDF_ROUNDS = 10_000
_SEQUENCE, _INTEGER, _OCTET_STRING, _CONTEXT_0 = 0x30, 0x02, 0x04, 0xA0
_OID_DATA = bytes.fromhex("06092a864886f70d010701")  # 1.2.840.113549.1.7.1 (pkcs7-data)
_OID_SHA256 = bytes.fromhex("0609608648016503040201")  # 2.16.840.1.101.3.4.2.1
_MAC_KEY_ID = 3  # RFC 7292 Appendix B.3: ID 3 derives the MAC key


def _encryption(password: str) -> KeySerializationEncryption:
    return (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode())
    )


def build_keystore(
    *,
    alias: str,
    key: PrivateKey,
    chain: Sequence[x509.Certificate],
    password: str,
    trusted: Sequence[tuple[str, x509.Certificate]] = (),
) -> bytes:
    """A PKCS#12 file: a key entry ``alias`` (``chain[0]`` is its certificate, the rest its
    issuers) and one ``trustedCertEntry`` per ``(alias, certificate)`` in ``trusted``."""
    store = pkcs12.serialize_key_and_certificates(
        alias.encode(), key, chain[0], list(chain[1:]) or None, _encryption(password)
    )
    if trusted:
        bags = [pkcs12.PKCS12Certificate(cert, name.encode()) for name, cert in trusted]
        trust = pkcs12.serialize_java_truststore(bags, _encryption(password))
        store = _splice(store, trust, password)
    _check_readable(store, password, len(chain) - 1 + len(trusted))
    return store


def _check_readable(store: bytes, password: str, extra_certs: int) -> None:
    """Re-read what we wrote: a wrong MAC or structure must never reach a device."""
    try:
        loaded = pkcs12.load_pkcs12(store, password.encode())
    except ValueError as exc:
        raise KeygenError(f"internal error: the keystore written does not re-read: {exc}") from None
    if loaded.key is None or len(loaded.additional_certs) != extra_certs:
        raise KeygenError("internal error: the keystore written lacks an entry")


def _splice(keystore: bytes, truststore: bytes, password: str) -> bytes:
    """One PFX holding the ContentInfos of both, with the MAC recomputed (RFC 7292 §4)."""
    items, mac_algorithm, salt, iterations = _pfx_parts(keystore)
    trust_items, *_ = _pfx_parts(truststore)
    auth_safe = _tlv(_SEQUENCE, b"".join(items + trust_items))
    if mac_algorithm != _OID_SHA256:
        raise KeygenError("internal error: unexpected PKCS#12 MAC algorithm")
    mac_key = pkcs12_kdf(_bmp_password(password), salt, _MAC_KEY_ID, iterations, 32)
    mac = hmac.new(mac_key, auth_safe, hashlib.sha256).digest()
    digest_info = _tlv(
        _SEQUENCE, _tlv(_SEQUENCE, _OID_SHA256 + b"\x05\x00") + _tlv(_OCTET_STRING, mac)
    )
    mac_data = _tlv(
        _SEQUENCE, digest_info + _tlv(_OCTET_STRING, salt) + _tlv(_INTEGER, _int(iterations))
    )
    content_info = _tlv(_SEQUENCE, _OID_DATA + _tlv(_CONTEXT_0, _tlv(_OCTET_STRING, auth_safe)))
    return _tlv(_SEQUENCE, _tlv(_INTEGER, b"\x03") + content_info + mac_data)


def _pfx_parts(pfx: bytes) -> tuple[list[bytes], bytes, bytes, int]:
    """(ContentInfos of the AuthenticatedSafe, MAC digest OID TLV, MAC salt, MAC iterations)."""
    _version, auth_safe_info, mac_data = _children(_content(pfx, _SEQUENCE))
    oid, explicit = _children(_content(auth_safe_info, _SEQUENCE))
    if oid != _OID_DATA:
        raise KeygenError("internal error: PKCS#12 authSafe is not pkcs7-data")
    auth_safe = _content(_content(explicit, _CONTEXT_0), _OCTET_STRING)
    items = _children(_content(auth_safe, _SEQUENCE))
    digest_info, salt, iterations = _children(_content(mac_data, _SEQUENCE))
    algorithm = _children(_content(_children(_content(digest_info, _SEQUENCE))[0], _SEQUENCE))[0]
    rounds = int.from_bytes(_content(iterations, _INTEGER), "big")
    return items, algorithm, _content(salt, _OCTET_STRING), rounds


def pkcs12_kdf(password: bytes, salt: bytes, key_id: int, iterations: int, size: int) -> bytes:
    """RFC 7292 Appendix B.2 with SHA-256 (u = 32, v = 64 bytes)."""
    u, v = 32, 64
    block = _fill(salt, v) + _fill(password, v)
    diversifier = bytes([key_id]) * v
    out = b""
    while len(out) < size:
        digest = hashlib.sha256(diversifier + block).digest()
        for _ in range(iterations - 1):
            digest = hashlib.sha256(digest).digest()
        out += digest
        b = int.from_bytes((digest * (v // u + 1))[:v], "big")
        block = b"".join(
            ((int.from_bytes(block[i : i + v], "big") + b + 1) % (1 << (8 * v))).to_bytes(v, "big")
            for i in range(0, len(block), v)
        )
    return out[:size]


def _fill(data: bytes, v: int) -> bytes:
    """Copies of ``data`` up to the next multiple of ``v`` bytes (empty stays empty)."""
    if not data:
        return b""
    size = v * -(-len(data) // v)
    return (data * (size // len(data) + 1))[:size]


def _bmp_password(password: str) -> bytes:
    """RFC 7292 Appendix B.1: the MAC password is a BMPString with a trailing NUL."""
    return password.encode("utf-16-be") + b"\x00\x00"


# --- the little DER this needs (definite lengths, one-byte tags) ---


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _int(value: int) -> bytes:
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def _header(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of content, end of element) of the element at ``offset``."""
    if offset + 2 > len(data):
        raise KeygenError("internal error: truncated DER in PKCS#12")
    tag, first = data[offset], data[offset + 1]
    if first < 0x80:
        return tag, offset + 2, offset + 2 + first
    count = first & 0x7F
    if count == 0 or count > 4:
        raise KeygenError("internal error: unsupported DER length in PKCS#12")
    start = offset + 2 + count
    return tag, start, start + int.from_bytes(data[offset + 2 : start], "big")


def _content(element: bytes, tag: int) -> bytes:
    found, start, end = _header(element, 0)
    if found != tag or end != len(element):
        raise KeygenError(f"internal error: expected DER tag {tag:#x}, found {found:#x}")
    return element[start:end]


def _children(content: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(content):
        _tag, _start, end = _header(content, offset)
        items.append(content[offset:end])
        offset = end
    return items
