"""``nanoiot serve --workers N``: N broker processes on one MQTT port, one admin HTTP server.

One Python process uses one core; Mosquitto is single-threaded too, so several broker
processes are how one host gives a fleet more than a core. This process (the supervisor):

1. checks that more than one worker has a cluster to share (``nats_url``: a message a device
   publishes on one worker must reach subscribers on the others, through NATS);
2. settles what workers must not race on: development credentials, the store's migrations,
   the admin token, and the MQTT port, kept bound (not listening) with SO_REUSEPORT so that
   port 0 gives every worker the same free port and nothing else takes it between restarts;
3. starts the workers (``nanoiot.worker``, ``multiprocessing`` spawn) and waits until each
   listens, or stops them all with the first one's error;
4. serves the admin API and web UI; an API change is announced on NATS
   (``<cluster>.store.changed``) so the workers apply it at once;
5. restarts a worker that dies, after a back-off that doubles while it keeps dying young;
   forwards SIGHUP (certificate reload); on SIGTERM or SIGINT stops the workers (SIGTERM,
   SIGKILL after a grace period) and exits 0.
"""

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Final

from nanoiot import worker
from nanoiot.errors import ConfigError, NanoIoTError
from nanoiot.settings import Settings

log = logging.getLogger(__name__)

START_WITHIN: Final = 60.0  # a worker's start: NATS (10 s at most), store, listener
STOP_GRACE: Final = 20.0  # SIGTERM to SIGKILL: a worker saves its sessions meanwhile
FIRST_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 30.0
HEALTHY_AFTER: Final = 30.0
REAP_WITHIN: Final = 1.0  # a worker up this long has its back-off reset


def worker_count(workers: int | str, settings: Settings) -> int:
    """The number of workers (``auto``: the CPUs this process may use); more than one
    without ``nats_url`` is refused in one line saying why."""
    count = len(os.sched_getaffinity(0)) if workers == "auto" else int(workers)
    if count > 1 and not settings.nats_url:
        raise ConfigError(
            f"workers {count} needs nats_url: a message published on one worker must reach "
            "subscribers on the others, which goes through NATS (or run 1 worker)"
        )
    return count


def reserve_port(host: str, port: int) -> socket.socket:
    """Bound with SO_REUSEPORT and never listening: it takes no connection, but holds the
    port (and picks it, for port 0) for the workers, which bind it too."""
    from broker.listen import bind_mqtt_socket

    probe = bind_mqtt_socket(host, port, reuse_port=True)  # one-line error if taken
    family, address = probe.family, probe.getsockname()
    probe.close()
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind(address)
    return reserved


@dataclass
class Worker:
    index: int
    process: BaseProcess
    channel: Connection
    started: float
    ready: asyncio.Future[str]  # the pid once it listens, or ConfigError with its reason
    exited: asyncio.Future[int | None]  # its exit status, once it is gone


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self._loop = asyncio.get_running_loop()
        self._spawn = multiprocessing.get_context("spawn")
        self._backoff: dict[int, float] = {}
        self._restarts: set[asyncio.Task[None]] = set()

    async def start_all(self) -> None:
        """Every worker listening, or all stopped and the first failure raised."""
        for index in range(1, self.count + 1):
            self._start(index)
        try:
            async with asyncio.timeout(START_WITHIN):
                for one in list(self.workers.values()):
                    await one.ready
        except (NanoIoTError, TimeoutError) as exc:
            await self.stop()
            if isinstance(exc, NanoIoTError):
                raise
            raise ConfigError(f"the workers did not start within {START_WITHIN:g} s") from None

    def alive(self) -> int:
        return sum(one.ready.done() and not one.exited.done() for one in self.workers.values())

    def signal_all(self, signum: int) -> None:
        for one in self.workers.values():
            if one.process.pid is not None and not one.exited.done():
                os.kill(one.process.pid, signum)

    async def stop(self) -> None:
        """SIGTERM to every worker, SIGKILL to those still there after STOP_GRACE seconds."""
        self.stopping = True
        for task in self._restarts:
            task.cancel()
        self.signal_all(signal.SIGTERM)
        pending = [one.exited for one in self.workers.values()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_GRACE)
            if late:
                log.warning("%d worker(s) did not stop within %g s: killed", len(late), STOP_GRACE)
                self.signal_all(signal.SIGKILL)
                await asyncio.wait(pending, timeout=STOP_GRACE)

    # --- one worker -----------------------------------------------------------------

    def _start(self, index: int) -> None:
        receive, send = self._spawn.Pipe(duplex=False)
        process = self._spawn.Process(
            target=worker.run,
            args=(self.settings, index, send, os.getpid()),
            name=f"nanoiot-worker-{index}",
            daemon=False,
        )
        process.start()
        send.close()  # the child's end: EOF on ours when the child is gone
        future = self._loop.create_future
        one = Worker(index, process, receive, self._loop.time(), future(), future())
        self.workers[index] = one
        one.ready.add_done_callback(_quiet)
        self._loop.add_reader(receive.fileno(), self._on_message, one)
        self._loop.add_reader(process.sentinel, self._on_exit, one)

    def _on_message(self, one: Worker) -> None:
        """What the worker said: ("ready", pid) or ("failed", reason); EOF once it is gone."""
        try:
            while one.channel.poll():
                kind, detail = one.channel.recv()
                if one.ready.done():
                    continue
                if kind == "ready":
                    log.info("worker %d (pid %s) is listening", one.index, detail)
                    one.ready.set_result(str(detail))
                else:
                    one.ready.set_exception(ConfigError(f"worker {one.index}: {detail}"))
        except (EOFError, OSError):
            self._loop.remove_reader(one.channel.fileno())

    def _on_exit(self, one: Worker) -> None:
        self._loop.remove_reader(one.process.sentinel)
        self._on_message(one)  # a reason it sent just before it exited comes first
        self._loop.remove_reader(one.channel.fileno())
        # Its sentinel closes as it exits, a moment before it can be reaped: wait for that.
        one.process.join(REAP_WITHIN)
        code = one.process.exitcode
        one.exited.set_result(code)
        if not one.ready.done():
            one.ready.set_exception(ConfigError(f"worker {one.index} exited ({_how(code)})"))
        one.channel.close()
        if self.stopping or self.workers.get(one.index) is not one:
            return
        delay = self._next_backoff(one)
        log.warning(
            "worker %d (pid %s) exited (%s); restarting it in %g s",
            one.index, one.process.pid, _how(code), delay,
        )  # fmt: skip
        task = self._loop.create_task(self._restart_later(one.index, delay))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    def _next_backoff(self, one: Worker) -> float:
        if self._loop.time() - one.started >= HEALTHY_AFTER:
            self._backoff[one.index] = FIRST_BACKOFF
        else:
            previous = self._backoff.get(one.index)
            self._backoff[one.index] = (
                FIRST_BACKOFF if previous is None else min(previous * 2, MAX_BACKOFF)
            )
        return self._backoff[one.index]

    async def _restart_later(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)  # the back-off itself, not a wait for an event
        if not self.stopping:
            self._start(index)


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"


def _quiet(future: asyncio.Future[str]) -> None:
    """Marks a start failure as seen: ``start_all`` raises the first one; the others, and a
    restarted worker's, are logged by the worker's exit."""
    if not future.cancelled():
        future.exception()
