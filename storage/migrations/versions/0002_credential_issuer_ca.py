"""Credentials remember the trusted CA they were accepted through.

A leaf stored at its first connection because it chained to a trusted CA keeps that CA's id,
so later connections by the pinned key still require the CA to be trusted. No foreign key:
when the CA is deleted the id must stay, as the mark that the credential came from a CA
(NULL means provisioned directly by an operator).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("issuer_ca_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("issuer_ca_id")
