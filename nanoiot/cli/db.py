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

    settings = state(ctx).settings
    revision = run(lambda: migrate(settings.effective_database_url))
    console.print(f"database is at revision {revision}")
    print(f"database: {database_label(settings)}", file=sys.stderr)
