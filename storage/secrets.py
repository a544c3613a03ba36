"""Secrets at rest: how access tokens are stored, and who may read the data directory.

Access tokens are bearer secrets of 120 random bits or more, so the store keeps only a keyed
SHA-256 of each (HMAC, RFC 2104): enough to find a token's credential with one indexed
lookup, while a copy of the database (a backup, a stray file) gives neither the tokens nor,
without the key, a way to test guesses offline. A slow password hash (argon2) is for
low-entropy secrets and would cost every token connect milliseconds of CPU for nothing.

The key is a secret of its own: 32 random bytes generated into ``<data dir>/token-hash.key``
(mode 0600) on first use, or ``token_hash_key`` (``NANOIOT_TOKEN_HASH_KEY``) for nodes that
share a database but no data directory. Losing it invalidates every stored token, so a data
directory that has lost its key while the database holds token hashes is refused rather than
given a new key.

The data directory holds the database, the admin token and this key: it is created 0700 and
the SQLite files 0600 (SQLite gives its -wal and -shm files the database file's mode);
``permission_warnings`` names anything looser at start-up.
"""

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from nanoiot.errors import ConfigError

KEY_FILE = "token-hash.key"
_KEY_BYTES = 32


def token_digest(key: bytes, token: str) -> str:
    """What the store keeps of an access token: HMAC-SHA256 under ``key``, lowercase hex."""
    return hmac.new(key, token.encode("utf-8"), hashlib.sha256).hexdigest()


def parse_key(text: str, where: str) -> bytes:
    """A key written as hex (64 characters, as generated; ``openssl rand -hex 32`` makes one)."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) < _KEY_BYTES:
        raise ConfigError(
            f"{where} is not a token hash key: give {2 * _KEY_BYTES} hexadecimal characters "
            "(openssl rand -hex 32)"
        )
    return key


def load_or_create_key(directory: Path) -> tuple[bytes, bool]:
    """The key in ``directory``, and whether it was generated just now."""
    path = directory / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return parse_key(path.read_text(encoding="ascii"), str(path)), False
    key = secrets.token_bytes(_KEY_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key.hex() + "\n")
    return key, True


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite takes an empty file as a
    new database, and keeps the mode for its -wal and -shm files)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return


def permission_warnings(data_dir: Path, files: list[Path]) -> list[str]:
    """One line for the data directory or each file that others than its owner may use."""
    warnings = []
    for path, wanted in ((data_dir, 0o700), *((f, 0o600) for f in files)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            warnings.append(
                f"{path} is mode {mode:04o}: other users may read secrets in it "
                f"(chmod {wanted:o} {path})"
            )
    return warnings
