"""Devices remember the trusted CA whose leaves may attach to them.

A leaf of a trusted CA used to attach to any existing device its CN named, even one whose
certificate an operator had pinned (auth.binding). Now it attaches only to a device that CA
created or that an operator bound to it: ``devices.bound_ca_id``. Devices a CA created
already are recognised by their credentials' ``issuer_ca_id``, so nothing is back-filled; a
device created empty for a CA without ``create_devices`` must be bound
(``nanoiot device bind NAME CA``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("bound_ca_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("bound_ca_id")
