"""A persistent session's queued or in-flight QoS 2 message keeps its cluster-wide id.

A QoS 2 message whose routing another member did not confirm is routed again with the same
cluster-wide message id when its publisher sends it again (``broker.cluster.resend``). A
session that had the first copy queued on one member and then moved to another (taken
over, adopted after its member's death) is read from the store there: the member must not
give it the copy routed again (MQTT 3.1.1 / 5.0 §4.3.3: delivered once).
``mqtt_queued_messages.message_id`` says which message each queued one is (signed 64 bits;
NULL: none, a QoS 0/1 message, a single node, or rows written before).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mqtt_queued_messages") as batch:
        batch.add_column(sa.Column("message_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mqtt_queued_messages") as batch:
        batch.drop_column("message_id")
