"""The TLS a node speaks to NATS, from its settings: the CA that signed the NATS servers'
certificates and a client certificate when they ask for one. A file a setting names that is
missing or unusable stops the node at start-up with one line naming the setting."""

import os
import ssl

from nanoiot.errors import ConfigError
from nanoiot.settings import Settings

__all__ = ["nats_tls_context", "readable"]


def nats_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context towards NATS (``nats_tls_*``), or None for plain ``nats://`` without
    TLS settings; ``ConfigError`` naming the setting whose file is missing or unusable."""
    assert settings.nats_url is not None
    wants_tls = any(one.strip().startswith("tls://") for one in settings.nats_url.split(","))
    if not (wants_tls or settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    ca = settings.nats_tls_ca
    try:
        context = ssl.create_default_context(cafile=readable(ca, "nats_tls_ca") if ca else None)
    except ssl.SSLError as exc:
        raise ConfigError(f"nats_tls_ca {ca}: no usable CA certificate ({exc.reason})") from None
    cert, key = settings.nats_tls_cert, settings.nats_tls_key
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(readable(cert, "nats_tls_cert"), readable(key, "nats_tls_key"))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"nats_tls_cert {cert} / nats_tls_key {key}: unusable ({exc.reason})"
            ) from None
    return context


def readable(path: os.PathLike[str], setting: str) -> str:
    """``path`` as text, once it is known to be readable; else ``ConfigError`` naming the
    setting that names it (at start-up, not at the first connection)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: {exc.strerror}") from None
    return os.fspath(path)
