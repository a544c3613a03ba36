"""Which device names the store accepts: the ones MQTT can carry as a client id and topic level.

A device name ends up as the MQTT client id and inside topic names (``devices/<name>/...``), so
it must survive both. Pure: no I/O, no SQLAlchemy.
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
    if name[0].isspace() or name[-1].isspace():
        return "it must not start or end with whitespace"
    # MQTT 3.1.1 §4.7.2: topics starting with '$' are the server's ($SYS/...).
    if name.startswith("$"):
        return "it must not start with '$' (reserved for server topics such as $SYS)"
    return None


def _show(name: str) -> str:
    shown = name if len(name) <= 40 else name[:40] + "..."
    return ascii(shown) if not shown.isprintable() else f"'{shown}'"


def validate_text(what: str, value: str, *, max_length: int = 255) -> str:
    """A token, user name, client id or CA name: non-empty, bounded, no control characters."""
    if not value:
        raise ValidationError(f"{what} must not be empty")
    if len(value) > max_length:
        raise ValidationError(f"{what} is {len(value)} characters long, at most {max_length}")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValidationError(f"{what} must not contain control characters")
    if value[0].isspace() or value[-1].isspace():
        raise ValidationError(f"{what} must not start or end with whitespace")
    return value
