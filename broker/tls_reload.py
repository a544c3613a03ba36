"""Reloading the broker's own certificate and key without dropping connected devices.

A reload builds a new server context with ``broker.tls.build_server_context`` (the same checks
as at start-up: the files parse, the key matches the certificate, the keystore opens) and, if
that succeeds, makes it the listener's context: new connections use it, while every live one
keeps the context it was made with (each ``OpenSSL.SSL.Connection`` holds its own reference),
so nobody is disconnected. If it fails, the error is logged as one line and the old
certificate stays in use.

Reloads happen on SIGHUP (``nanoiot serve`` installs the handler) and when the files change:
the files (PEM certificate and key, or the keystore) are polled every
``tls_reload_interval`` seconds, and a change is acted on once the files have stayed the same
for one more interval, so that a certificate and key written one after the other are read
together. A change that was refused is not retried until the files change again.

No networking here: the transport is only told which context to use next.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL

from auth.fingerprint import spki_sha256
from broker.tls import build_server_context
from nanoiot.errors import TlsConfigError
from nanoiot.settings import CredentialsType, Settings
from nanoiot.tasks import cancel_and_wait

__all__ = ["ServerCertificateReloader", "credential_files"]

log = logging.getLogger(__name__)

# One file's identity and content version: inode (a file replaced by rename), mtime, size.
_Stamp = tuple[int, int, int] | None


def credential_files(settings: Settings) -> tuple[Path, ...]:
    """The files the server credentials are read from (those that are set)."""
    paths: tuple[Path | None, ...]
    if settings.mqtt_ssl_credentials_type is CredentialsType.KEYSTORE:
        paths = (settings.mqtt_ssl_key_store,)
    else:
        paths = (settings.mqtt_ssl_pem_cert, settings.mqtt_ssl_pem_key)
    return tuple(dict.fromkeys(path for path in paths if path is not None))


def _stamps(paths: tuple[Path, ...]) -> tuple[_Stamp, ...]:
    stamps: list[_Stamp] = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


@dataclass(frozen=True)
class _Loaded:
    context: SSL.Context
    certificate: x509.Certificate


def _load(settings: Settings) -> _Loaded:
    context = build_server_context(settings)
    # The certificate the context will present, read back from it (not from the files again:
    # they may have changed since).
    certificate = SSL.Connection(context, None).get_certificate(as_cryptography=True)
    assert certificate is not None  # build_server_context installed one
    return _Loaded(context, certificate)


class ServerCertificateReloader:
    """Swaps ``set_context``'s target to a freshly built context on request or file change."""

    def __init__(
        self, settings: Settings, set_context: Callable[[SSL.Context], None], *, interval: float
    ) -> None:
        self._settings = settings
        self._set_context = set_context
        self._interval = interval
        self._paths = credential_files(settings)
        self._seen = _stamps(self._paths)
        self._requested = asyncio.Event()
        self._attempted = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.attempts = 0  # reloads tried (the tests wait on this)
        self.reloads = 0  # reloads that took effect

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tls-reload")

    def request(self) -> None:
        """Reload as soon as possible (SIGHUP), whether the files changed or not."""
        self._requested.set()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def reload(self, trigger: str) -> bool:
        """Build a context from the configured files and use it for new connections; False
        (and the old one kept) when the files cannot be used."""
        stamps = _stamps(self._paths)
        try:
            loaded = await asyncio.to_thread(_load, self._settings)
        except TlsConfigError as exc:
            log.error(
                "server certificate not reloaded (%s): %s; still serving the previous one",
                trigger,
                exc,
            )
            ok = False
        else:
            self._set_context(loaded.context)
            self.reloads += 1
            ok = True
            cert = loaded.certificate
            log.info(
                "server certificate reloaded (%s): %s, valid until %s, key sha256:%s; "
                "connected clients keep their sessions",
                trigger,
                cert.subject.rfc4514_string(),
                cert.not_valid_after_utc.date().isoformat(),
                spki_sha256(cert.public_key()),
            )
        self._seen = stamps
        async with self._attempted:
            self.attempts += 1
            self._attempted.notify_all()
        return ok

    async def wait_for_attempts(self, count: int) -> None:
        """Until ``count`` reloads have been tried (a test's bounded wait wraps this)."""
        async with self._attempted:
            await self._attempted.wait_for(lambda: self.attempts >= count)

    async def _run(self) -> None:
        pending: tuple[_Stamp, ...] | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval or None):
                    await self._requested.wait()
            if self._requested.is_set():
                self._requested.clear()
                pending = None
                await self.reload("SIGHUP")
                continue
            current = _stamps(self._paths)
            if current == self._seen:
                pending = None
            elif current != pending:
                pending = current  # changed: wait one interval for the writer to finish
            else:
                pending = None
                await self.reload("the files changed")
