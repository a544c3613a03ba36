"""Where the admin token comes from: ``NANOIOT_ADMIN_TOKEN``, or one generated on first start.

The generated token is written to ``<data dir>/admin-token`` with mode 0600 (created that way,
never widened afterwards) and reused on later starts; the caller prints it once, when made.

A token someone chose (the setting, or a file written by hand) is refused unless it looks like
the output of a random generator: long enough is not enough, as "aaaaaaaaaaaaaaaa" and
"0123456789abcdef" are 16 characters an attacker guesses first. ``estimated_bits``
(``admin.token_bits``) is a guesser's view without a dictionary: the token's length under
the cheapest of a few codes (a common alphabet, runs and sequences, keyboard walks,
character classes), which no random token of 128 bits falls under ``MIN_BITS`` with.
"""

import os
import secrets
from pathlib import Path
from typing import Final

from admin.token_bits import estimated_bits
from nanoiot.errors import ConfigError
from nanoiot.settings import Settings

__all__ = ["MIN_BITS", "TOKEN_FILE", "admin_token", "estimated_bits", "token_path", "weakness"]

TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
_MIN_LENGTH: Final = 16
# What a guesser must try, as bits: 2^64 guesses stay out of reach of an online attack and,
# with the admin API's per-address limit, of any offline one we can think of; the estimate
# knows no words ("Password1234567!" is 72 bits to it), so 32 more. A token of 128 random
# bits (openssl rand -hex 16, -base64 16) falls under 96 with a probability below 2^-32.
MIN_BITS: Final = 96
_HOW: Final = "use a random one, for example the output of: openssl rand -hex 32"


def token_path(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILE


def weakness(token: str) -> str | None:
    """Why ``token`` is too weak to guard the admin API, or None."""
    if len(token) < _MIN_LENGTH:
        return f"is {len(token)} characters; use at least {_MIN_LENGTH}"
    bits = estimated_bits(token, enough=MIN_BITS)
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
