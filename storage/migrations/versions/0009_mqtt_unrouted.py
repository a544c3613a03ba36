"""A persistent session's QoS 2 message whose cluster routing is not confirmed keeps what
routing it again needs with its packet id.

A cluster member routes a QoS 2 PUBLISH on receipt (MQTT 3.1.1 §4.3.3, method B) and sends
its PUBREC once every member it went to confirmed it; one that does not closes the
connection unacknowledged, and the client sends the PUBLISH again (§4.4). That copy is
routed again with the same cluster-wide message id (``broker.cluster.resend``).
``mqtt_awaiting_pubrel.unrouted`` keeps what this needs (the id, the member each shared
subscription's copy went to) from the routing until its confirmation, so that the member that
restores or adopts the session after the routing member's death still routes the copy sent
again. NULL: nothing to route again (rows written before, too). It goes with its packet id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mqtt_awaiting_pubrel") as batch:
        batch.add_column(sa.Column("unrouted", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mqtt_awaiting_pubrel") as batch:
        batch.drop_column("unrouted")
