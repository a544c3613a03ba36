"""A TCP proxy in front of the machine's NATS, for tests that cut one node off or make its
NATS slow: the node connects through it; ``cut`` closes its connections both ways (NATS sees
the node's connection end, the node loses NATS) and closes every new one at once until
``restore``; ``delay`` holds back what NATS sends to the node (its route and member watches,
the answers to its writes), in order, while what the node sends goes through at once; with
``subjects``, only the messages on those subjects are held back (a lagging key-value watch
while the rest comes at once); ``mute`` drops what the node sends from then on, its
connection open (as a node that dies before what it wrote leaves it), until it closes it;
``hold`` leaves what the node sends unread until ``release`` (a NATS that does not keep up:
the node's socket buffers fill); ``pace`` lets what the node sends reach NATS one protocol line
at a time, in order (a slow path to NATS: a command the node wrote later reaches it later)."""

import contextlib
import functools
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
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
        self._delay = 0.0
        self._subjects: tuple[bytes, ...] = ()
        self._muted = False
        self._pace = 0.0
        self._dropped = b""  # what the node sent since ``mute``
        self._dropping = threading.Condition()
        self._flowing = threading.Event()  # cleared: what the node sends is not read
        self._flowing.set()
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

    def delay(self, seconds: float, subjects: tuple[str, ...] = ()) -> None:
        """What NATS sends to the node from now on reaches it ``seconds`` later (0: at once,
        behind what is still held back). With ``subjects`` (prefixes), only the messages on
        those: the rest goes at once, ahead of them."""
        self._subjects = tuple(prefix.encode() for prefix in subjects)
        self._delay = seconds

    def mute(self) -> None:
        """What the node sends from now on never reaches NATS (``until_dropped`` sees it)."""
        with self._dropping:
            self._muted = True

    def hold(self) -> None:
        """What the node sends from now on is not read (a chunk read already waits) until
        ``release``."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def pace(self, seconds: float) -> None:
        """Each protocol line the node sends from now on reaches NATS ``seconds`` after the
        one before it (0: at once)."""
        self._pace = seconds

    def until_dropped(self, data: bytes) -> None:
        """Once the node sent ``data`` since ``mute`` (dropped); AssertionError if it did not
        within 10 s."""
        with self._dropping:
            assert self._dropping.wait_for(lambda: data in self._dropped, 10), self._dropped

    def _dropped_if_muted(self, data: bytes) -> bool:
        self._flowing.wait()
        with self._dropping:
            if self._muted:
                self._dropped += data
                self._dropping.notify_all()
            return self._muted

    def _delay_of(self, subject: bytes | None) -> float | None:
        """How long an operation is held back; None: not at all, ahead of those held."""
        if not self._subjects or (subject is not None and subject.startswith(self._subjects)):
            return self._delay
        return None

    def close(self) -> None:
        self._flowing.set()  # a held pump ends with its sockets
        with self._lock:
            self._closed = self._cut = True
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
            with self._lock:
                if self._cut:
                    client.close()
                    continue
                upstream = socket.create_connection(NATS_ADDRESS)
                self._open += [client, upstream]
                late = _Late(upstream, client, self._delay_of)
                sent = functools.partial(
                    _pump, client, upstream, self._dropped_if_muted, lambda: self._pace
                )
                for target in (sent, late.read, late.write):
                    thread = threading.Thread(target=target, daemon=True)
                    self._threads.append(thread)
                    thread.start()


class _Late:
    """A copy from ``source`` (a NATS server) to ``sink`` in which each protocol operation
    goes ``delay(subject)`` seconds (as it was when the operation came; ``subject`` None for
    those that are not messages) after it came, in the order they came; one whose delay is
    None goes at once, ahead of those held back."""

    def __init__(
        self,
        source: socket.socket,
        sink: socket.socket,
        delay: Callable[[bytes | None], float | None],
    ) -> None:
        self._source = source
        self._sink = sink
        self._delay = delay
        self._held: deque[tuple[float, bytes]] = deque()  # (when it goes, the data)
        self._now: deque[bytes] = deque()  # not held back
        self._changed = threading.Condition()
        self._ended = False
        self._buffer = b""

    def read(self) -> None:
        with contextlib.suppress(OSError):
            while data := self._source.recv(65536):
                self._buffer += data
                operations = list(self._operations())
                with self._changed:
                    for subject, operation in operations:
                        delay = self._delay(subject)
                        if delay is None:
                            self._now.append(operation)
                        else:
                            self._held.append((time.monotonic() + delay, operation))
                    self._changed.notify()
        with self._changed:
            self._ended = True
            self._changed.notify()

    def _operations(self) -> Iterator[tuple[bytes | None, bytes]]:
        """The complete operations in the buffer, taken from it: (a message's subject or
        None, the operation's bytes)."""
        while (end := self._buffer.find(b"\r\n")) >= 0:
            line = self._buffer[:end]
            size, subject = end + 2, None
            if line.startswith((b"MSG ", b"HMSG ")):
                words = line.split()
                subject = words[1]
                size += int(words[-1]) + 2  # the payload (headers included) and its CRLF
            if len(self._buffer) < size:
                return
            yield subject, self._buffer[:size]
            self._buffer = self._buffer[size:]

    def write(self) -> None:
        """Send each piece when it is due; once the source ended and all went, end both."""
        while (data := self._next()) is not None:
            try:
                self._sink.sendall(data)
            except OSError:
                break
        _shut(self._source)
        _shut(self._sink)
        self._source.close()
        self._sink.close()

    def _next(self) -> bytes | None:
        with self._changed:
            while True:
                if self._now:
                    return self._now.popleft()
                if not self._held:
                    if self._ended:
                        return None
                    self._changed.wait()
                    continue
                due, data = self._held[0]
                left = due - time.monotonic()
                if left <= 0:
                    self._held.popleft()
                    return data
                self._changed.wait(left)  # a timer of the proxy's own, not a test's sleep


def _pump(
    source: socket.socket,
    sink: socket.socket,
    dropped: Callable[[bytes], bool],
    pace: Callable[[], float],
) -> None:
    """Copy (what is not ``dropped``; paced lines ``pace()`` seconds apart) until either side
    ends, then end both."""
    last = 0.0  # when the last paced line went
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            if dropped(data):
                continue
            if not pace():
                sink.sendall(data)
                continue
            for line in data.splitlines(keepends=True):
                last = max(time.monotonic(), last + pace())
                time.sleep(max(0.0, last - time.monotonic()))  # the path's own slowness
                sink.sendall(line)
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
