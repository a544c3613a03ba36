"""Access tokens are stored as keyed SHA-256 hashes, never in plain text.

``credentials.token`` (the token itself) becomes ``credentials.token_hash``: HMAC-SHA256 of
the token under the token hash key (storage.secrets), 64 hex characters, unique. Existing
tokens are hashed here, so the migration needs the key: ``storage.migrate`` passes it as
``config.attributes["token_hash_key"]`` (the store and ``nanoiot db upgrade`` read it from
the data directory or ``token_hash_key``). Without a key it refuses, naming the fix, rather
than lose the tokens. There is no way back: the tokens are gone from the database.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from nanoiot.errors import StoreError
from storage.secrets import token_digest

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CREDENTIALS = sa.table(
    "credentials",
    sa.column("id", sa.Uuid()),
    sa.column("token", sa.String(255)),
    sa.column("token_hash", sa.String(64)),
)


def upgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(64), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_CREDENTIALS.c.id, _CREDENTIALS.c.token).where(
            _CREDENTIALS.c.token.is_not(None)
        )
    ).all()
    if rows:
        key = context.config.attributes.get("token_hash_key")
        if not isinstance(key, bytes):
            raise StoreError(
                "hashing the stored access tokens needs the token hash key: run "
                "`nanoiot db upgrade` (it reads the key from the data directory)"
            )
        for credential_id, token in rows:
            connection.execute(
                _CREDENTIALS.update()
                .where(_CREDENTIALS.c.id == credential_id)
                .values(token_hash=token_digest(key, token), token=None)
            )
    with op.batch_alter_table("credentials") as batch:
        batch.drop_constraint("uq_credentials_token", type_="unique")
        batch.drop_column("token")
        batch.create_unique_constraint("uq_credentials_token_hash", ["token_hash"])


def downgrade() -> None:
    raise StoreError("the access tokens were replaced by their hashes: there is no way back")
