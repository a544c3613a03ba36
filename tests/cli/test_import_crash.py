"""``nanoiot device import`` killed half way, then run again (SQLite and PostgreSQL).

What "nothing half-imported" means, checked after a SIGKILL at an arbitrary moment: every
device in the store has its credential and its two change-feed entries, whole batches only;
running the same file again imports the rest, counts the rows imported the first time as
already imported (not as failures, exit status 0), and leaves exactly the file's devices.
"""

import asyncio
import json
import signal
import subprocess
import threading
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from nanoiot.cli.imports import BATCH_ROWS
from tests.certgen import issue
from tests.cli.conftest import NANOIOT, Cli

ROWS = 6 * BATCH_ROWS
KILL_AFTER_S = 60.0  # a bound on the whole first run, should the import hang


def write_rows(path: Path) -> None:
    lines = (
        json.dumps({"name": f"meter-{n:05}", "pem": issue(f"meter-{n:05}").cert_pem})
        for n in range(ROWS)
    )
    path.write_text("\n".join(lines) + "\n")


def killed_after_first_batch(cli_env: dict[str, str], cwd: Path, source: Path) -> str:
    """Start the import, SIGKILL it once it reports its first batch; its progress line."""
    with subprocess.Popen(
        [NANOIOT, "device", "import", str(source)],
        env=cli_env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        watchdog = threading.Timer(KILL_AFTER_S, process.kill)
        watchdog.start()
        try:
            assert process.stderr is not None
            line = process.stderr.readline()  # written once the first batch is committed
            process.send_signal(signal.SIGKILL)
            process.wait()
        finally:
            watchdog.cancel()
    assert process.returncode == -signal.SIGKILL, "the import ended before it was killed"
    return line


async def counts(url: str) -> dict[str, int]:
    """Devices; devices without exactly one credential; change-feed entries."""
    queries = {
        "devices": "SELECT count(*) FROM devices",
        "incomplete": "SELECT count(*) FROM devices d WHERE "
        "(SELECT count(*) FROM credentials c WHERE c.device_id = d.id) <> 1",
        "changes": "SELECT count(*) FROM changes",
    }
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.split("///", 1)[1]) as db:
            return {key: db.execute(query).fetchone()[0] for key, query in queries.items()}
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return {key: await connection.fetchval(query) for key, query in queries.items()}
    finally:
        await connection.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_killed_import_leaves_whole_rows_and_a_rerun_finishes_it(
    nanoiot: Cli, cli_env: dict[str, str], tmp_path: Path, backend: str,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    if backend == "postgres":
        cli_env["NANOIOT_DATABASE_URL"] = url = request.getfixturevalue("postgres_url")
        nanoiot("db", "upgrade")
    else:  # the import makes and migrates the SQLite file itself
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'nanoiot.db'}"
    source = tmp_path / "fleet.jsonl"
    write_rows(source)

    progress = killed_after_first_batch(cli_env, tmp_path, source)

    assert progress.startswith(f"{BATCH_ROWS:,} of {ROWS:,} rows: imported {BATCH_ROWS}")
    after_crash = asyncio.run(counts(url))
    imported = after_crash["devices"]
    assert BATCH_ROWS <= imported < ROWS
    assert imported % BATCH_ROWS == 0  # whole batches: a batch is one transaction
    assert after_crash == {"devices": imported, "incomplete": 0, "changes": 2 * imported}

    rerun = nanoiot("device", "import", str(source))

    assert rerun.stdout.splitlines()[0] == (
        f"imported {ROWS - imported} device(s), 0 row(s) failed, {imported} already imported before"
    )
    assert asyncio.run(counts(url)) == {"devices": ROWS, "incomplete": 0, "changes": 2 * ROWS}
