"""The admin HTTP server's settings (REST API, web UI, ``/healthz``, ``/metrics``): where it
listens, its token, and every bound on what a client can make it hold."""

from pydantic import Field, SecretStr, field_validator

from nanoiot.settings.common import SettingsGroup, addresses_or_networks


class AdminHttpSettings(SettingsGroup):
    http_bind_address: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    admin_token: SecretStr | None = None
    # Largest request body the admin HTTP server reads, in bytes (a CRL upload may be 16 MiB;
    # the bulk import is streamed and has no bound on its whole body).
    http_max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # Addresses or CIDR networks of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto
    # the admin HTTP server believes. Empty: none, every client is its TCP peer's address.
    http_trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("http_trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, entries: list[str]) -> list[str]:
        return addresses_or_networks(entries)
