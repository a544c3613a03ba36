"""The admin HTTP server's settings (REST API, web UI, ``/healthz``, ``/metrics``): where it
listens, its token, and a bound on each thing a client can make it hold (``admin.limits``).
The bounds' defaults serve a few operators, their scripts and browsers."""

from pydantic import Field, SecretStr, field_validator

from nanoiot.settings.common import SettingsGroup, addresses_or_networks

_KIB = 1024
_MIB = 1024 * 1024


class AdminHttpSettings(SettingsGroup):
    http_bind_address: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    admin_token: SecretStr | None = None
    # Largest request body the admin HTTP server reads, in bytes (a CRL upload has its own
    # bound; the bulk import is streamed and has no bound on its whole body).
    http_max_body_bytes: int = Field(_MIB, ge=_KIB, le=1024 * _MIB)
    # Addresses or CIDR networks of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto
    # the admin HTTP server believes. Empty: none, every client is its TCP peer's address.
    http_trusted_proxies: list[str] = Field(default_factory=list)
    # Largest CRL taken, in bytes, over the REST API and in the web UI (16 MiB: some 400,000
    # revoked certificates); the request that carries it may be 64 KiB larger (other fields).
    http_max_crl_bytes: int = Field(16 * _MIB, ge=_KIB, le=1024 * _MIB)
    # Bytes of a web UI form's text field kept, and of a certificate file uploaded in it: a
    # certificate chain fits many times over. A larger certificate is refused.
    http_max_form_field_bytes: int = Field(64 * _KIB, ge=_KIB, le=16 * _MIB)
    # Bytes of a request's target, and of its header fields together: past it 414 or 431 and
    # the connection closed. Browsers send under 8 KiB, cookies included.
    http_max_head_bytes: int = Field(16 * _KIB, ge=_KIB, le=_MIB)
    # Connections open at once, and from one address (an IPv6 /64 counts as one); past the
    # second a new one is closed at once, past the first it takes the place of the longest
    # idle (admin.http_guard). The loopback address is bound by neither, a trusted proxy by
    # the first only. A browser opens up to 6 connections to a server.
    http_max_connections: int = Field(128, ge=1, le=100_000)
    http_max_connections_per_address: int = Field(16, ge=1, le=100_000)
    # Addresses whose bad admin tokens are counted apart (some 200 bytes each); past it new
    # addresses share one count.
    http_max_failure_addresses: int = Field(100_000, ge=1, le=10_000_000)
    # Web UI sign-ins kept at once; past it the oldest is signed out.
    http_max_web_sessions: int = Field(1000, ge=1, le=1_000_000)
    # Bulk import over HTTP: the longest row (one line, or a quoted CSV record), in bytes, and
    # the bytes of answer held for a client that sends its whole file before it reads (httpx
    # and requests do); past the first the import ends, past the second it waits for the
    # client to read.
    http_import_max_row_bytes: int = Field(256 * _KIB, ge=_KIB, le=64 * _MIB)
    http_import_max_unsent_bytes: int = Field(64 * _MIB, ge=64 * _KIB, le=4096 * _MIB)

    @field_validator("http_trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, entries: list[str]) -> list[str]:
        return addresses_or_networks(entries)
