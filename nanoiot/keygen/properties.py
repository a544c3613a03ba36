"""The keygen settings: every key of ``keygen.properties``, validated into one frozen value.

The reference keys keep their names and meaning; the extras (``SUBJECT_ALTERNATIVE_NAMES``,
``KEY_ALGORITHM``, ``KEY_SIZE``, ``VALIDITY_DAYS``, ``CLIENT_CN``) have defaults, so a file
written for the reference scripts still works. A key missing from the file takes the
default shown in ``docs/keygen.md``; a value we cannot use is an error naming the key.
"""

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509

from nanoiot.errors import KeygenError
from nanoiot.keygen.propfile import read_properties

DEFAULT_VALIDITY_DAYS = 3650
# keytool refuses shorter store passwords ("must be at least 6 characters"); so do we, so a
# keystore we write can also be re-opened and changed with keytool.
MIN_PASSWORD_LENGTH = 6
# RFC 5280 Appendix A: ub-common-name, ub-organization-name, ... (upper bounds in characters).
_MAX_LENGTH = {"common name": 64, "organization": 64, "organizational unit": 64}
_MAX_LENGTH_PLACE = 128
# One LDH label (RFC 1123 §2.1); "_" too, because some machines' $(hostname) has one and
# refusing the default SAN there would help nobody.
_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class KeyAlgorithm(StrEnum):
    EC = "EC"
    RSA = "RSA"


KEY_SIZES = {KeyAlgorithm.EC: (256, 384), KeyAlgorithm.RSA: (2048, 3072, 4096)}


@dataclass(frozen=True)
class KeygenProperties:
    """What both scripts read. Field names follow the property keys in lower case."""

    domain_suffix: str
    organizational_unit: str = "NanoIoT"
    organization: str = "NanoIoT"
    city: str = "San Francisco"
    state_or_province: str = "CA"
    two_letter_country_code: str = "US"
    server_keystore_password: str = "server_ks_password"  # noqa: S105 - product-text default
    server_key_password: str = "server_key_password"  # noqa: S105 - product-text default
    server_key_alias: str = "serveralias"
    server_file_prefix: str = "mqttserver"
    server_keystore_dir: str = "/etc/NanoIoT/conf/"
    client_keystore_password: str = "password"  # noqa: S105 - product-text default
    client_key_password: str = "password"  # noqa: S105 - product-text default
    client_key_alias: str = "clientalias"
    client_file_prefix: str = "mqttclient"
    subject_alternative_names: tuple[x509.GeneralName, ...] = ()
    key_algorithm: KeyAlgorithm = KeyAlgorithm.EC
    key_size: int = 256
    validity_days: int = DEFAULT_VALIDITY_DAYS
    client_cn: str = ""


# The reference's keys whose values are used as written.
_TEXT_KEYS = (
    "ORGANIZATIONAL_UNIT",
    "ORGANIZATION",
    "CITY",
    "STATE_OR_PROVINCE",
    "TWO_LETTER_COUNTRY_CODE",
    "SERVER_KEYSTORE_PASSWORD",
    "SERVER_KEY_PASSWORD",
    "SERVER_KEY_ALIAS",
    "SERVER_FILE_PREFIX",
    "SERVER_KEYSTORE_DIR",
    "CLIENT_KEYSTORE_PASSWORD",
    "CLIENT_KEY_PASSWORD",
    "CLIENT_KEY_ALIAS",
    "CLIENT_FILE_PREFIX",
)
PROPERTY_KEYS = frozenset(name.upper() for name in KeygenProperties.__dataclass_fields__)


def load_properties(
    path: Path, environ: Mapping[str, str] | None = None, *, client_cn: str | None = None
) -> KeygenProperties:
    """Read and validate ``path``; ``environ`` carries the values bash assigned (wrappers)."""
    values = read_properties(path, PROPERTY_KEYS, environ)
    if client_cn is not None:
        values["CLIENT_CN"] = client_cn
    return build_properties(values, str(path))


def build_properties(values: Mapping[str, str], source: str) -> KeygenProperties:
    """Validate raw string values (missing keys take their defaults)."""
    domain = values.get("DOMAIN_SUFFIX", socket.gethostname())
    # Checked first: the default SAN is made from it, and "empty CN" is the clearer error.
    _check_name("DOMAIN_SUFFIX", domain, "common name", source, required=True)
    algorithm = _algorithm(values.get("KEY_ALGORITHM", "EC"), source)
    default_san = f"dns:{domain},dns:localhost,ip:127.0.0.1"
    # Typed Any: the dataclass checks nothing, and these all are str fields.
    text: dict[str, Any] = {key.lower(): values[key] for key in _TEXT_KEYS if key in values}
    props = KeygenProperties(
        domain_suffix=domain,
        key_algorithm=algorithm,
        key_size=_key_size(algorithm, values.get("KEY_SIZE", ""), source),
        validity_days=_validity(values.get("VALIDITY_DAYS", ""), source),
        subject_alternative_names=parse_san(
            values.get("SUBJECT_ALTERNATIVE_NAMES", default_san), source
        ),
        client_cn=values.get("CLIENT_CN", f"{domain}-device"),
        **text,
    )
    _check(props, source)
    return props


def _algorithm(value: str, source: str) -> KeyAlgorithm:
    try:
        return KeyAlgorithm(value.strip().upper() or "EC")
    except ValueError:
        raise KeygenError(
            f"{source}: KEY_ALGORITHM '{value}' is not supported (use EC or RSA)"
        ) from None


def _key_size(algorithm: KeyAlgorithm, value: str, source: str) -> int:
    allowed = KEY_SIZES[algorithm]
    if not value.strip():
        return allowed[0]
    if not value.strip().isdigit() or int(value) not in allowed:
        sizes = ", ".join(map(str, allowed))
        raise KeygenError(f"{source}: KEY_SIZE '{value}' is not valid for {algorithm} ({sizes})")
    return int(value)


def _validity(value: str, source: str) -> int:
    if not value.strip():
        return DEFAULT_VALIDITY_DAYS
    if not value.strip().isdigit() or not 1 <= int(value) <= 36500:
        raise KeygenError(f"{source}: VALIDITY_DAYS '{value}' must be a whole number of days")
    return int(value)


def parse_san(value: str, source: str) -> tuple[x509.GeneralName, ...]:
    """``dns:NAME`` / ``ip:ADDRESS`` entries, comma separated (keytool's ``SAN=`` syntax).

    An entry without a type is an IP address if it parses as one, else a DNS name; a
    ``dns:`` entry that is an IP address becomes an IP entry, because RFC 6125 §6.2.1
    clients only match IP addresses against iPAddress entries (RFC 5280 §4.2.1.6).
    """
    names: list[x509.GeneralName] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        kind, _, name = entry.partition(":") if _typed(entry) else ("", "", entry)
        kind = kind.lower()
        address = _ip_or_none(name)
        if kind == "ip" and address is None:
            raise KeygenError(f"{source}: SUBJECT_ALTERNATIVE_NAMES '{entry}': not an IP address")
        if address is not None:
            names.append(x509.IPAddress(address))
        elif _is_dns_name(name):
            names.append(x509.DNSName(name.lower()))
        else:
            raise KeygenError(f"{source}: SUBJECT_ALTERNATIVE_NAMES '{entry}': not a DNS name")
    return tuple(dict.fromkeys(names))


def _is_dns_name(name: str) -> bool:
    """Labels joined by dots, an optional leading "*." wildcard, at most 253 characters."""
    labels = name.removeprefix("*.").removesuffix(".").split(".")
    return len(name) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels)


def _typed(entry: str) -> bool:
    return entry.split(":", 1)[0].lower() in ("dns", "ip")


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _check(props: KeygenProperties, source: str) -> None:
    _check_name("CLIENT_CN", props.client_cn, "common name", source, required=True)
    _check_name("ORGANIZATIONAL_UNIT", props.organizational_unit, "organizational unit", source)
    _check_name("ORGANIZATION", props.organization, "organization", source)
    _check_name("CITY", props.city, "place", source)
    _check_name("STATE_OR_PROVINCE", props.state_or_province, "place", source)
    country = props.two_letter_country_code
    if country and not re.fullmatch(r"[A-Za-z]{2}", country):
        raise KeygenError(f"{source}: TWO_LETTER_COUNTRY_CODE '{country}' must be two letters")
    for key in ("SERVER_KEYSTORE_PASSWORD", "SERVER_KEY_PASSWORD"):
        _check_password(key, getattr(props, key.lower()), source)
    for key in ("CLIENT_KEYSTORE_PASSWORD", "CLIENT_KEY_PASSWORD"):
        _check_password(key, getattr(props, key.lower()), source)
    for key in ("SERVER_KEY_ALIAS", "CLIENT_KEY_ALIAS"):
        if not getattr(props, key.lower()).strip():
            raise KeygenError(f"{source}: {key} is empty")
    for key in ("SERVER_FILE_PREFIX", "CLIENT_FILE_PREFIX"):
        check_prefix(key, getattr(props, key.lower()), source)


def _check_name(key: str, value: str, kind: str, source: str, *, required: bool = False) -> None:
    if required and not value.strip():
        raise KeygenError(f"{source}: {key} is empty; it becomes the certificate's CN")
    limit = _MAX_LENGTH.get(kind, _MAX_LENGTH_PLACE)
    if len(value) > limit:
        raise KeygenError(f"{source}: {key} is longer than the {limit} characters X.509 allows")


def _check_password(key: str, value: str, source: str) -> None:
    if len(value) < MIN_PASSWORD_LENGTH:
        raise KeygenError(
            f"{source}: {key} must be at least {MIN_PASSWORD_LENGTH} characters (keytool's rule)"
        )


def check_prefix(key: str, value: str, source: str) -> None:
    """A file prefix names files in the output directory, so it must be a plain name."""
    if not value.strip() or "/" in value or value in (".", ".."):
        raise KeygenError(f"{source}: {key} '{value}' must be a plain file name")
