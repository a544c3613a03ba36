"""The cluster's settings: the NATS server(s) a node joins, how it authenticates to them, and
what a node holds for the others. Each ``nats_*`` option needs ``nats_url``
(``nanoiot.nats_options``)."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from nanoiot.nats_options import check_nats_option, check_nats_urls
from nanoiot.settings.common import SettingsGroup

# NATS subject tokens and KV keys: no dots, spaces or wildcards.
_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_MAX_WORKERS = 256


class ClusterSettings(SettingsGroup):
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
    # Wills of a dead member decided again at once, a lookup in the database each, before they
    # are published (broker.cluster.will_decision); below the lookup pool's 5 connections, so
    # that the connects of that member's clients, which come meanwhile, find one free.
    cluster_max_will_lookups: int = Field(4, ge=1, le=64)
    # SUBACKs of one connection waiting for the other members' route tables to hold their
    # filters (broker.cluster.routes_seen); SUBSCRIBEs sent one after another share those
    # waits. Past it the connection is not read until one went out.
    cluster_max_subacks_waiting: int = Field(16, ge=1, le=1024)
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
    # Seconds between the purges of the delete markers in the routes, claims and devices buckets,
    # by the lowest-named live member (broker.cluster.compaction; nats-server 2.9.12+). 0: never.
    cluster_compaction_interval: float = Field(600.0, ge=0.0, le=86400.0)
    # Seconds a delete marker is kept before a purge removes it: longer than any live member
    # takes to read it (a member that has not read it yet would keep the route it deletes).
    cluster_delete_markers_kept: float = Field(1800.0, ge=1.0, le=7 * 86400.0)

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
