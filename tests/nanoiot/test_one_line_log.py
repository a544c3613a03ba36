"""``OneLineFormatter``: a message is one line whatever it holds; a traceback keeps its lines."""

import logging
import sys

from nanoiot.text import OneLineFormatter


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = sys.exc_info() if exc else None
    return logging.LogRecord("broker", logging.INFO, __file__, 1, message, args, info)


def test_control_characters_in_a_message_are_escaped_not_cut() -> None:
    formatter = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    long_id = "a" * 300 + "\n"
    shown = formatter.format(_record("session %s expired", f"d/{long_id}\x1b[2J\r"))
    assert shown == f"INFO broker: session d/{'a' * 300}\\n\\x1b[2J\\r expired"


def test_a_plain_message_is_written_as_it_is() -> None:
    formatter = OneLineFormatter("%(message)s")
    assert formatter.format(_record("device 'é' (client id '%s')", "x y")) == (
        "device 'é' (client id 'x y')"
    )


def test_a_traceback_keeps_its_lines() -> None:
    formatter = OneLineFormatter("%(message)s")
    try:
        raise ValueError("broken")
    except ValueError:
        shown = formatter.format(_record("admitting %s failed", "x\ny", exc=True))
    first, *rest = shown.splitlines()
    assert first == "admitting x\\ny failed"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: broken"
