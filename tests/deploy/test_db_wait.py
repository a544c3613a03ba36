"""``nanoiot db wait``'s loop: it keeps trying while the database is away, succeeds once the
database answers, and gives up with the last reason at its bound."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from nanoiot.cli.dbwait import wait_for_database
from nanoiot.errors import StoreUnavailableError

WAIT = 30.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def forwarding(listener: socket.socket, host: str, port: int) -> AsyncIterator[None]:
    """Start accepting on ``listener`` and forward each connection to ``host:port``: the
    database "coming up" on the address the waiter has been trying."""
    pipes: set[asyncio.Task[None]] = set()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        both = [_pipe(reader, upstream_writer), _pipe(upstream_reader, writer)]
        tasks = [asyncio.ensure_future(pipe) for pipe in both]
        pipes.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)

    server = await asyncio.start_server(forward, sock=listener)
    try:
        yield
    finally:
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await server.wait_closed()


@pytest.mark.postgres
async def test_keeps_trying_until_the_database_comes_up(postgres_url: str) -> None:
    target = make_url(postgres_url)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = listener.getsockname()[1]
    via_port = target.set(port=port).render_as_string(hide_password=False)
    failed = asyncio.Event()
    reasons: list[str] = []

    def first_failure(_within: float, reason: str) -> None:
        reasons.append(reason)
        failed.set()

    waiting = asyncio.ensure_future(
        wait_for_database(via_port, WAIT, interval=0.1, on_first_failure=first_failure)
    )
    try:
        await asyncio.wait_for(failed.wait(), WAIT)
        assert "Connect call failed" in reasons[0] or "refused" in reasons[0]
        assert target.host is not None
        assert target.port is not None
        async with forwarding(listener, target.host, target.port):
            attempts = await asyncio.wait_for(waiting, WAIT)
        assert attempts >= 2
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, StoreUnavailableError):
            await waiting
        listener.close()


async def test_gives_up_at_the_bound_with_the_last_reason() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        url = f"postgresql+asyncpg://nanoiot:s3cret-pw@127.0.0.1:{port}/nanoiot"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailableError) as raised:
            await wait_for_database(url, 0.5, interval=0.1, on_first_failure=lambda *_: None)
    elapsed = loop.time() - started
    message = str(raised.value)
    assert message.startswith("cannot use the database postgresql+asyncpg://nanoiot:***@")
    assert "gave up after 0.5 s" in message
    assert "s3cret-pw" not in message
    assert elapsed < 0.5 + 5  # the bound, plus one connect attempt's own timeout at most
