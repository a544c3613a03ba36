"""The one typed settings model, and where its values come from.

Sources, later ones winning: the model's defaults, the YAML file (the nearest
``conf/nanoiot.yaml`` at or above the working directory, or the file named by ``--config`` /
``NANOIOT_CONFIG``; relative paths in it are relative to its folder: ``nanoiot.locations``),
then environment variables. TLS settings keep the reference system's environment names
(``MQTT_SSL_*``); ours are ``NANOIOT_<KEY>``. An unknown key in the file, or an unknown
``NANOIOT_*`` variable, is an error naming the key and where it came from: a misspelt setting
must not be silently ignored.
"""

import ipaddress
import json
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError

from nanoiot.dburl import normalise_database_url
from nanoiot.errors import ConfigError
from nanoiot.locations import SETTINGS_FILE, find_settings_file, relative_to_file, user_data_dir
from nanoiot.nats_options import check_nats_option, check_nats_urls

DEFAULT_CONFIG_PATH = SETTINGS_FILE
CONFIG_ENV = "NANOIOT_CONFIG"
_OUR_PREFIX = "NANOIOT_"
_REFERENCE_PREFIX = "mqtt_ssl_"
# NATS subject tokens and KV keys: no dots, spaces or wildcards.
_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_MAX_WORKERS = 256


class CredentialsType(StrEnum):
    """Where the broker's own TLS key and certificate come from."""

    PEM = "PEM"
    KEYSTORE = "KEYSTORE"


class Settings(BaseModel):
    """Every setting NanoIoT reads. ``conf/nanoiot.yaml`` documents each one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    # Seconds between checks of the server certificate and key files for a change to reload
    # (0: only on SIGHUP).
    tls_reload_interval: float = Field(5.0, ge=0, le=3600)

    # --- MQTT sessions and topics ---
    strict_client_id: bool = False
    # MQTT 5: the keep-alive (seconds) imposed on a client that asks for a longer one or for
    # none, announced as Server Keep Alive; 0: the client's own.
    max_keep_alive: int = Field(0, ge=0, le=65535)
    # MQTT 5: refusals and server DISCONNECTs carry a Reason String saying why, in the words
    # of the auth log (never a secret).
    reason_strings: bool = True
    # Largest MQTT packet a client may send, in bytes (MQTT 3.1.1 §2.2.3 allows 256 MB).
    max_packet_size: int = Field(256 * 1024, ge=1024, le=268_435_460)
    # Bytes waiting for one subscriber that does not read before QoS 0 messages to it are
    # dropped (QoS 1/2 wait in its session, behind max_inflight_messages).
    max_outgoing_buffer: int = Field(1024 * 1024, ge=16 * 1024)
    # Extra ACL rules ({who, action, topic}); from the environment as a JSON list.
    acl_rules: list[dict[str, str]] = Field(default_factory=list)

    # --- MQTT limits: what one client may make the broker hold (each hit is counted) ---
    # Connections one broker process holds open, TLS handshakes included; past it a new one
    # is closed at once (kept under the open-file limit: broker.connection_limit).
    max_connections: int = Field(100_000, ge=1, le=10_000_000)
    # Of those, connections from one client host (an IPv4 address, an IPv6 /64) not admitted
    # yet (in their handshake, or before their CONNECT is accepted): so that one host cannot
    # hold them all. Past it, once half of max_connections are open, its new ones are closed at
    # once (broker.connection_limit).
    max_connecting_per_address: int = Field(64, ge=1, le=10_000_000)
    # Seconds of silence on an MQTT connection before TCP keepalive probes its host (0: off);
    # a host that answers none is dropped 2 minutes later (broker.listen). 32767: Linux's most.
    tcp_keepalive_idle: int = Field(300, ge=0, le=32767)
    # Outbound QoS 1/2 messages sent to one client and not yet acknowledged; the rest wait.
    max_inflight_messages: int = Field(20, ge=1, le=65535)
    # Messages and bytes one session's queue holds; past either, QoS 0 goes first, then the
    # oldest.
    max_queued_messages: int = Field(1000, ge=0)
    max_queued_bytes: int = Field(10 * 1024 * 1024, ge=0)
    # Sessions one device holds on a broker process, connected or kept for a persistent
    # client; a CONNECT that would start one more gets CONNACK 3 (MQTT 5: 0x97).
    max_sessions_per_device: int = Field(100, ge=1)
    # Topic filters one session may hold; more are refused with SUBACK 0x80.
    max_subscriptions: int = Field(100, ge=0)
    # Levels of a subscription's topic filter and of a kept retained message's topic (3.1.1
    # §4.7.1): each costs a trie node, about 230 bytes. Past it a filter is refused (SUBACK
    # 0x80, MQTT 5 0x97) and a retained message delivered but not kept.
    max_topic_levels: int = Field(128, ge=1, le=32_768)
    # Characters of a shared subscription's share name ($share/{name}/{filter}, MQTT 5.0
    # §4.8.2); a longer one is refused (SUBACK 0x80, MQTT 5 0x8F).
    max_share_name_length: int = Field(128, ge=1, le=1024)
    # Bytes (UTF-8) of the share names and filters of the distinct shared subscriptions one
    # broker process holds, one more byte each: in a cluster each message another node routes
    # here names every one it matches, in one NATS message. Past it a new shared subscription
    # is refused (SUBACK 0x80, MQTT 5 0x97); joining one that exists is not. In a cluster
    # max_packet_size plus this must fit NATS's max_payload (a node refuses to start).
    max_shared_subscription_bytes: int = Field(256 * 1024, ge=0)
    # Of those bytes, what the groups one device's (or application's) sessions are in may
    # take, each group counted once (until the last of its sessions leaves it), so that one
    # device cannot take them all and leave the others none. Past it the device cannot make
    # or join one more (SUBACK 0x80, MQTT 5 0x97).
    max_shared_subscription_bytes_per_device: int = Field(16 * 1024, ge=0)
    # Topic filters one SUBSCRIBE / UNSUBSCRIBE may carry; the rest are refused (SUBACK 0x80,
    # MQTT 5 0x97; MQTT 5 UNSUBACK 0x83; an MQTT 3.1/3.1.1 UNSUBSCRIBE past it is closed).
    max_filters_per_subscribe: int = Field(100, ge=1, le=65535)
    # Inbound QoS 2 messages of one client whose PUBREL has not come; more closes it. An MQTT 5
    # client is told it as its Receive Maximum, which counts its QoS 1 messages whose PUBACK
    # has not gone too (5.0 §4.9). An MQTT 3.1/3.1.1 connection with this many QoS 1/2
    # messages whose PUBACK / PUBREC has not gone is not read until one goes (backpressure).
    max_awaiting_pubrel: int = Field(100, ge=1, le=65535)
    # MQTT 5: the longest Session Expiry Interval a client gets, in seconds (4294967295:
    # sessions may never expire); topic aliases per connection and direction (0: none).
    max_session_expiry_interval: int = Field(7 * 24 * 3600, ge=0, le=0xFFFF_FFFF)
    max_topic_aliases: int = Field(10, ge=0, le=65535)
    # MQTT 3.1/3.1.1: seconds a persistent session (clean session 0) is kept after its client
    # disconnected, as a 5.0 session with that Session Expiry Interval (0: for good).
    persistent_session_expiry: int = Field(0, ge=0, le=0xFFFF_FFFF)
    # Retained messages and their bytes, in all and per device; past a limit a retained
    # message is delivered but not kept.
    max_retained_messages: int = Field(100_000, ge=0)
    max_retained_bytes: int = Field(64 * 1024 * 1024, ge=0)
    max_retained_messages_per_device: int = Field(100, ge=0)
    max_retained_bytes_per_device: int = Field(1024 * 1024, ge=0)
    # Seconds a PUBACK/PUBREC may wait for the store to save the message; past it the
    # publisher's connection is closed (it sends the message again on a new one).
    ack_timeout: float = Field(10.0, gt=0, le=3600)
    # --- Password checks (MQTT basic, argon2id): what clients without credentials can cost ---
    # Checks that run at once, checks that may wait for one, and checks one source address
    # may have running or waiting (an address that has not failed lately waits for its share
    # instead); past a bound the CONNECT is refused at once (CONNACK 3).
    password_check_workers: int = Field(2, ge=1, le=64)
    password_check_queue: int = Field(16, ge=0, le=10_000)
    password_checks_per_address: int = Field(1, ge=1, le=1000)
    # Failed checks an address gets before its password checks are refused for a while
    # (1 s, doubling with each further failure up to password_throttle_max_seconds).
    password_failures_before_throttle: int = Field(5, ge=1, le=1000)
    password_throttle_max_seconds: float = Field(60.0, ge=1, le=86_400)
    # Addresses whose failures are remembered; past it the longest quiet one is forgotten.
    password_throttle_addresses: int = Field(10_000, ge=1, le=10_000_000)

    # --- What authentication leaves behind: log lines and auth events ---
    # Refusals per client address and reason logged and recorded one by one in each interval;
    # the rest are counted and reported as one line and one event when the interval ends. So
    # are the lines of connections refused before CONNECT or closed for a protocol violation.
    auth_log_repeats: int = Field(5, ge=1, le=100_000)
    auth_log_interval_seconds: float = Field(60.0, gt=0, le=86_400)
    # auth_events keeps events at most this many days, and at most this many rows.
    auth_events_max_age_days: float = Field(90.0, gt=0, le=36_500)
    auth_events_max_rows: int = Field(1_000_000, ge=100, le=1_000_000_000)
    # Seconds between publications of the $SYS/broker/... figures; 0 turns them off.
    sys_interval: float = Field(10.0, ge=0)

    # --- NanoIoT's own (environment: NANOIOT_<NAME>) ---
    # Without a settings file or NANOIOT_DATA_DIR: a per-user folder (nanoiot.locations).
    data_dir: Path = Field(default_factory=lambda: user_data_dir(os.environ))
    database_url: str | None = None
    # Seconds to wait for the database: to open a connection (PostgreSQL), and for one
    # statement (PostgreSQL: cancelled after it; SQLite: the busy timeout, the wait for
    # another process's write lock). Past either the call fails: "not answering".
    database_connect_timeout: float = Field(2.0, gt=0, le=300)
    database_statement_timeout: float = Field(5.0, gt=0, le=3600)
    # Seconds a CONNECT waits for the store to look its credentials up; then CONNACK 3
    # (server unavailable) and the client retries. A password's argon2 verification after
    # the lookup is CPU work here, not the store's: tls_handshake_timeout (the whole
    # CONNECT phase) bounds it.
    auth_timeout: float = Field(2.0, gt=0, le=300)
    http_bind_address: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    admin_token: SecretStr | None = None
    # Key of the access-token hashes (64 hex characters); unset: generated into the data
    # directory. Nodes sharing a database but not a data directory must share it.
    token_hash_key: SecretStr | None = None
    # Largest request body the admin HTTP server reads, in bytes (a CRL upload may be 16 MiB;
    # the bulk import is streamed and has no bound on its whole body).
    http_max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # Addresses or CIDR networks of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto
    # the admin HTTP server believes. Empty: none, every client is its TCP peer's address.
    http_trusted_proxies: list[str] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- Load balancers (environment: NANOIOT_<NAME>) ---
    # Addresses or CIDR networks of TCP load balancers that send a PROXY protocol v2 header
    # (broker.proxy_protocol); from them it is required, from anyone else refused. Empty: off.
    proxy_protocol_trusted: list[str] = Field(default_factory=list)

    # --- Cluster (environment: NANOIOT_<NAME>); the nats_* options need nats_url ---
    # NATS server(s) the node joins, comma-separated: nats://host:4222 or tls://host:4222.
    nats_url: str | None = None
    # One way to authenticate: a .creds file (JWT and NKey seed), user and password, or token.
    nats_creds_file: Path | None = None
    nats_user: str | None = None
    nats_password: SecretStr | None = Field(None, validate_default=True)
    nats_token: SecretStr | None = Field(None, validate_default=True)
    # TLS towards NATS: the CA that signed the server's certificate, and a client certificate
    # and key when the server asks for one (both or neither).
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = Field(None, validate_default=True)
    # This node's name in the cluster (default: the host name); names subjects and keys.
    node_name: str | None = Field(None, pattern=_NAME_PATTERN)
    # Nodes with the same cluster_name on one NATS form one cluster.
    cluster_name: str = Field("nanoiot", pattern=_NAME_PATTERN)
    # Broker processes sharing the MQTT port (SO_REUSEPORT); "auto": one per CPU. More than
    # one needs nats_url (messages cross between workers through NATS).
    workers: Annotated[int, Field(ge=1, le=_MAX_WORKERS)] | Literal["auto"] = 1
    # Bytes of messages for other nodes waiting to be handed to NATS; past it a batch is
    # dropped (QoS 0) or its publishers disconnected unacknowledged (QoS 1/2: they resend).
    max_forward_buffer: int = Field(8 * 1024 * 1024, ge=64 * 1024)
    # Seconds between a member's heartbeats in <cluster_name>_members; a member whose entry
    # was not rewritten for 3 of them is taken as gone (its wills, its sessions).
    cluster_heartbeat_interval: float = Field(2.0, ge=0.1, le=60.0)
    # Wills a member cut off from NATS holds back until it is back (broker.cluster.wills);
    # past it a will falling due is dropped (and logged).
    cluster_max_held_wills: int = Field(1000, ge=0)
    # Seconds a member a persistent session moved away from keeps sending on to its new member
    # what members with older route tables still route to it (broker.cluster.handover).
    cluster_handover_window: float = Field(10.0, ge=0.5, le=600.0)
    # Seconds a member busy giving its sessions a backlog parked for it (back after a while
    # away) may keep the QoS 1/2 messages sent to it meanwhile unconfirmed, saying it is live
    # (broker.cluster.busy), before their publishers are disconnected unacknowledged (they
    # send again); a member that is not busy confirms within 5 s.
    cluster_replay_wait: float = Field(60.0, ge=5.0, le=600.0)
    # Bytes of frames kept in JetStream (<cluster_name>_parked) for a member that is gone,
    # until its sessions are taken (broker.cluster.parked); past it publishers of QoS 1/2
    # messages for its sessions are disconnected unacknowledged (they send again).
    cluster_max_parked_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024)
    # QoS 2 message ids a member remembers having delivered (the oldest forgotten first), so
    # that one routed again for its publisher's resend reaches each subscriber once
    # (broker.cluster.resend); about 100 bytes each.
    cluster_qos2_ids_kept: int = Field(100_000, ge=1000, le=10_000_000)
    # QoS 2 message ids each persistent session keeps in the store, its last completed
    # (PUBCOMP), so that one routed again after the session moved to another member does not
    # reach it twice (broker.cluster.resend); one row each. 0: none.
    cluster_qos2_completed_kept: int = Field(100, ge=0, le=65535)
    # Copies of each JetStream bucket and stream the cluster keeps (session claims, wills,
    # routes, retained and parked messages), each on another NATS server: 3 with a 3-server
    # NATS cluster outlives one server lost. An existing one is brought to it at start-up.
    cluster_replicas: int = Field(1, ge=1, le=5)

    @field_validator("proxy_protocol_trusted", "http_trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"'{entry}' is not an IP address or CIDR network") from None
        return entries

    @field_validator("nats_url")
    @classmethod
    def _nats_urls(cls, url: str | None) -> str | None:
        return check_nats_urls(url)

    @field_validator(
        "nats_creds_file", "nats_user", "nats_password", "nats_token", "nats_tls_ca",
        "nats_tls_cert", "nats_tls_key",
    )  # fmt: skip
    @classmethod
    def _cluster_options(cls, value: object, info: ValidationInfo) -> object:
        assert info.field_name is not None  # a field's validator
        return check_nats_option(info.field_name, value, info.data)

    @field_validator("token_hash_key", mode="before")
    @classmethod
    def _unset_when_blank(cls, value: object) -> object:
        """Blank is unset (Compose passes an empty ``${VAR:-}``): the data directory's key."""
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str | None) -> str | None:
        """``postgresql://``, ``postgres://`` and ``sqlite:///`` get the async driver."""
        return normalise_database_url(url) if url else None

    @property
    def effective_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'nanoiot.db').resolve()}"


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    if field.startswith(_REFERENCE_PREFIX):
        return field.upper()
    return _OUR_PREFIX + field.upper()


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build the settings from defaults, the YAML file and the environment.

    ``config_path`` wins over ``NANOIOT_CONFIG``; without either, the nearest
    ``conf/nanoiot.yaml`` at or above ``cwd`` (default: the working directory) is read. A path
    given explicitly must exist.
    """
    env = os.environ if environ is None else environ
    explicit = config_path or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    path = explicit or find_settings_file(cwd or Path.cwd())
    values: dict[str, Any] = {}
    if path is not None:
        values.update(relative_to_file(_read_yaml(path), path))
    values.update(_read_env(env))
    values.setdefault("data_dir", user_data_dir(env))
    try:
        return Settings(**values)
    except PydanticValidationError as exc:
        raise ConfigError(_describe(exc, path or DEFAULT_CONFIG_PATH)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(loaded).__name__}")
    known = Settings.model_fields
    for key in loaded:
        if key not in known:
            raise ConfigError(f"{path}: unknown setting '{key}'{_suggest(str(key))}")
    return {key: value for key, value in loaded.items() if value is not None}


def _env_value(field: str, name: str, value: str) -> Any:
    """Lists come from the environment as JSON; everything else as text pydantic converts."""
    # typing.get_origin, not identity: each ``list[...]`` expression is a new object.
    if get_origin(Settings.model_fields[field].annotation) is not list:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment: {name} is not valid JSON: {exc.msg}") from None


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    by_env = {env_name(field): field for field in Settings.model_fields}
    values: dict[str, Any] = {}
    for name, value in env.items():
        upper = name.upper()
        if upper in by_env:
            values[by_env[upper]] = _env_value(by_env[upper], name, value)
        elif upper.startswith(_OUR_PREFIX) and upper != CONFIG_ENV:
            raise ConfigError(f"environment: unknown setting '{name}'{_suggest(name)}")
    return values


def _suggest(key: str) -> str:
    import difflib

    bare = key.lower().removeprefix(_OUR_PREFIX.lower())
    close = difflib.get_close_matches(bare, list(Settings.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(exc: PydanticValidationError, path: Path) -> str:
    first = exc.errors()[0]
    # Positions inside a list stay (acl_rules.0); the branch names pydantic adds for a union
    # (workers: a number or "auto") go.
    loc = [first["loc"][0], *(part for part in first["loc"][1:] if isinstance(part, int))]
    key = ".".join(str(part) for part in loc)
    message = first["msg"].removeprefix("Value error, ")  # our validators' own words
    return f"setting '{key}' (file {path} or ${env_name(key)}): {message}"
