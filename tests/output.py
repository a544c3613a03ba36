"""A process's output read line by line in a thread, so that a test waits for the line that
says what it waits for (a server ready, a client connected), with a bound, never for time."""

import re
import subprocess
import threading
from collections.abc import Iterator
from typing import IO

WAIT = 30.0  # bound on any one wait: a process's start may include a fresh interpreter


class Output:
    """A process's stderr (or another of its streams), line by line, that a test can wait on."""

    def __init__(self, process: "subprocess.Popen[str]", stream: "IO[str] | None" = None) -> None:
        self.lines: list[str] = []
        self.ended = False  # the stream reached its end: no line comes any more
        self._changed = threading.Condition()
        stream = stream if stream is not None else process.stderr
        assert stream is not None
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: "Iterator[str]") -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def join(self) -> None:
        self._thread.join(WAIT)  # ends at end of stream

    def wait_for(self, pattern: str, *, after: int = 0, within: float = WAIT) -> re.Match[str]:
        """The first line from index ``after`` on that matches ``pattern``; AssertionError if
        none came within ``within`` seconds or the stream ended without one."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next(filter(None, map(regex.search, self.lines[after:])), None)

        with self._changed:
            self._changed.wait_for(lambda: self.ended or found() is not None, within)
            match = found()
        if match is None:
            raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}")
        return match
