"""A TCP proxy in front of the machine's NATS, for tests that cut one node off: the node
connects through it; ``cut`` closes its connections both ways (NATS sees the node's
connection end, the node loses NATS) and closes every new one at once until ``restore``."""

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

NATS_ADDRESS = ("127.0.0.1", 4222)


class Proxy:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._cut = False
        self._closed = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for sock in self._open:
                _shut(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = self._cut = True
            for sock in self._open:
                _shut(sock)
        self._listener.close()
        for thread in self._threads:
            thread.join(10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._cut:
                    client.close()
                    continue
                upstream = socket.create_connection(NATS_ADDRESS)
                self._open += [client, upstream]
                for source, sink in ((client, upstream), (upstream, client)):
                    thread = threading.Thread(target=_pump, args=(source, sink), daemon=True)
                    self._threads.append(thread)
                    thread.start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until either side ends, then end both."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    _shut(source)
    _shut(sink)
    source.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def nats_proxy() -> Iterator[Proxy]:
    proxy = Proxy()
    try:
        yield proxy
    finally:
        proxy.close()
