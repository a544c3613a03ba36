"""ORM models of the credential store; they never leave the ``storage`` package.

The schema itself is made only by the Alembic migrations in ``storage/migrations``; these
models must match them (a test compares the two). Constraint names follow one naming
convention so migrations and models agree on every dialect.
"""

import os
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    Uuid,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from auth.kinds import CredentialStatus, CredentialType
from storage.records import (
    AuthEvent,
    AuthOutcome,
    Change,
    ChangeKind,
    Credential,
    Device,
    TrustedCA,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only makes a column auto-increment when it is exactly "INTEGER PRIMARY KEY".
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC and always returns timezone-aware UTC datetimes.

    PostgreSQL's timestamptz does this itself; SQLite has no time zones, so the value is stored
    as naive UTC text and the tzinfo is put back on reading.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store: pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A time-ordered UUID, version 7 (RFC 9562 §5.7): 48 bits of Unix milliseconds, then
    random bits.

    Random (version 4) primary keys scatter every insert across the whole index; with 10^6
    devices that index no longer fits the page cache and inserts slow down many times over.
    Ordered ids append at the right edge instead. They reveal the creation time, which the
    records show anyway.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant: RFC 9562
    return uuid.UUID(int=value)


def _enum(enum_class: type[StrEnum], name: str) -> Enum:
    # Stored as the enum's value in a plain VARCHAR; the migration adds the CHECK constraint.
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DeviceRow(Base):
    __tablename__ = "devices"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(64), default="default")
    label: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # No foreign key, as credentials.issuer_ca_id: deleting the CA leaves the binding inert.
    bound_ca_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    credentials: Mapped[list["CredentialRow"]] = relationship(
        back_populates="device", passive_deletes=True
    )

    def to_record(self) -> Device:
        return Device(
            id=self.id,
            name=self.name,
            type=self.type,
            label=self.label,
            enabled=self.enabled,
            created_at=self.created_at,
            bound_ca_id=self.bound_ca_id,
        )


class CredentialRow(Base):
    __tablename__ = "credentials"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[CredentialType] = mapped_column(_enum(CredentialType, "credential_type"))
    status: Mapped[CredentialStatus] = mapped_column(
        _enum(CredentialStatus, "credential_status"), default=CredentialStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # X509_CERTIFICATE: spki_sha256 is the lookup key on the connect path.
    pem: Mapped[str | None] = mapped_column(Text)
    spki_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    credentials_id: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(Text)
    issuer: Mapped[str | None] = mapped_column(Text)
    serial: Mapped[str | None] = mapped_column(String(64))
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime)
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # ACCESS_TOKEN: HMAC-SHA256 of the token (storage.secrets), never the token itself
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # MQTT_BASIC
    client_id: Mapped[str | None] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    application: Mapped[bool] = mapped_column(Boolean, default=False)
    # No foreign key: the id outlives the CA, marking a credential that came from a CA.
    issuer_ca_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    device: Mapped[DeviceRow] = relationship(back_populates="credentials")

    def to_record(self) -> Credential:
        return Credential(
            id=self.id,
            device_id=self.device_id,
            type=self.type,
            status=self.status,
            created_at=self.created_at,
            pem=self.pem,
            spki_sha256=self.spki_sha256,
            credentials_id=self.credentials_id,
            subject=self.subject,
            issuer=self.issuer,
            serial=self.serial,
            not_before=self.not_before,
            not_after=self.not_after,
            client_id=self.client_id,
            username=self.username,
            application=self.application,
            issuer_ca_id=self.issuer_ca_id,
        )


class TrustedCARow(Base):
    __tablename__ = "trusted_cas"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    pem: Mapped[str] = mapped_column(Text)
    spki_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    not_after: Mapped[datetime] = mapped_column(UtcDateTime)
    cn_regex: Mapped[str | None] = mapped_column(Text)
    create_devices: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    crl_pem: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    def to_record(self) -> TrustedCA:
        return TrustedCA(
            id=self.id,
            name=self.name,
            pem=self.pem,
            spki_sha256=self.spki_sha256,
            subject=self.subject,
            not_after=self.not_after,
            cn_regex=self.cn_regex,
            create_devices=self.create_devices,
            enabled=self.enabled,
            crl_pem=self.crl_pem,
            created_at=self.created_at,
        )


class AuthEventRow(Base):
    """One authentication attempt. No foreign key: the history outlives a deleted device."""

    __tablename__ = "auth_events"
    __table_args__ = (Index(None, "device_id", "at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    device_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    remote_address: Mapped[str | None] = mapped_column(String(255))
    outcome: Mapped[AuthOutcome] = mapped_column(_enum(AuthOutcome, "auth_outcome"), index=True)
    reason: Mapped[str] = mapped_column(Text)

    def to_record(self) -> AuthEvent:
        return AuthEvent(
            id=self.id,
            at=self.at,
            device_id=self.device_id,
            fingerprint=self.fingerprint,
            remote_address=self.remote_address,
            outcome=self.outcome,
            reason=self.reason,
        )


class ChangeRow(Base):
    """The change feed; ``seq`` (the primary key) is what pollers range-scan."""

    __tablename__ = "changes"
    # AUTOINCREMENT: SQLite must never hand out a seq again, even after old rows are pruned.
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    kind: Mapped[ChangeKind] = mapped_column(_enum(ChangeKind, "change_kind"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    credential_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    def to_record(self) -> Change:
        return Change(
            seq=self.seq,
            at=self.at,
            kind=self.kind,
            device_id=self.device_id,
            credential_id=self.credential_id,
        )


# --- persistent MQTT sessions (storage.sessions) ----------------------------------------------


# The longest client id and topic filter the session tables keep (characters); the broker
# refuses longer ones where they arrive, so it never acknowledges what it cannot store.
MQTT_CLIENT_ID_MAX = 255
MQTT_TOPIC_FILTER_MAX = 1024


class MqttSessionRow(Base):
    """A session with CleanSession 0 (MQTT 3.1.1 §3.1.2.4); ``key`` is the broker's
    ``<device id>/<client id>``. Deleting the device deletes its sessions."""

    __tablename__ = "mqtt_sessions"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    device_name: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(String(MQTT_CLIENT_ID_MAX))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # MQTT 5 (§3.1.2.11.2): the session ends this many seconds after its client disconnected;
    # for 3.1/3.1.1, persistent_session_expiry, NULL when that is 0 (never).
    # ``disconnected_at`` is NULL while a client holds the session.
    expiry_interval: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disconnected_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class MqttSubscriptionRow(Base):
    """A subscription of a persistent session: the canonical filter, and whether the client
    wrote it in the ``v1/devices/me`` form (its messages go out in that form)."""

    __tablename__ = "mqtt_subscriptions"

    session_key: Mapped[str] = mapped_column(
        ForeignKey("mqtt_sessions.key", ondelete="CASCADE"), primary_key=True
    )
    topic_filter: Mapped[str] = mapped_column(String(MQTT_TOPIC_FILTER_MAX), primary_key=True)
    qos: Mapped[int] = mapped_column(SmallInteger)
    me_form: Mapped[bool] = mapped_column(Boolean)
    # MQTT 5 subscription options: no local, retain as published, retain handling (§3.8.3.1).
    options: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    # MQTT 5 Subscription Identifier (§3.8.2.1.2: 1 to 268,435,455), NULL for none.
    identifier: Mapped[int | None] = mapped_column(Integer, nullable=True)


class MqttQueuedMessageRow(Base):
    """A QoS 1 or 2 message for a persistent session, from routing until its PUBACK or
    PUBCOMP (MQTT 3.1.1 §4.4); ``id`` orders the session's messages. Once sent it has its
    ``packet_id``; ``released``: PUBREC came, PUBREL is what is re-sent; ``message_id``:
    a QoS 2 message's id in a cluster (``broker.cluster.resend``)."""

    __tablename__ = "mqtt_queued_messages"
    __table_args__ = (Index(None, "session_key", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    session_key: Mapped[str] = mapped_column(ForeignKey("mqtt_sessions.key", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    qos: Mapped[int] = mapped_column(SmallInteger)
    attempted: Mapped[bool] = mapped_column(Boolean, default=False)
    packet_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    released: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    retain: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # MQTT 5 properties as on the wire, with their length (§2.2.2), and when the message was
    # received: its Message Expiry Interval counts from then (§3.3.2.3.3).
    properties: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    received_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # In a cluster, a QoS 2 message's cluster-wide id (signed 64 bits): a member that
    # restores the session does not give it a copy of that message routed again (§4.3.3).
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class MqttAwaitingPubrelRow(Base):
    """The packet id of a QoS 2 message a persistent session's client published: the broker
    routed it on receipt and answered PUBREC, and keeps the id until PUBREL (MQTT 3.1.1
    §4.3.3, method B), so that the PUBLISH sent again meanwhile, after a restart or on
    another node, is not routed a second time. In a cluster, while other members have not
    confirmed the message (or after one failed to), ``unrouted`` says what routing that
    PUBLISH sent again needs (``broker.cluster.resend``; JSON, NULL: nothing)."""

    __tablename__ = "mqtt_awaiting_pubrel"

    session_key: Mapped[str] = mapped_column(
        ForeignKey("mqtt_sessions.key", ondelete="CASCADE"), primary_key=True
    )
    packet_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unrouted: Mapped[str | None] = mapped_column(Text, nullable=True)


class MqttCompletedRow(Base):
    """In a cluster, the id of a QoS 2 message a persistent session's client completed
    (PUBCOMP), among its last few (a ring: ``slot`` is ``seq`` modulo their number, ``seq``
    counts its completions): a member the session moves to does not give it a copy of that
    message routed again for its publisher's resend (MQTT 3.1.1 / 5.0 §4.3.3,
    ``broker.cluster.resend``). ``message_id`` as ``MqttQueuedMessageRow``'s."""

    __tablename__ = "mqtt_completed_messages"

    session_key: Mapped[str] = mapped_column(
        ForeignKey("mqtt_sessions.key", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
