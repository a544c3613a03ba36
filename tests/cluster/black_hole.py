"""A TCP proxy in front of a server (the machine's PostgreSQL, by default) that a test turns
into a black hole: from ``swallow`` on, nothing passes either way on the connections open
(they stay open: a hung host, not a refusal) and new connections are accepted but never
reach the server, until ``release``, when what was held back goes on, in order."""

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.storage.pg import PG_HOST, PG_PORT


class BlackHole:
    def __init__(self, upstream: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._changed = threading.Condition()
        self._swallowing = False
        self._closed = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def swallow(self) -> None:
        with self._changed:
            self._swallowing = True

    def release(self) -> None:
        with self._changed:
            self._swallowing = False
            self._changed.notify_all()

    def _passing(self) -> bool:
        """Wait while swallowing; False once closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or not self._swallowing)
            return not self._closed

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            for sock in self._open:
                _shut(sock)
        _shut(self._listener)  # wakes its accept (closing it alone does not, on Linux)
        self._listener.close()
        for thread in self._threads:
            thread.join(10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._changed:
                self._open.append(client)
            thread = threading.Thread(target=self._connect, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _connect(self, client: socket.socket) -> None:
        if not self._passing():
            client.close()
            return
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            client.close()
            return
        with self._changed:
            self._open.append(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy while not swallowing (what came meanwhile is held back), until either side
        ends, then end both."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self._passing():
                    break
                sink.sendall(data)
        _shut(source)
        _shut(sink)
        source.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def black_hole(upstream: tuple[str, int] = (PG_HOST, PG_PORT)) -> Iterator[BlackHole]:
    hole = BlackHole(upstream)
    try:
        yield hole
    finally:
        hole.close()
