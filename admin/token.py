"""Where the admin token comes from: ``NANOIOT_ADMIN_TOKEN``, or one generated on first start.

The generated token is written to ``<data dir>/admin-token`` with mode 0600 (created that way,
never widened afterwards) and reused on later starts; the caller prints it once, when made.

A token someone chose (the setting, or a file written by hand) is refused unless it looks like
the output of a random generator: long enough is not enough, as "aaaaaaaaaaaaaaaa" and
"0123456789abcdef" are 16 characters an attacker guesses first. ``estimated_bits`` is a
deliberately crude guesser's view (no dictionary): a character the previous one predicts
(the same, or its neighbour: runs, "abab", "1234") adds nothing; any other adds the bits of
the smaller of its character classes' alphabet and the token's distinct characters.
"""

import itertools
import math
import os
import secrets
import string
from pathlib import Path
from typing import Final

from nanoiot.errors import ConfigError
from nanoiot.settings import Settings

TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
_MIN_LENGTH: Final = 16
# What a guesser must try, as bits: 2^64 guesses stay out of reach of an online attack and,
# with the admin API's per-address limit, of any offline one we can think of.
MIN_BITS: Final = 64
_HOW: Final = "use a random one, for example the output of: openssl rand -hex 32"
_CLASSES: Final = (string.ascii_lowercase, string.ascii_uppercase, string.digits)
_OTHER_PRINTABLE: Final = 33  # ASCII punctuation and space


def token_path(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILE


def estimated_bits(token: str) -> float:
    """Bits a guesser needs for ``token`` (see the module docstring): 0 for ''."""
    if not token:
        return 0.0
    alphabet = sum(len(c) for c in _CLASSES if any(ch in c for ch in token))
    if any(not any(ch in c for c in _CLASSES) for ch in token):
        alphabet += _OTHER_PRINTABLE
    per_char = math.log2(max(2, min(alphabet, len(set(token)))))
    unpredicted = 1 + sum(abs(ord(b) - ord(a)) > 1 for a, b in itertools.pairwise(token))
    return unpredicted * per_char


def weakness(token: str) -> str | None:
    """Why ``token`` is too weak to guard the admin API, or None."""
    if len(token) < _MIN_LENGTH:
        return f"is {len(token)} characters; use at least {_MIN_LENGTH}"
    bits = estimated_bits(token)
    if bits < MIN_BITS:
        return f"is guessable (about {bits:.0f} bits, at least {MIN_BITS} needed)"
    return None


def admin_token(settings: Settings) -> tuple[str, bool]:
    """The token, and whether it was generated just now (so the caller prints it once)."""
    if settings.admin_token is not None:
        token = settings.admin_token.get_secret_value()
        problem = weakness(token)
        if problem is not None:
            raise ConfigError(f"admin_token (NANOIOT_ADMIN_TOKEN) {problem}: {_HOW}")
        return token, False
    path = token_path(settings)
    if path.exists():
        token = path.read_text(encoding="ascii").strip()
        problem = weakness(token)
        if problem is not None:
            raise ConfigError(f"the admin token in {path} {problem}: delete it to make a new one")
        return token, False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds secrets
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token + "\n")
    return token, True
