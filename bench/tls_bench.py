"""Benchmark of the pyOpenSSL TLS transport against the stdlib ssl server it replaces.

    .venv/bin/python -m bench.tls_bench            # full run, a few minutes on 2 cores
    .venv/bin/python -m bench.tls_bench --quick    # smoke run, seconds

The server runs in a process of its own (``bench.tls_server``) and its CPU time (user +
system, from /proc/<pid>/stat) is read around each phase; client processes drive it over
loopback.

(a) mTLS handshakes (TLS 1.3, EC P-256 server key): server CPU per handshake with EC P-256
    and RSA-2048 self-signed client certificates, for ``broker.transport`` (any client
    certificate accepted, pinned afterwards) and for ``asyncio.start_server(ssl=ctx)`` with
    CERT_REQUIRED and every client certificate loaded into the trust store (the best the
    stdlib can do). Each connection: handshake, server writes 1 byte, client reads it, closes.
(b) 1,000 distinct certificates sharing one subject DN vs 1,000 with unique DNs, through our
    transport: their cost ratio must stay within 1.2 (no per-DN lookup anywhere).
(c) Echo of 64-byte messages over one connection, each read with read(64) and written back
    with write() + drain() as amqtt does per packet: server CPU per message.

Results: a markdown table on stdout and in bench/results/tls-<date>.md, with machine info.
The two servers use different OpenSSL builds (cryptography's wheel vs the system's), which
the table header names.
"""

import argparse
import asyncio
import multiprocessing as mp
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from OpenSSL import SSL

from bench._report import machine_lines
from bench.tls_server import ServerProcess, ServerSpec
from tests.broker.tls_certs import ClientFiles, ServerPki, client_cert, make_server_pki

RESULTS_DIR = Path(__file__).parent / "results"
SAME_DN_RATIO_LIMIT = 1.2
SAME_DN = "distinct certs, one shared subject DN"
UNIQUE_DN = "distinct certs, unique subject DNs"
MESSAGE = b"m" * 64


# --- client processes ---
#
# Each client prepares (contexts, or its connection and handshake) before the clock starts,
# reports ready, waits for "go", does its work and reports how many operations it did.


def _client_main(
    prepare: Callable[..., Callable[[], int]],
    args: tuple[object, ...],
    ready: "mp.Queue[int]",
    go: Connection,
    done: "mp.Queue[int]",
) -> None:
    work = prepare(*args)
    ready.put(1)
    go.recv()
    done.put(work())


def _prepare_handshakes(
    port: int, ca_file: Path, clients: Sequence[tuple[Path, Path]]
) -> Callable[[], int]:
    contexts = []
    for cert, key in clients:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        ctx.load_cert_chain(str(cert), str(key))
        contexts.append(ctx)

    def work() -> int:
        for ctx in contexts:  # a new context each time: no session resumption
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                if tls.recv(1) != b"k":
                    raise RuntimeError("server did not greet")
        return len(contexts)

    return work


def _prepare_echo(
    port: int, ca_file: Path, client: tuple[Path, Path], messages: int
) -> Callable[[], int]:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.load_cert_chain(str(client[0]), str(client[1]))
    loop = asyncio.new_event_loop()
    reader, writer = loop.run_until_complete(asyncio.open_connection("127.0.0.1", port, ssl=ctx))

    async def send() -> None:
        for i in range(messages):
            writer.write(MESSAGE)  # one TLS record each, as a device sends its packets
            if i % 64 == 63:
                await writer.drain()
        await writer.drain()

    async def echo() -> int:
        _, echoed = await asyncio.gather(send(), reader.readexactly(messages * len(MESSAGE)))
        writer.close()
        return len(echoed) // len(MESSAGE)

    def work() -> int:
        try:
            return loop.run_until_complete(echo())
        finally:
            loop.close()

    return work


def run_clients(
    server: "ServerProcess",
    prepare: Callable[..., Callable[[], int]],
    jobs: list[tuple[object, ...]],
) -> tuple[int, float, float]:
    """(operations, server CPU seconds, wall seconds) of the clients' timed work."""
    ctx = mp.get_context("spawn")
    ready: mp.Queue[int] = ctx.Queue()
    done: mp.Queue[int] = ctx.Queue()
    pipes = [ctx.Pipe(duplex=False) for _ in jobs]
    procs = [
        ctx.Process(target=_client_main, args=(prepare, job, ready, recv_end, done))
        for job, (recv_end, _) in zip(jobs, pipes, strict=True)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get()
    cpu0, wall0 = server.cpu_seconds(), time.perf_counter()
    for _, send_end in pipes:
        send_end.send("go")
    operations = sum(done.get() for _ in procs)
    cpu1, wall1 = server.cpu_seconds(), time.perf_counter()
    for proc in procs:
        proc.join(30)
    return operations, cpu1 - cpu0, wall1 - wall0


# --- phases ---


@dataclass(frozen=True)
class Row:
    name: str
    server: str
    operations: int
    cpu_s: float
    wall_s: float

    @property
    def cpu_ms_per_op(self) -> float:
        return 1000 * self.cpu_s / self.operations


def measure_handshakes(
    name: str, kind: str, pki: ServerPki, clients: list[ClientFiles], rounds: int, procs: int
) -> Row:
    trusted = tuple(c.cert_file for c in clients) if kind == "stdlib" else ()
    server = ServerProcess(ServerSpec(kind, pki.cert_file, pki.key_file, trusted, "greet"))
    try:
        pairs = [(c.cert_file, c.key_file) for c in clients] * rounds
        jobs: list[tuple[object, ...]] = [
            (server.port, pki.ca_file, pairs[i::procs]) for i in range(procs)
        ]
        operations, cpu, wall = run_clients(server, _prepare_handshakes, jobs)
    finally:
        server.stop()
    return Row(name, kind, operations, cpu, wall)


def measure_echo(kind: str, pki: ServerPki, client: ClientFiles, messages: int) -> Row:
    spec = ServerSpec(kind, pki.cert_file, pki.key_file, (client.cert_file,), "echo")
    server = ServerProcess(spec)
    try:
        job = (server.port, pki.ca_file, (client.cert_file, client.key_file), messages)
        operations, cpu, wall = run_clients(server, _prepare_echo, [job])
    finally:
        server.stop()
    return Row("echo 64 B messages", kind, operations, cpu, wall)


# --- report ---


def machine_info() -> list[str]:
    return machine_lines(
        f"ours: pyOpenSSL over {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}",
        dirty_note="+ uncommitted changes",
    )


def merge(rows: list[Row]) -> list[Row]:
    """Rows measured in several passes (interleaved, against drift) summed per measurement."""
    merged: dict[tuple[str, str], Row] = {}
    for r in rows:
        m = merged.get((r.name, r.server))
        merged[(r.name, r.server)] = (
            r
            if m is None
            else Row(r.name, r.server, m.operations + r.operations, m.cpu_s + r.cpu_s,
                     m.wall_s + r.wall_s)
        )  # fmt: skip
    return list(merged.values())


def render(rows: list[Row], quick: bool) -> tuple[str, bool]:
    rows = merge(rows)
    by_key = {(r.name, r.server): r for r in rows}
    lines = [
        "| measurement | server | ops | server CPU ms/op | wall ops/s | ours / stdlib |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        versus = ""
        other = by_key.get((r.name, "stdlib"))
        if r.server == "ours" and other is not None:
            versus = f"{r.cpu_ms_per_op / other.cpu_ms_per_op:.2f}"
        lines.append(
            f"| {r.name} | {r.server} | {r.operations} | {r.cpu_ms_per_op:.3f} "
            f"| {r.operations / r.wall_s:,.0f} | {versus} |"
        )
    same = by_key[(SAME_DN, "ours")].cpu_ms_per_op
    unique = by_key[(UNIQUE_DN, "ours")].cpu_ms_per_op
    ratio = same / unique
    ok = ratio <= SAME_DN_RATIO_LIMIT
    lines += [
        "",
        f"Same-DN / unique-DN handshake cost: {ratio:.2f} "
        f"({'within' if ok else 'OVER'} the {SAME_DN_RATIO_LIMIT} limit)"
        + (" [quick run: too few handshakes to judge]" if quick else ""),
    ]
    return "\n".join(lines), ok or quick


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: few operations")
    parser.add_argument("--procs", type=int, default=2, help="client processes for handshakes")
    args = parser.parse_args(argv)
    certs, passes, messages = (100, 1, 5_000) if args.quick else (1000, 2, 200_000)

    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        directory = Path(tmp)
        print(f"making certificates ({certs} same-DN, {certs} unique-DN, RSA)...", flush=True)
        pki = make_server_pki(directory)
        same_dn = [client_cert(directory, "device", name=f"same{i}") for i in range(certs)]
        unique_dn = [client_cert(directory, f"device-{i}") for i in range(certs)]
        rsa = [client_cert(directory, f"rsa-{i}", "rsa") for i in range(max(certs // 5, 20))]
        rsa_repeat = 1 if args.quick else 5

        # Every measurement runs in `passes` interleaved passes, summed afterwards, so that
        # drift (CPU frequency, busy neighbours on a shared host) hits all of them alike.
        one_pass: list[tuple[str, str, list[ClientFiles], int]] = [
            ("mTLS handshake, EC P-256 client", "ours", unique_dn, 1),
            ("mTLS handshake, EC P-256 client", "stdlib", unique_dn, 1),
            ("mTLS handshake, RSA-2048 client", "ours", rsa, rsa_repeat),
            ("mTLS handshake, RSA-2048 client", "stdlib", rsa, rsa_repeat),
            (SAME_DN, "ours", same_dn, 1),
            (UNIQUE_DN, "ours", unique_dn, 1),
        ]
        rows: list[Row] = []
        for number in range(1, passes + 1):
            for name, kind, clients, repeat in one_pass:
                print(f"pass {number}/{passes}: {name} / {kind}...", flush=True)
                rows.append(measure_handshakes(name, kind, pki, clients, repeat, args.procs))
            for kind in ("ours", "stdlib"):
                print(f"pass {number}/{passes}: echo / {kind}...", flush=True)
                rows.append(measure_echo(kind, pki, unique_dn[0], messages // passes))

    table, ok = render(rows, args.quick)
    info = machine_info()
    print()
    print(table)
    if not args.quick:
        RESULTS_DIR.mkdir(exist_ok=True)
        now = datetime.now(UTC)
        out = RESULTS_DIR / f"tls-{now:%Y-%m-%d-%H%M}.md"
        out.write_text(
            f"# TLS transport benchmark, {now:%Y-%m-%d %H:%M} UTC\n\n"
            + "\n".join(info)
            + f"\n- command: {' '.join([Path(sys.executable).name, '-m', 'bench.tls_bench'])}"
            + "\n\n"
            + table
            + "\n"
        )
        print(f"\nwritten to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
