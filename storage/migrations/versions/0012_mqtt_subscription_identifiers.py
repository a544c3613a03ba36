"""A persistent session's subscriptions keep their MQTT 5 Subscription Identifier.

A message that matches a subscription made with a Subscription Identifier carries it
(5.0 §3.8.2.1.2, §3.3.4), on the connection that made it and after a restart alike: the
identifier is part of the subscription, which is part of the session state (§4.1).
``identifier`` is NULL for a subscription without one, and on rows written before.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mqtt_subscriptions") as batch:
        # 1 to 268,435,455 (a four-byte Variable Byte Integer, §1.5.5): a 32-bit integer holds it.
        batch.add_column(sa.Column("identifier", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mqtt_subscriptions") as batch:
        batch.drop_column("identifier")
