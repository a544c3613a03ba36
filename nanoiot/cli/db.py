"""``nanoiot db``: the database schema (Alembic migrations are the only way it is made)."""

import sys

import typer

from nanoiot.cli.common import database_label, run, state
from nanoiot.cli.dbwait import wait
from nanoiot.cli.output import console

app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.command("wait")(wait)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create or migrate the credential store's schema to the latest revision."""
    from storage.migrate import upgrade as migrate
    from storage.token_key import settled_token_key

    settings = state(ctx).settings
    url = settings.effective_database_url

    async def _upgrade() -> str:
        # Stored access tokens are hashed on the way (migration 0006): with the store's key.
        return await migrate(url, token_hash_key=await settled_token_key(settings))

    revision = run(_upgrade)
    console.print(f"database is at revision {revision}")
    print(f"database: {database_label(settings)}", file=sys.stderr)
