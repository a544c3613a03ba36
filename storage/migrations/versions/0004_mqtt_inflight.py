"""Persistent sessions keep messages in flight, not only queued ones.

MQTT 3.1.1 §4.4: after a reconnection the server re-sends unacknowledged PUBLISH packets, and
PUBREL packets for QoS 2 messages whose PUBREC came, with their original packet identifiers.
Every QoS 1 and 2 message for a persistent session is now kept from routing until its
PUBACK / PUBCOMP, whether its client is connected or not, with its packet id once sent
(``packet_id``), whether PUBREC came (``released``) and its retain flag (a retained message
sent on SUBSCRIBE). Subscriptions keep their MQTT 5 options (no local, retain as published,
retain handling: bits 2-5 of the SUBSCRIBE options byte, 5.0 §3.8.3.1).

A queued message's topic becomes unbounded text: a PUBLISH topic may be 65,535 bytes
(§1.5.3) and a message acknowledged to its publisher must never fail to be stored. Topic
filters and client ids stay bounded (they are keys); the broker refuses longer ones.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mqtt_queued_messages") as batch:
        batch.alter_column("topic", existing_type=sa.String(1024), type_=sa.Text())
        batch.add_column(sa.Column("packet_id", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("released", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("retain", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("mqtt_subscriptions") as batch:
        batch.add_column(
            sa.Column("options", sa.SmallInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("mqtt_subscriptions") as batch:
        batch.drop_column("options")
    with op.batch_alter_table("mqtt_queued_messages") as batch:
        batch.drop_column("retain")
        batch.drop_column("released")
        batch.drop_column("packet_id")
        batch.alter_column("topic", existing_type=sa.Text(), type_=sa.String(1024))
