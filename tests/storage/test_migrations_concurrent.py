"""Several migrations at once in one process, as when stores are opened on several threads'
event loops (a broker thread and a test's own loop) or by several tasks of one loop.

Alembic keeps the running migration in process-wide globals, so storage.migrate runs them
one at a time; without that they fail (KeyError 'script', a table created twice) or hang.
"""

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from storage import migrate
from storage.migrate import current_revision, head_revision, upgrade
from tests.storage.pg import fresh_database

DATABASES = 4  # enough that, unserialised, migrations overlap on every run
WAIT = 60.0  # seconds for all of them, serialised, on a loaded machine (each takes well under 1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The URLs of DATABASES empty, un-migrated databases."""
    if request.param == "sqlite":
        yield [f"sqlite+aiosqlite:///{tmp_path / f'store{n}.db'}" for n in range(DATABASES)]
        return
    with ExitStack() as stack:
        yield [stack.enter_context(fresh_database()) for _ in range(DATABASES)]


async def _at_head(urls: list[str]) -> None:
    for url in urls:
        assert await current_revision(url) == head_revision()


def test_migrations_on_several_threads_loops(urls: list[str]) -> None:
    errors: list[BaseException] = []

    def migrate_on_own_loop(url: str) -> None:
        try:
            asyncio.run(upgrade(url))
        except BaseException as exc:
            errors.append(exc)

    # Daemon: a migration that hangs must not keep the test process alive.
    threads = [
        threading.Thread(target=migrate_on_own_loop, args=(url,), daemon=True) for url in urls
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), f"migrations hang after {WAIT} s"
    assert errors == []
    asyncio.run(_at_head(urls))


async def test_migrations_by_several_tasks_of_one_loop(urls: list[str]) -> None:
    async with asyncio.timeout(WAIT):
        revisions = await asyncio.gather(*(upgrade(url) for url in urls))
    assert revisions == [head_revision()] * len(urls)
    await _at_head(urls)


def test_a_waiter_that_stopped_waiting_gives_the_lock_back() -> None:
    # Cancelled before the worker thread got the lock: the thread gives it back.
    early = migrate._LockWaiter()
    early.abandon()
    early.acquire()
    assert not migrate._MIGRATING.locked()
    # Cancelled after: the task gives it back.
    late = migrate._LockWaiter()
    late.acquire()
    assert migrate._MIGRATING.locked()
    late.abandon()
    assert not migrate._MIGRATING.locked()
