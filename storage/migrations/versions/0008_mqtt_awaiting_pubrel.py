"""QoS 2 packet ids awaiting PUBREL outlive a restart and move with their session.

MQTT 3.1.1 §4.3.3 (method B): the broker routes a QoS 2 PUBLISH on receipt, answers PUBREC,
and keeps its packet id until PUBREL; a PUBLISH sent again with that id meanwhile is answered
and not routed again. ``mqtt_awaiting_pubrel`` keeps those ids of persistent sessions, so a
broker restarted, or the cluster member that takes in a dead member's session, still knows
them. Deleting the session deletes them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mqtt_awaiting_pubrel",
        sa.Column("session_key", sa.String(300), nullable=False),
        sa.Column("packet_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("session_key", "packet_id", name=op.f("pk_mqtt_awaiting_pubrel")),
        sa.ForeignKeyConstraint(
            ["session_key"],
            ["mqtt_sessions.key"],
            name=op.f("fk_mqtt_awaiting_pubrel_session_key_mqtt_sessions"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("mqtt_awaiting_pubrel")
