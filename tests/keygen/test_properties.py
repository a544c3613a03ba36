"""Validation of the keygen properties: defaults, extras, and an error naming each bad key."""

import ipaddress
import socket
from pathlib import Path

import pytest
from cryptography import x509

from nanoiot.errors import KeygenError
from nanoiot.keygen.properties import (
    PROPERTY_KEYS,
    KeyAlgorithm,
    build_properties,
    load_properties,
    parse_san,
)

REPO = Path(__file__).resolve().parents[2]


# Two deliberate changes: CITY quoted for bash, and the server key password equal to the
# keystore's (PKCS#12 has one password; a different one only earns a warning on every run).
CHANGED = {
    "CITY=San Francisco": 'CITY="San Francisco"',
    "SERVER_KEY_PASSWORD=server_key_password": "SERVER_KEY_PASSWORD=server_ks_password",
}


def test_the_shipped_file_has_every_product_text_key_with_its_value() -> None:
    text = (REPO / "conf" / "keygen.properties").read_text()
    for line in (REPO / "tests/keygen/data/product-text.properties").read_text().splitlines():
        if line:
            shipped = CHANGED.get(line, line)
            assert f"\n{shipped}\n" in text, f"missing or changed: {line}"


def test_shipped_file_loads_with_documented_defaults() -> None:
    props = load_properties(REPO / "conf" / "keygen.properties")
    host = socket.gethostname()
    assert props.domain_suffix == host
    assert props.client_cn == f"{host}-device"
    assert props.key_algorithm is KeyAlgorithm.EC
    assert props.key_size == 256
    assert props.validity_days == 3650
    assert x509.DNSName("localhost") in props.subject_alternative_names
    assert x509.IPAddress(ipaddress.ip_address("127.0.0.1")) in props.subject_alternative_names
    assert props.city == "San Francisco"


def test_every_key_is_known_and_documented() -> None:
    docs = (REPO / "docs" / "keygen.md").read_text()
    shipped = (REPO / "conf" / "keygen.properties").read_text()
    for key in PROPERTY_KEYS:
        assert f"`{key}`" in docs, f"{key} is not documented"
        assert f"\n{key}=" in shipped, f"{key} is not in the shipped file"


def test_a_reference_file_without_the_extras_gets_defaults() -> None:
    props = build_properties({"DOMAIN_SUFFIX": "broker.example"}, "f")
    assert props.client_cn == "broker.example-device"
    assert x509.DNSName("broker.example") in props.subject_alternative_names


def test_rsa_sizes_and_default() -> None:
    assert build_properties({"KEY_ALGORITHM": "rsa"}, "f").key_size == 2048
    assert build_properties({"KEY_ALGORITHM": "RSA", "KEY_SIZE": "4096"}, "f").key_size == 4096
    with pytest.raises(KeygenError, match=r"KEY_SIZE '256' is not valid for RSA \(2048, 3072"):
        build_properties({"KEY_ALGORITHM": "RSA", "KEY_SIZE": "256"}, "f")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"KEY_ALGORITHM": "ed25519"}, "KEY_ALGORITHM 'ed25519' is not supported"),
        ({"DOMAIN_SUFFIX": " "}, "DOMAIN_SUFFIX is empty; it becomes the certificate's CN"),
        ({"CLIENT_CN": "x" * 65}, "CLIENT_CN is longer than the 64 characters"),
        ({"SERVER_KEY_PASSWORD": "12345"}, "SERVER_KEY_PASSWORD must be at least 6"),
        ({"CLIENT_KEY_ALIAS": ""}, "CLIENT_KEY_ALIAS is empty"),
        ({"CLIENT_FILE_PREFIX": "../x"}, "CLIENT_FILE_PREFIX '../x' must be a plain file name"),
        ({"VALIDITY_DAYS": "0"}, "VALIDITY_DAYS '0' must be a whole number"),
    ],
)
def test_bad_values_name_their_key(values: dict[str, str], message: str) -> None:
    with pytest.raises(KeygenError, match=message.replace("(", r"\(")):
        build_properties(values, "keygen.properties")


def test_san_entries_typed_and_untyped() -> None:
    names = parse_san(
        "dns:Broker.Example, ip:10.0.0.1, ::1, gateway, dns:192.0.2.7, , gateway", "f"
    )
    assert names == (
        x509.DNSName("broker.example"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("gateway"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),  # RFC 6125: IPs match iPAddress only
    )


@pytest.mark.parametrize("entry", ["dns:bad name", "dns:-x.example", "ip:300.1.1.1", "a..b"])
def test_bad_san_entries_are_refused(entry: str) -> None:
    with pytest.raises(KeygenError, match="SUBJECT_ALTERNATIVE_NAMES"):
        parse_san(entry, "f")


def test_wildcard_and_underscore_host_names_are_accepted() -> None:
    assert parse_san("*.iot.example,dns:my_pc", "f") == (
        x509.DNSName("*.iot.example"),
        x509.DNSName("my_pc"),
    )


def test_long_hostile_san_is_refused_quickly() -> None:
    with pytest.raises(KeygenError):
        parse_san("a" * 5000 + "!", "f")
