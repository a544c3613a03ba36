"""MQTT 5 state of persistent sessions outlives a restart.

A queued message keeps its MQTT 5 properties (``properties``: as encoded on the wire, with
their length, 5.0 §2.2.2) and the time it was received (``received_at``), so that its
Message Expiry Interval counts down from then (§3.3.2.3.3). A session keeps its expiry
interval (``expiry_interval``: NULL for a 3.1.1 session, which never expires) and when its
client disconnected (``disconnected_at``), so that it ends that interval after the
disconnection, restart or not (§3.1.2.11.2). All are NULL on rows written before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("mqtt_queued_messages") as batch:
        batch.add_column(sa.Column("properties", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("received_at", TIMESTAMP, nullable=True))
    with op.batch_alter_table("mqtt_sessions") as batch:
        # Up to 0xFFFFFFFF (§3.1.2.11.2): more than a 32-bit signed integer holds.
        batch.add_column(sa.Column("expiry_interval", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("disconnected_at", TIMESTAMP, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mqtt_sessions") as batch:
        batch.drop_column("disconnected_at")
        batch.drop_column("expiry_interval")
    with op.batch_alter_table("mqtt_queued_messages") as batch:
        batch.drop_column("received_at")
        batch.drop_column("properties")
