"""The MQTT listener's settings: TLS (the reference system's ``MQTT_SSL_*`` names and our
policy beyond them) and the load balancers in front of it."""

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from nanoiot.settings.common import SettingsGroup, addresses_or_networks


class CredentialsType(StrEnum):
    """Where the broker's own TLS key and certificate come from."""

    PEM = "PEM"
    KEYSTORE = "KEYSTORE"


class TlsSettings(SettingsGroup):
    # --- MQTT over TLS (names as the reference system's MQTT_SSL_* variables) ---
    mqtt_ssl_bind_address: str = "0.0.0.0"  # noqa: S104 - devices connect from the network
    mqtt_ssl_bind_port: int = Field(8883, ge=0, le=65535)
    mqtt_ssl_protocol: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    mqtt_ssl_credentials_type: CredentialsType = CredentialsType.PEM
    mqtt_ssl_pem_cert: Path | None = None
    mqtt_ssl_pem_key: Path | None = None
    mqtt_ssl_pem_key_password: SecretStr | None = None
    mqtt_ssl_key_store: Path | None = None
    mqtt_ssl_key_store_type: Literal["PKCS12", "JKS"] = "PKCS12"
    mqtt_ssl_key_store_password: SecretStr | None = None
    mqtt_ssl_key_alias: str | None = None
    mqtt_ssl_key_password: SecretStr | None = None
    mqtt_ssl_skip_validity_check_for_client_cert: bool = False

    # --- TLS policy beyond the reference names (environment: NANOIOT_<NAME>) ---
    require_client_certificate: bool = False
    # Smallest device keys, at registration and in the handshake (auth.keys); Ed25519 and
    # Ed448 are always accepted, DSA never.
    min_rsa_key_bits: int = Field(2048, ge=1024, le=16384)
    min_ec_key_bits: int = Field(256, ge=192, le=521)
    # Pin a registered certificate whole, not only its public key (auth.pinning): a device
    # must then present the very certificate registered, so its dates count.
    pin_whole_certificate: bool = False
    tls_allow_legacy_protocols: bool = False
    tls_handshake_timeout: float = Field(10.0, gt=0, le=300)
    # Certificates of a client's chain (leaf included) that the handshake verifies: each
    # signature above the leaf costs the broker CPU on its event loop, so a longer chain fails
    # the handshake (broker.tls).
    max_client_chain_certificates: int = Field(5, ge=1, le=32)
    # Bytes of those certificates (DER, leaf included): a connection keeps what its client sent
    # for as long as it lasts, to decide it again on a revocation (broker.tls). OpenSSL's own
    # bound on the whole Certificate message is 100 KiB.
    max_client_chain_bytes: int = Field(16 * 1024, ge=2048, le=100 * 1024)
    # Seconds between checks of the server certificate and key files for a change to reload
    # (0: only on SIGHUP).
    tls_reload_interval: float = Field(5.0, ge=0, le=3600)

    # --- Load balancers (environment: NANOIOT_<NAME>) ---
    # Addresses or CIDR networks of TCP load balancers that send a PROXY protocol v2 header
    # (broker.proxy_protocol); from them it is required, from anyone else refused. Empty: off.
    proxy_protocol_trusted: list[str] = Field(default_factory=list)

    @field_validator("proxy_protocol_trusted")
    @classmethod
    def _load_balancers(cls, entries: list[str]) -> list[str]:
        return addresses_or_networks(entries)
