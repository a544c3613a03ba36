"""Initial schema: devices, credentials, trusted CAs, auth events and the change feed.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite auto-increments only an "INTEGER PRIMARY KEY"; PostgreSQL gets BIGSERIAL.
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def _one_of(column: str, values: Sequence[str], table: str) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=op.f(f"ck_{table}_{column}"))


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("name", name=op.f("uq_devices_name")),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("pem", sa.Text(), nullable=True),
        sa.Column("spki_sha256", sa.String(64), nullable=True),
        sa.Column("credentials_id", sa.String(64), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("issuer", sa.Text(), nullable=True),
        sa.Column("serial", sa.String(64), nullable=True),
        sa.Column("not_before", TIMESTAMP, nullable=True),
        sa.Column("not_after", TIMESTAMP, nullable=True),
        sa.Column("token", sa.String(255), nullable=True),
        sa.Column("client_id", sa.String(255), nullable=True),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("application", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_credentials_device_id_devices"),
            ondelete="CASCADE",
        ),
        # The three lookup keys of the connect path; NULLs (other types) never collide.
        sa.UniqueConstraint("spki_sha256", name=op.f("uq_credentials_spki_sha256")),
        sa.UniqueConstraint("token", name=op.f("uq_credentials_token")),
        sa.UniqueConstraint("username", name=op.f("uq_credentials_username")),
        _one_of("type", ["X509_CERTIFICATE", "ACCESS_TOKEN", "MQTT_BASIC"], "credentials"),
        _one_of("status", ["active", "disabled", "revoked"], "credentials"),
    )
    op.create_index(op.f("ix_credentials_device_id"), "credentials", ["device_id"])
    op.create_table(
        "trusted_cas",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_after", TIMESTAMP, nullable=False),
        sa.Column("cn_regex", sa.Text(), nullable=True),
        sa.Column("create_devices", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("crl_pem", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trusted_cas")),
        sa.UniqueConstraint("name", name=op.f("uq_trusted_cas_name")),
        sa.UniqueConstraint("spki_sha256", name=op.f("uq_trusted_cas_spki_sha256")),
    )
    # No foreign key to devices: the authentication history survives a deleted device.
    op.create_table(
        "auth_events",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("remote_address", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_events")),
        _one_of("outcome", ["allowed", "denied", "error"], "auth_events"),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_auth_events_device_id_at"), "auth_events", ["device_id", "at"])
    op.create_index(op.f("ix_auth_events_outcome"), "auth_events", ["outcome"])
    # The change feed: pollers range-scan the primary key (seq > :last).
    op.create_table(
        "changes",
        sa.Column("seq", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("credential_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_changes")),
        _one_of(
            "kind",
            [
                "device_created",
                "device_updated",
                "device_disabled",
                "device_deleted",
                "credential_added",
                "credential_changed",
                "ca_changed",
            ],
            "changes",
        ),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("changes")
    op.drop_index(op.f("ix_auth_events_outcome"), table_name="auth_events")
    op.drop_index(op.f("ix_auth_events_device_id_at"), table_name="auth_events")
    op.drop_table("auth_events")
    op.drop_table("trusted_cas")
    op.drop_index(op.f("ix_credentials_device_id"), table_name="credentials")
    op.drop_table("credentials")
    op.drop_table("devices")
