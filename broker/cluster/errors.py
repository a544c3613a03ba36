"""NATS's errors made NanoIoT's (``nanoiot.errors``), at the one edge where NATS is called.

A lost compare-and-set becomes ``ClusterConflictError``; anything that means NATS is not
there right now (no server, timeout, closed, reconnecting or lost connection, no responders,
JetStream unavailable, a stream whose servers are all down) becomes
``ClusterUnavailableError``; any other NATS error a ``ClusterError``. Each message is one
line naming what was being done.
"""

import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors

from nanoiot.errors import ClusterConflictError, ClusterError, ClusterUnavailableError

__all__ = ["nats_errors", "plain"]


@contextlib.contextmanager
def nats_errors(what: str) -> Iterator[None]:
    """Run NATS calls, raising ``ClusterError`` and its kinds instead of NATS's errors."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        # JetStream's "wrong last sequence" (10071): create, update or delete at a revision
        # that is no longer the key's. The client raises it under two classes.
        if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or exc.err_code == 10071:
            raise ClusterConflictError(f"{what}: the key exists or has changed") from None
        # "Stream is offline" (10118): no server that holds a copy of it is up (yet).
        if isinstance(exc, nats.js.errors.ServiceUnavailableError) or exc.err_code == 10118:
            raise ClusterUnavailableError(f"{what}: {plain(exc)}") from None
        raise ClusterError(f"{what}: {plain(exc)}") from None
    except nats.errors.OutboundBufferLimitError:  # nothing is kept to send later
        raise ClusterUnavailableError(f"{what}: the connection to NATS is down") from None
    except (
        nats.errors.TimeoutError,
        nats.errors.NoServersError,
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.NoRespondersError,
        TimeoutError,
        OSError,
    ) as exc:
        raise ClusterUnavailableError(f"{what}: {plain(exc)}") from None
    except nats.errors.Error as exc:
        raise ClusterError(f"{what}: {plain(exc)}") from None


def plain(exc: BaseException) -> str:
    """A NATS error's text without its "nats: " prefix (or its class name if it has none);
    JetStream's description and code for an error JetStream answered."""
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        code = f" (JetStream error {exc.err_code})" if exc.err_code else ""
        return f"{exc.description}{code}"
    text = str(exc).removeprefix("nats: ").strip().strip("'")
    return text or type(exc).__name__
