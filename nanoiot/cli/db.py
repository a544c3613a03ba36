"""``nanoiot db``: the database schema (Alembic migrations are the only way it is made)."""

import typer

from nanoiot.cli.common import run, state
from nanoiot.cli.dbwait import wait
from nanoiot.cli.output import console

app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.command("wait")(wait)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create or migrate the credential store's schema to the latest revision."""
    from storage.migrate import upgrade as migrate

    url = state(ctx).settings.effective_database_url
    revision = run(lambda: migrate(url))
    console.print(f"database is at revision {revision}")
