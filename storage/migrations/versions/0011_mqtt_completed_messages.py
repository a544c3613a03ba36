"""A persistent session keeps the cluster-wide ids of the QoS 2 messages it completed last.

A QoS 2 message whose routing another member did not confirm is routed again with the same
cluster-wide message id when its publisher sends it again (``broker.cluster.resend``). A
session that got the first copy and completed it (PUBCOMP: its queue row is gone) and then
moved to another member (taken over, adopted after its member's death) must not get the
copy routed again there (MQTT 3.1.1 / 5.0 §4.3.3: delivered once). ``mqtt_completed_messages``
keeps the ids of its last completions, written in the transaction that deletes their queue
rows: a ring of ``cluster_qos2_completed_kept`` slots per session (``slot`` is ``seq``
modulo it, ``seq`` counts the session's completions). Deleting the session deletes them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mqtt_completed_messages",
        sa.Column("session_key", sa.String(300), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session_key", "slot", name=op.f("pk_mqtt_completed_messages")),
        sa.ForeignKeyConstraint(
            ["session_key"],
            ["mqtt_sessions.key"],
            name=op.f("fk_mqtt_completed_messages_session_key_mqtt_sessions"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("mqtt_completed_messages")
