"""The broker's own key and certificate chain from a PKCS#12 keystore, by alias.

A ``.p12``, or a ``.jks`` written by Java 9+ keytool (PKCS#12 inside). cryptography's
``load_pkcs12`` returns only the first private key of a store, but a keytool store can hold
several, each named by its alias (the PKCS#9 friendlyName attribute of its bag, RFC 7292
§4.2). To choose one, we walk the store's unencrypted outer layers (RFC 7292 §4: PFX,
AuthenticatedSafe, SafeContents) to list the key bags and their aliases, and let cryptography
decrypt the chosen EncryptedPrivateKeyInfo (RFC 5958 §3). Certificates, which keytool and
OpenSSL put in an encrypted SafeContents, come from ``load_pkcs12``. A store our walker cannot
read (BER indefinite lengths, keys inside encrypted content) falls back to that first key.

Errors are ``TlsConfigError`` with a one-line message naming the setting and the file. No I/O
beyond reading the named file.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key, pkcs12

from nanoiot.errors import TlsConfigError

__all__ = ["ServerKey", "load_keystore", "read_file"]

# The private key types OpenSSL can sign a TLS handshake with.
ServerKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)

_SETTING = "mqtt_ssl_key_store"
# Java's own formats, which only Java reads (magic numbers of sun.security.provider.JavaKeyStore).
_JAVA_MAGICS = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")
_MAX_CHAIN = 10

# DER contents of the object identifiers we look for (RFC 7292 Appendix D, PKCS#9).
_OID_DATA = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1 id-data
_OID_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0101")  # ...1.12.10.1.1 keyBag
_OID_SHROUDED_KEY_BAG = bytes.fromhex("2a864886f70d010c0a0102")  # ...1.12.10.1.2
_OID_FRIENDLY_NAME = bytes.fromhex("2a864886f70d010914")  # 1.2.840.113549.1.9.20
_SEQUENCE, _SET, _OCTET_STRING, _OID, _BMP_STRING, _EXPLICIT_0 = 0x30, 0x31, 0x04, 0x06, 0x1E, 0xA0


def read_file(path: Path, setting: str) -> bytes:
    """The bytes of ``path``, or a ``TlsConfigError`` naming ``setting`` and the file."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{setting} {path}: cannot read the file ({exc.strerror})") from None


@dataclass(frozen=True)
class _KeyBag:
    alias: str | None
    der: bytes  # PrivateKeyInfo, or EncryptedPrivateKeyInfo when ``encrypted``
    encrypted: bool


def load_keystore(
    path: Path,
    *,
    store_password: bytes | None,
    alias: str | None,
    key_password: bytes | None,
) -> tuple[ServerKey, list[x509.Certificate]]:
    """The key named ``alias`` (or the only key) and its chain, leaf first.

    The key is decrypted with ``key_password``, falling back to ``store_password``: Java 9+
    keytool ignores a separate key password for PKCS#12 and uses the store's.
    """
    data = read_file(path, _SETTING)
    if data[:4] in _JAVA_MAGICS:
        raise TlsConfigError(
            f"{_SETTING} {path}: a legacy Java (JKS/JCEKS) keystore; convert it with "
            f"'keytool -importkeystore -srckeystore {path} -destkeystore server.p12 "
            "-deststoretype pkcs12'"
        )
    try:
        bundle = pkcs12.load_pkcs12(data, store_password)
    except ValueError:
        raise TlsConfigError(
            f"{_SETTING} {path}: cannot open the keystore: wrong mqtt_ssl_key_store_password, "
            "a key protected by another password, or not a PKCS#12 file"
        ) from None
    stored = [c for c in (bundle.cert, *bundle.additional_certs) if c is not None]
    try:
        bags = _key_bags(data)
    except (IndexError, _UnparsedError):
        bags = []
    first_key = bundle.key
    if not bags:
        if first_key is None:
            raise TlsConfigError(f"{_SETTING} {path}: the keystore holds no private key")
        name = bundle.cert.friendly_name if bundle.cert else None
        bags = [_KeyBag(name.decode("utf-8", "replace") if name else None, b"", False)]

    bag = _choose(bags, alias, path)
    key = _decrypt(bag, [key_password, store_password])
    if key is None and bag is bags[0] and first_key is not None:
        # cryptography opened the store's first key with the store password already.
        key = first_key
    if key is None:
        raise TlsConfigError(
            f"{_SETTING} {path}: mqtt_ssl_key_password (falling back to "
            f"mqtt_ssl_key_store_password) does not decrypt key '{bag.alias}'"
        )
    if not isinstance(key, ServerKey):
        raise TlsConfigError(
            f"{_SETTING} {path}: key '{bag.alias}' is a {type(key).__name__}, which cannot sign "
            "for TLS"
        )
    return key, _chain(key, bag.alias, stored, path)


def _choose(bags: list[_KeyBag], alias: str | None, path: Path) -> _KeyBag:
    found = ", ".join(f"'{b.alias}'" if b.alias is not None else "(no alias)" for b in bags)
    if alias is None:
        if len(bags) == 1:
            return bags[0]
        raise TlsConfigError(
            f"{_SETTING} {path} holds {len(bags)} keys ({found}): set mqtt_ssl_key_alias"
        )
    # Java compares keystore aliases without regard to case.
    for bag in bags:
        if bag.alias == alias:
            return bag
    for bag in bags:
        if bag.alias is not None and bag.alias.casefold() == alias.casefold():
            return bag
    raise TlsConfigError(
        f"mqtt_ssl_key_alias '{alias}' not found in keystore {path}; keys found: {found}"
    )


def _decrypt(bag: _KeyBag, passwords: list[bytes | None]) -> object | None:
    if not bag.der:
        return None
    if not bag.encrypted:
        return load_der_private_key(bag.der, None)
    for password in dict.fromkeys(p for p in passwords if p is not None) or [b""]:
        try:
            return load_der_private_key(bag.der, password)
        except (ValueError, TypeError):
            continue
    return None


def _chain(
    key: ServerKey, alias: str | None, stored: list[pkcs12.PKCS12Certificate], path: Path
) -> list[x509.Certificate]:
    public = key.public_key()
    matching = [c for c in stored if c.certificate.public_key() == public]
    if not matching:
        raise TlsConfigError(f"{_SETTING} {path}: no certificate for key '{alias}'")
    matching.sort(key=lambda c: c.friendly_name != (alias or "").encode())
    chain = [matching[0].certificate]
    others = [c.certificate for c in stored]
    # Follow issuers through the store; the self-signed root is left out, as RFC 8446 §4.4.2
    # allows (the client must already have it).
    while len(chain) < _MAX_CHAIN and chain[-1].issuer != chain[-1].subject:
        issuer = next((c for c in others if c.subject == chain[-1].issuer and c not in chain), None)
        if issuer is None or issuer.issuer == issuer.subject:
            break
        chain.append(issuer)
    return chain


class _UnparsedError(Exception):
    """The store uses an encoding our small DER walker does not read."""


def _key_bags(data: bytes) -> list[_KeyBag]:
    """Key bags in the store's unencrypted SafeContents, with their aliases (RFC 7292 §4)."""
    _, pfx_start, pfx_end = _expect(data, 0, _SEQUENCE)
    _version, auth_safe = list(_children(data, pfx_start, pfx_end))[:2]
    safes = _data_content(data, auth_safe)
    if safes is None:
        raise _UnparsedError  # a public-key-protected store (RFC 7292 §3.1): not ours
    _, start, end = _expect(data, safes[0], _SEQUENCE)
    bags: list[_KeyBag] = []
    for content_info in _children(data, start, end):
        contents = _data_content(data, content_info)
        if contents is None:
            continue  # encryptedData: certificates, as keytool and OpenSSL write them
        _, bag_start, bag_end = _expect(data, contents[0], _SEQUENCE)
        for bag in _children(data, bag_start, bag_end):
            parts = list(_children(data, bag[2], bag[3]))
            kind = data[parts[0][2] : parts[0][3]]
            if kind not in (_OID_KEY_BAG, _OID_SHROUDED_KEY_BAG):
                continue
            _, value_start, _ = _expect(data, parts[1][1], _EXPLICIT_0)
            _, _, value_end = _tlv(data, value_start)
            alias = _friendly_name(data, parts[2]) if len(parts) > 2 else None
            bags.append(_KeyBag(alias, data[value_start:value_end], kind == _OID_SHROUDED_KEY_BAG))
    return bags


def _friendly_name(data: bytes, attributes: tuple[int, int, int, int]) -> str | None:
    for attribute in _children(data, attributes[2], attributes[3]):
        oid, values = list(_children(data, attribute[2], attribute[3]))[:2]
        if data[oid[2] : oid[3]] == _OID_FRIENDLY_NAME:
            for value in _children(data, values[2], values[3]):
                if value[0] == _BMP_STRING:
                    return data[value[2] : value[3]].decode("utf-16-be", "replace")
    return None


def _data_content(data: bytes, content_info: tuple[int, int, int, int]) -> tuple[int, int] | None:
    """(start, end) of an id-data ContentInfo's octets; None for other content types."""
    oid, content = list(_children(data, content_info[2], content_info[3]))[:2]
    if data[oid[2] : oid[3]] != _OID_DATA:
        return None
    _, inner, _ = _expect(data, content[1], _EXPLICIT_0)
    _, start, end = _expect(data, inner, _OCTET_STRING)
    return start, end


def _expect(data: bytes, pos: int, tag: int) -> tuple[int, int, int]:
    found, start, end = _tlv(data, pos)
    if found != tag:
        raise _UnparsedError
    return found, start, end


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if tag & 0x1F == 0x1F:
        raise _UnparsedError  # multi-byte tags do not occur in PKCS#12
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise _UnparsedError  # 0: BER indefinite length
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise _UnparsedError
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, element start, value start, value end) of each element in ``data[start:end]``."""
    pos = start
    while pos < end:
        tag, value_start, value_end = _tlv(data, pos)
        yield tag, pos, value_start, value_end
        pos = value_end
