"""Where the admin token comes from: ``NANOIOT_ADMIN_TOKEN``, or one generated on first start.

The generated token is written to ``<data dir>/admin-token`` with mode 0600 (created that way,
never widened afterwards) and reused on later starts; the caller prints it once, when made.
"""

import os
import secrets
from pathlib import Path

from nanoiot.errors import ConfigError
from nanoiot.settings import Settings

TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
_MIN_LENGTH = 16


def token_path(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILE


def admin_token(settings: Settings) -> tuple[str, bool]:
    """The token, and whether it was generated just now (so the caller prints it once)."""
    if settings.admin_token is not None:
        token = settings.admin_token.get_secret_value()
        if len(token) < _MIN_LENGTH:
            raise ConfigError(
                f"admin_token (NANOIOT_ADMIN_TOKEN) is {len(token)} characters; use at least "
                f"{_MIN_LENGTH}, for example the output of: openssl rand -hex 32"
            )
        return token, False
    path = token_path(settings)
    if path.exists():
        token = path.read_text(encoding="ascii").strip()
        if len(token) < _MIN_LENGTH:
            raise ConfigError(f"{path} holds no usable admin token; delete it to make a new one")
        return token, False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds secrets
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token + "\n")
    return token, True
