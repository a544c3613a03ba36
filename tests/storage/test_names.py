"""Device-name validation: what MQTT can carry as a client id and a topic level."""

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanoiot.errors import ValidationError
from storage.names import MAX_NAME_LENGTH, validate_device_name, validate_text


@pytest.mark.parametrize(
    "name", ["sensor-1", "a", "Kitchen Sensor", "ÜberGerät_7", "x" * MAX_NAME_LENGTH, "a$b"]
)
def test_accepts_names_mqtt_can_carry(name: str) -> None:
    assert validate_device_name(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_NAME_LENGTH + 1), "at most 128"),
        ("room/1", "must not contain '/'"),
        ("room+1", "must not contain '+'"),
        ("room#1", "must not contain '#'"),
        ("bad\x00name", "control characters"),
        ("bad\nname", "control characters"),
        ("bad\x7fname", "control characters"),
        (" leading", "start or end with whitespace"),
        ("trailing\u00a0", "start or end with whitespace"),
        ("$SYS", "must not start with '$'"),
        ("bad\ud800", "lone surrogate"),
        # Trojan-Source spoofing: text that lists as something it is not.
        ("invoice\u202egpj.exe", "invisible formatting characters (U+202E"),
        ("a\u2066b\u2069", "U+2066"),
        ("a\u200eb", "U+200E"),
        ("a\u200fb", "U+200F"),
        ("a\u061cb", "U+061C"),
        ("sensor\u200b-1", "U+200B"),
        ("\ufeffsensor", "U+FEFF"),
        ("Ge\u0301rard", "normal form NFC"),
    ],
)
def test_refuses_each_rule_with_a_message_naming_it(name: str, rule: str) -> None:
    with pytest.raises(ValidationError, match="invalid device name") as caught:
        validate_device_name(name)
    assert rule in str(caught.value)
    assert "\n" not in str(caught.value)


def _acceptable(name: str) -> bool:
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and not any(c in name for c in "/+#")
        and not any(unicodedata.category(c) in ("Cc", "Cs", "Cf") for c in name)
        and unicodedata.is_normalized("NFC", name)
        and not name[0].isspace()
        and not name[-1].isspace()
        and not name.startswith("$")
    )


@given(st.text(max_size=MAX_NAME_LENGTH + 8))
def test_accepts_exactly_the_names_the_rules_allow(name: str) -> None:
    if _acceptable(name):
        assert validate_device_name(name) == name
        name.encode("utf-8")  # an accepted name is always valid MQTT UTF-8
    else:
        with pytest.raises(ValidationError, match="invalid device name"):
            validate_device_name(name)


def test_validate_text_rules() -> None:
    assert validate_text("token", "abc") == "abc"
    for bad in ("", " x", "x\n", "y" * 256):
        with pytest.raises(ValidationError, match="token"):
            validate_text("token", bad)


@pytest.mark.parametrize("value", ["fleet\u202eac", "a\u2068b", "zero\u200bwidth", "x\u00ady"])
def test_validate_text_refuses_invisible_formatting_characters(value: str) -> None:
    with pytest.raises(ValidationError, match="CA name must not contain invisible formatting"):
        validate_text("CA name", value, name=True)


def test_a_name_must_be_nfc_other_text_need_not() -> None:
    decomposed = "Ge\u0301rard"
    with pytest.raises(ValidationError, match="CA name must be in Unicode normal form NFC"):
        validate_text("CA name", decomposed, name=True)
    assert validate_text("user name", decomposed) == decomposed
    with pytest.raises(ValidationError, match="'Ge\\\\u0301rard'"):  # shown escaped
        validate_device_name(decomposed)
