"""A TLS proxy in front of the broker, as conformance checkers run suites whose clients speak
plain TCP: each connection to it is carried to the broker over TLS with one device
certificate, bytes as they come both ways; either side closing closes the other."""

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tests.e2e.harness import WAIT

HOST = "127.0.0.1"
T = TypeVar("T")
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class TlsProxy:
    """Listening on ``port`` (a free one, plain TCP) until ``stop``."""

    def __init__(self, broker_port: int, server_cert: Path, certfile: Path) -> None:
        self._context = ssl.create_default_context(cafile=str(server_cert))
        self._context.load_cert_chain(str(certfile))
        self._broker_port = broker_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._carried: set[asyncio.Task[None]] = set()
        self._server = self._call(asyncio.start_server(self._carry, HOST, 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT)

    async def _carry(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        """One client's connection: its bytes to the broker over TLS, and back."""
        task = asyncio.current_task()
        assert task is not None
        self._carried.add(task)
        writers = [client_out]
        try:
            broker_in, broker_out = await asyncio.open_connection(
                HOST, self._broker_port, ssl=self._context, server_hostname="localhost"
            )
            writers.append(broker_out)
            await _both_ways((client_in, broker_out), (broker_in, client_out))
        except OSError:
            pass  # the broker refused the connection: the client's is closed
        except asyncio.CancelledError:
            pass  # the proxy stops (asyncio's stream server reports a cancelled handler)
        finally:  # one side ended (or the proxy stops): the other is closed too
            await _close_all(writers)
            self._carried.discard(task)

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            carried = list(self._carried)
            for task in carried:
                task.cancel()
            await asyncio.gather(*carried, return_exceptions=True)
            await self._server.wait_closed()

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT)
        self._loop.close()


async def _close_all(writers: list[asyncio.StreamWriter]) -> None:
    """Each writer closed: gracefully, unless the proxy stops meanwhile. A TLS close waits for
    the peer's close_notify (up to asyncio's 30 s shutdown timeout); cancelled there, the
    transport would stay open past the loop's end and leak its socket, so it is aborted."""
    stopping = False
    for writer in writers:
        if stopping:
            writer.transport.abort()
            continue
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            stopping = True
            writer.transport.abort()


async def _both_ways(*streams: Stream) -> None:
    """Bytes from each reader to its writer, until either reader ends."""
    pumps = [asyncio.ensure_future(_pump(reader, writer)) for reader, writer in streams]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
