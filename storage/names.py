"""Which device names the store accepts: the ones MQTT can carry as a client id and topic level.

A device name ends up as the MQTT client id and inside topic names (``devices/<name>/...``), so
it must survive both. Every text an operator stores is also shown back (API, web UI, CLI), so
it must read as what it is: ``hidden_character_problem`` is the one rule for that, used by the
device name, the other names and tokens, and the device label. Pure: no I/O, no SQLAlchemy.
"""

import unicodedata

from nanoiot.errors import ValidationError

MAX_NAME_LENGTH = 128
# MQTT 3.1.1 §4.7.1: '/' separates topic levels, '+' and '#' are wildcards.
_TOPIC_SPECIALS = ("/", "+", "#")


def validate_device_name(name: str) -> str:
    """``name`` unchanged if MQTT can carry it; else ValidationError naming the broken rule."""
    rule = _broken_rule(name)
    if rule is not None:
        raise ValidationError(f"invalid device name {_show(name)}: {rule}")
    return name


def _broken_rule(name: str) -> str | None:
    if not name:
        return "it must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long, at most {MAX_NAME_LENGTH} are allowed"
    for special in _TOPIC_SPECIALS:
        if special in name:
            return f"it must not contain '{special}' (an MQTT topic separator or wildcard)"
    categories = {unicodedata.category(char) for char in name}
    # MQTT 3.1.1 §1.5.3: U+0000 is forbidden and control characters should not be used.
    if "Cc" in categories:
        return "it must not contain control characters (NUL, tab, newline, ...)"
    # A lone surrogate cannot be encoded as the UTF-8 MQTT requires (§1.5.3 again).
    if "Cs" in categories:
        return "it must be valid Unicode (it contains a lone surrogate)"
    hidden = hidden_character_problem(name)
    if hidden is not None:
        return f"it must not contain {hidden}"
    if not unicodedata.is_normalized("NFC", name):
        return _NOT_NFC
    if name[0].isspace() or name[-1].isspace():
        return "it must not start or end with whitespace"
    # MQTT 3.1.1 §4.7.2: topics starting with '$' are the server's ($SYS/...).
    if name.startswith("$"):
        return "it must not start with '$' (reserved for server topics such as $SYS)"
    return None


# A name is looked up byte for byte, so 'é' typed as one code point (NFC) and as 'e' with a
# combining accent (NFD) would be two devices or two CAs that every list shows alike.
_NOT_NFC = "it must be in Unicode normal form NFC (an accent typed as a separate combining mark)"


def hidden_character_problem(value: str) -> str | None:
    """What in ``value`` would not show as itself, or None.

    Unicode's format characters (category Cf) draw nothing or reorder what follows: the
    bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E/F, U+061C) make a list show
    'gpj.exe' for 'exe.jpg' (the "Trojan Source" trick, CVE-2021-42574), and zero-width ones
    (U+200B-U+200D, U+2060, U+FEFF) make two different names look the same. Text is refused
    when stored, never rewritten: rows stored before this rule stay as they are.
    """
    for char in value:
        if unicodedata.category(char) == "Cf":
            return (
                f"invisible formatting characters (U+{ord(char):04X}: bidirectional and "
                "zero-width controls make text display as something else)"
            )
    return None


def _show(name: str) -> str:
    shown = name if len(name) <= 40 else name[:40] + "..."
    plain = shown.isprintable() and unicodedata.is_normalized("NFC", shown)
    return f"'{shown}'" if plain else ascii(shown)


def validate_text(what: str, value: str, *, max_length: int = 255, name: bool = False) -> str:
    """A token, user name, client id or CA name: non-empty, bounded, no control or invisible
    characters; a ``name`` (one an operator picks a row by) in NFC as well."""
    if not value:
        raise ValidationError(f"{what} must not be empty")
    if len(value) > max_length:
        raise ValidationError(f"{what} is {len(value)} characters long, at most {max_length}")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValidationError(f"{what} must not contain control characters")
    hidden = hidden_character_problem(value)
    if hidden is not None:
        raise ValidationError(f"{what} must not contain {hidden}")
    if name and not unicodedata.is_normalized("NFC", value):
        raise ValidationError(f"{what} {_NOT_NFC[3:]}")
    if value[0].isspace() or value[-1].isspace():
        raise ValidationError(f"{what} must not start or end with whitespace")
    return value
