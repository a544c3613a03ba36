"""Text for log lines and output: client-chosen text made safe, and listening addresses.

A client id, user name or topic can be 64 KiB long and hold any character: written as it is,
each refusal wrote the whole of it to the log, and a newline in it forged a log line of the
attacker's choosing. ``printable`` keeps the start of it, with control characters (and every
other non-printable character) escaped as in a Python literal, and says how much was cut.
"""

import logging
from typing import Final

SHOWN: Final = 128  # characters of one client-chosen string kept in a log line or event


def printable(text: str, limit: int = SHOWN) -> str:
    """``text`` cut to ``limit`` characters and escaped: one line, whatever it held."""
    kept = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    if len(text) > limit:
        kept += f"...(+{len(text) - limit} characters)"
    return kept


class OneLineFormatter(logging.Formatter):
    """Each record's message on one line, whatever client-chosen text reached it unescaped
    (a session's key holds its client id): control characters are escaped as ``printable``
    does, never cut. A traceback after the message keeps its lines, which are the broker's."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if not message.isprintable():
            record.message = printable(message, len(message))
        return super().formatMessage(record)


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL writes it: an IPv6 address in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
