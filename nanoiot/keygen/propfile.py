"""Reading ``keygen.properties`` without bash: the ``KEY=VALUE`` syntax and its expansion.

The reference scripts ``source`` the file, so it is, strictly, a bash script. The wrappers
still do that (their values arrive through the environment, see ``read_properties``); this
module reads the same file for ``nanoiot keygen --props FILE`` run directly, and, in both
cases, checks that every key is one we know, so a misspelt key is an error, not a silent
default.

Accepted, per line: blank lines, ``# comments``, and ``[export ]KEY=VALUE`` where VALUE is
``"double quoted"`` (``$NAME``, ``${NAME}`` and ``\\"``-style escapes), ``'single quoted'``
(literal) or unquoted. Two deliberate differences from bash, both documented:

- an unquoted value may contain spaces (``CITY=San Francisco``, as the product text writes
  it; bash would run a command called ``Francisco``);
- the only command substitution run here is ``$(hostname)``; any other ``$(...)`` or
  backtick needs the wrapper scripts, which let bash run it.

No I/O besides reading the one file; nothing here imports the CLI.
"""

import difflib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nanoiot.errors import KeygenError

_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_REFERENCE = re.compile(r"\$\(\s*hostname\s*\)|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_]\w*)")
_DOUBLE_ESCAPES = re.compile(r"\\([\\\"$`])")


@dataclass(frozen=True)
class RawProperty:
    """One ``KEY=VALUE`` line as written (before any expansion)."""

    key: str
    value: str
    quote: str  # '"', "'" or "" (unquoted)
    line: int


def parse_lines(text: str, source: str) -> list[RawProperty]:
    """Split the file into assignments; anything else is an error naming ``source:line``."""
    found: list[RawProperty] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ASSIGNMENT.match(stripped)
        if match is None:
            raise KeygenError(f"{source}:{number}: expected KEY=VALUE, found '{stripped[:40]}'")
        key, rest = match.groups()
        value, quote = _unquote(rest, f"{source}:{number}: {key}")
        found.append(RawProperty(key, value, quote, number))
    return found


def _unquote(rest: str, where: str) -> tuple[str, str]:
    rest = rest.strip()
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        end = _closing_quote(rest, quote)
        if end < 0:
            raise KeygenError(f"{where}: missing closing {quote}")
        tail = rest[end + 1 :].strip()
        if tail and not tail.startswith("#"):
            raise KeygenError(f"{where}: unexpected text after the closing quote: '{tail[:20]}'")
        return rest[1:end], quote
    # bash ends an unquoted word at " #": keep that, so commented lines read the same.
    value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
    return value, ""


def _closing_quote(text: str, quote: str) -> int:
    index = 1
    while index < len(text):
        char = text[index]
        if quote == '"' and char == "\\":
            index += 2
            continue
        if char == quote:
            return index
        index += 1
    return -1


def expand(raw: RawProperty, known: Mapping[str, str], source: str) -> str:
    """The value bash would assign, for the subset of bash this module accepts."""
    if raw.quote == "'":
        return raw.value
    where = f"{source}:{raw.line}: {raw.key}"
    if "`" in raw.value or re.search(r"\$\((?!\s*hostname\s*\))", raw.value):
        raise KeygenError(
            f"{where}: only $(hostname) is expanded here; other command substitutions need "
            "server.keygen.sh/client.keygen.sh, or write the value itself"
        )

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name is None:
            return socket.gethostname()
        if name in known:
            return known[name]
        if name in os.environ:
            return os.environ[name]
        raise KeygenError(f"{where}: ${name} is not set (define it on an earlier line)")

    value = _REFERENCE.sub(substitute, raw.value)
    return _DOUBLE_ESCAPES.sub(r"\1", value) if raw.quote == '"' else value


def read_properties(
    path: Path, allowed: frozenset[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The file's values, keyed by property name; unknown keys are refused.

    With ``environ`` (the wrappers pass the values bash assigned when it sourced the file),
    a key's value is taken from there; otherwise it is expanded here.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeygenError(f"cannot read properties file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeygenError(f"properties file {path} is not UTF-8 text") from None
    values: dict[str, str] = {}
    for raw in parse_lines(text, str(path)):
        if raw.key not in allowed:
            raise KeygenError(
                f"{path}:{raw.line}: unknown property '{raw.key}'{_suggest(raw.key, allowed)}"
            )
        if environ is not None and raw.key in environ:
            values[raw.key] = environ[raw.key]
        else:
            values[raw.key] = expand(raw, values, str(path))
    return values


def _suggest(key: str, allowed: frozenset[str]) -> str:
    close = difflib.get_close_matches(key.upper(), sorted(allowed), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
