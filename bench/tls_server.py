"""The TLS servers ``bench.tls_bench`` measures, each in a process of its own.

``broker.transport`` (any client certificate accepted, pinned afterwards) or
``asyncio.start_server(ssl=ctx)`` with every client certificate in its trust store; each either
greets (writes one byte per connection: the handshake benchmark) or echoes 64-byte messages.
The process reports its port over a pipe and stops when told to; ``ServerProcess.cpu_seconds``
reads its CPU time from /proc.
"""

import asyncio
import multiprocessing as mp
import ssl
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from bench._report import process_cpu_seconds
from broker.tls import build_server_context
from broker.transport import TlsConnection, start_tls_server
from nanoiot.settings import Settings


@dataclass(frozen=True)
class ServerSpec:
    kind: str  # "ours" or "stdlib"
    cert_file: Path  # plain paths: the spec crosses to a spawned process
    key_file: Path
    trusted: tuple[Path, ...]  # client certificates for the stdlib trust store
    mode: str  # "greet" (handshake benchmark) or "echo"


def _serve(spec: ServerSpec, control: Connection) -> None:
    asyncio.run(_serve_async(spec, control))


async def _serve_async(spec: ServerSpec, control: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(control.fileno(), stop.set)
    if spec.kind == "ours":
        settings = Settings(
            mqtt_ssl_pem_cert=spec.cert_file,
            mqtt_ssl_pem_key=spec.key_file,
            require_client_certificate=True,
        )
        handler = _ours_greet if spec.mode == "greet" else _ours_echo
        server = await start_tls_server(
            build_server_context(settings), "127.0.0.1", 0, handler, handshake_timeout=30
        )
        control.send(server.port)
        await stop.wait()
        server.close()
        await server.wait_closed()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(spec.cert_file, spec.key_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if spec.trusted:
            ctx.load_verify_locations(cadata="".join(p.read_text() for p in spec.trusted))
        handler2 = _stdlib_greet if spec.mode == "greet" else _stdlib_echo
        std_server = await asyncio.start_server(handler2, "127.0.0.1", 0, ssl=ctx, backlog=1024)
        control.send(std_server.sockets[0].getsockname()[1])
        await stop.wait()
        std_server.close()
        await std_server.wait_closed()
    loop.remove_reader(control.fileno())


async def _ours_greet(conn: TlsConnection) -> None:
    conn.writer.write(b"k")
    while await conn.reader.read_some():
        pass


async def _ours_echo(conn: TlsConnection) -> None:
    read, write, drain = conn.reader.read, conn.writer.write, conn.writer.drain
    while message := await read(64):
        write(message)
        await drain()


async def _stdlib_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"k")
    try:
        while await reader.read(65536):
            pass
    except (ssl.SSLError, ConnectionError):
        pass
    writer.close()


async def _stdlib_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            message = await reader.readexactly(64)
            writer.write(message)
            await writer.drain()
    except (asyncio.IncompleteReadError, ssl.SSLError, ConnectionError):
        pass
    writer.close()


class ServerProcess:
    def __init__(self, spec: ServerSpec) -> None:
        ctx = mp.get_context("spawn")
        self._control, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(spec, child), daemon=True)
        self._process.start()
        self.port: int = self._control.recv()

    def cpu_seconds(self) -> float:
        assert self._process.pid is not None
        return process_cpu_seconds(self._process.pid)

    def stop(self) -> None:
        self._control.send("stop")
        self._process.join(30)
