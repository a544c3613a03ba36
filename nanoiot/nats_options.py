"""The rules of the cluster's NATS connection settings (``nanoiot.settings``), which reach
across fields: where NATS is (``nats_url``) and how the broker authenticates to it and checks
it. Each is only meaningful with ``nats_url`` set, and the ways to authenticate exclude one
another; a combination NATS would reject, or silently not use, is an error at start-up
naming the setting, not a failed connection later.
"""

from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["check_nats_option", "check_nats_url", "check_nats_urls"]


def check_nats_url(url: str) -> None:
    """ValueError naming the URL unless it is nats:// or tls:// with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise ValueError(f"'{_shown(url)}' is not a NATS URL (nats://host:4222 or tls://host:4222)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"'{_shown(url)}' has a bad port") from None


def _shown(url: str) -> str:
    """``url`` without what comes before its host's ``@``: NATS takes ``user:password@`` and
    ``token@`` there, and a message naming the URL must not carry them."""
    start = url.find("://") + 3 if "://" in url else 0
    _userinfo, at, rest = url[start:].rpartition("@")
    return f"{url[:start]}***@{rest}" if at else url


def check_nats_urls(urls: str | None) -> str | None:
    """``nats_url``: one NATS URL or several, comma-separated (the servers of a cluster)."""
    if urls is not None:
        for one in urls.split(","):
            check_nats_url(one.strip())
    return urls


def check_nats_option(name: str, value: object, data: Mapping[str, object]) -> object:
    """ValueError unless the NATS setting ``name`` may be ``value`` beside the settings
    validated before it (``data``)."""
    if value is not None and not data.get("nats_url"):
        raise ValueError("is set but nats_url is not (it only applies to a cluster)")
    if name == "nats_password" and (value is None) != (data.get("nats_user") is None):
        raise ValueError("nats_user and nats_password go together: set both or neither")
    if name == "nats_token":
        ways = [data.get("nats_creds_file"), data.get("nats_user"), value]
        if sum(way is not None for way in ways) > 1:
            raise ValueError(
                "set one way to authenticate to NATS: nats_creds_file, "
                "nats_user/nats_password or nats_token"
            )
    if name == "nats_tls_key" and (value is None) != (data.get("nats_tls_cert") is None):
        raise ValueError("nats_tls_cert and nats_tls_key go together: set both or neither")
    return value
