"""The sessions a broker ends for their expiry, as it logs them: a test waits on that log line
(MQTT 5.0 §3.1.2.11.2, and ``persistent_session_expiry`` for 3.1.1) instead of polling the
registry."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Queue

from tests.logwatch import attached


class Expiries(logging.Handler):
    """The store keys (``device id/client id``) of the sessions the broker ends for their
    expiry, in order: ``Registry._expired``, and ``Registry.restore`` for one that expired
    while the broker was down."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: Queue[str] = Queue()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if str(record.msg).startswith("session %s expired") and isinstance(args, tuple):
            self.keys.put(str(args[0]))


@contextmanager
def watching_expiries() -> Iterator[Expiries]:
    """An ``Expiries`` on the registry's logger (INFO, where expiries are logged) meanwhile."""
    with attached(Expiries(), "broker.registry") as handler:
        yield handler
