"""Password hashing for MQTT basic credentials: argon2id (RFC 9106) via argon2-cffi.

Hashing and verifying take tens of milliseconds of CPU on purpose, so the async wrappers run
them in a worker thread: the event loop keeps serving other connections meanwhile.
"""

import asyncio
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified when the user name is unknown, so "no such user" takes as long as "wrong
    password" and response times do not reveal which user names exist. Made on first use, not
    at import: every CLI run and broker start would pay for it."""
    return _HASHER.hash("nanoiot-dummy-password")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; a missing or malformed hash never matches."""
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)
