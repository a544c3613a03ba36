"""Persistent MQTT sessions: the session, its subscriptions and its queued messages.

MQTT 3.1.1 §3.1.2.4: a session with CleanSession 0 keeps its subscriptions and the QoS 1 and
2 messages that arrive while the client is away, and that state must outlive a broker
restart. A session belongs to a device (its key is ``<device id>/<client id>``), so deleting
the device deletes its sessions. Queued messages are ordered by ``id``; ``attempted`` marks
a message already sent once, so a re-delivery carries DUP (§3.3.1.1).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mqtt_sessions",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("device_name", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_mqtt_sessions")),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_mqtt_sessions_device_id_devices"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_mqtt_sessions_device_id"), "mqtt_sessions", ["device_id"])
    op.create_table(
        "mqtt_subscriptions",
        sa.Column("session_key", sa.String(300), nullable=False),
        sa.Column("topic_filter", sa.String(1024), nullable=False),
        sa.Column("qos", sa.SmallInteger(), nullable=False),
        sa.Column("me_form", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("session_key", "topic_filter", name=op.f("pk_mqtt_subscriptions")),
        sa.ForeignKeyConstraint(
            ["session_key"],
            ["mqtt_sessions.key"],
            name=op.f("fk_mqtt_subscriptions_session_key_mqtt_sessions"),
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "mqtt_queued_messages",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("session_key", sa.String(300), nullable=False),
        sa.Column("topic", sa.String(1024), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("qos", sa.SmallInteger(), nullable=False),
        sa.Column("attempted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mqtt_queued_messages")),
        sa.ForeignKeyConstraint(
            ["session_key"],
            ["mqtt_sessions.key"],
            name=op.f("fk_mqtt_queued_messages_session_key_mqtt_sessions"),
            ondelete="CASCADE",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_mqtt_queued_messages_session_key_id"),
        "mqtt_queued_messages",
        ["session_key", "id"],
    )


def downgrade() -> None:
    op.drop_table("mqtt_queued_messages")
    op.drop_table("mqtt_subscriptions")
    op.drop_table("mqtt_sessions")
