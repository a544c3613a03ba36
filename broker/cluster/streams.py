"""The cluster's JetStream streams, made or brought to ``cluster_replicas`` copies.

Everything the cluster keeps in JetStream (its key-value buckets, which are streams named
``KV_<cluster>_<name>``, and the parked stream ``<cluster>_parked``) is made here with
``cluster_replicas`` copies, each on another NATS server of the NATS cluster. With one copy
(JetStream's default) the server holding a stream takes its data along when it stops: session
claims, wills, and parked frames whose publishers were already acknowledged.

A stream that exists with another number of copies is updated to the setting: a clustered
JetStream moves a stream to more or fewer servers in place, data kept, while it stays in use;
the start goes on once the stream elected its leader on its new servers (until then requests
its leader answers time out). A new copy is brought up to date out of band, a moment later:
readers placed on it meanwhile are the reader's concern (``broker.cluster.parked``).
Whatever NATS refuses (more copies than servers to hold them, JetStream on a single server,
a server that cannot change the count) ends the start in one line naming the setting and
what to do. A single server must be caught here before asking: it accepts an update to three
copies and then reports them, while it keeps one.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue as NatsKeyValue

from nanoiot.errors import ClusterError

__all__ = ["open_bucket", "open_stream"]

log = logging.getLogger(__name__)

# JetStream's error codes (err_code) for a count of copies it cannot keep.
_NOT_CLUSTERED: Final = 10074  # "replicas > 1 not supported in non-clustered mode"
_TOO_FEW_SERVERS: Final = frozenset({10005, 10023})  # no suitable peers; insufficient resources
_NOT_UPDATABLE: Final = 10061  # servers before 2.7: "replicas configuration can not be updated"
# JetStream's answers when another client made the stream between our look and our making of
# it: its name taken with another configuration (10058); or its subjects taken (10065): two
# creations at once can both pass nats-server 2.9's look for the name, the later then finds
# the earlier's subjects (members starting together: twice in one full test run).
_MADE_MEANWHILE: Final = frozenset({10058, 10065})
# Seconds a rescaled stream is waited for until it has its leader again (an election takes
# a Raft election timeout, 4-9 s, if the first vote splits), and between looks.
LED_WITHIN: Final = 20.0
LED_POLL: Final = 0.1


async def open_bucket(
    js: JetStreamContext, bucket: str, replicas: int, ttl: float | None
) -> NatsKeyValue:
    """The key-value bucket, made with ``replicas`` copies if missing, else brought to them
    (made by another member meanwhile: as that member made it)."""
    stream = f"KV_{bucket}"
    info = await _info(js, stream)
    if info is None:
        make = partial(js.create_key_value, bucket=bucket, history=1, ttl=ttl, replicas=replicas)
        info = await _made(js, stream, replicas, make)
    if info is not None:
        await _rescale(js, info, replicas)
    return await js.key_value(bucket)


async def open_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    """The stream, made as ``config`` says if missing, else brought to it (its limits and its
    number of copies)."""
    assert config.name is not None
    replicas = config.num_replicas or 1
    info = await _info(js, config.name)
    if info is None:
        info = await _made(js, config.name, replicas, partial(js.add_stream, config))
        if info is None:
            return
    with _refusals(config.name, replicas, _copies(info)):
        _check_clustered(info, replicas)
        await js.update_stream(config)
    if _copies(info) != replicas:
        _log_rescaled(config.name, _copies(info), replicas)
        await _led(js, config.name, replicas)


async def _made(
    js: JetStreamContext, stream: str, replicas: int, make: Callable[[], Awaitable[Any]]
) -> api.StreamInfo | None:
    """None once ``make`` made the missing ``stream``; the stream as it is if another client
    made it meanwhile (members starting together), for the caller to bring to the setting."""
    try:
        with _refusals(stream, replicas, None):
            await make()
        return None
    except nats.js.errors.APIError as exc:
        info = await _info(js, stream) if exc.err_code in _MADE_MEANWHILE else None
        if info is None:
            raise  # not a race: subjects another stream of the account holds, say
        log.info("stream %s: made by another member meanwhile", stream)
        return info


async def _info(js: JetStreamContext, stream: str) -> api.StreamInfo | None:
    try:
        return await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return None


async def _rescale(js: JetStreamContext, info: api.StreamInfo, replicas: int) -> None:
    """``info``'s stream with ``replicas`` copies, the rest of its configuration as it is."""
    _check_clustered(info, replicas)
    copies = _copies(info)
    if copies == replicas:
        return
    name = info.config.name or "?"
    with _refusals(name, replicas, copies):
        await js.update_stream(info.config.evolve(num_replicas=replicas))
    _log_rescaled(name, copies, replicas)
    await _led(js, name, replicas)


async def _led(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Until the rescaled ``stream`` has a leader on ``replicas`` servers again, or
    ``LED_WITHIN`` seconds. Its group of servers is made anew: until it elected its leader
    (measured: a quarter of a second), requests its leader answers (reading a message,
    ``broker.cluster.parked``) go unanswered and time out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LED_WITHIN
    while loop.time() < deadline:
        with contextlib.suppress(nats.errors.Error):
            placed = (await js.stream_info(stream)).cluster
            if placed is None or (placed.leader and len(placed.replicas or []) + 1 == replicas):
                return
        await asyncio.sleep(LED_POLL)  # polled: JetStream tells no one of an election
    log.warning("stream %s: no leader on %d servers within %g s", stream, replicas, LED_WITHIN)


def _copies(info: api.StreamInfo | None) -> int | None:
    return None if info is None else (info.config.num_replicas or 1)


def _log_rescaled(stream: str, was: int | None, now: int) -> None:
    if was is not None and was != now:
        log.warning("stream %s: copies %d -> %d (cluster_replicas)", stream, was, now)


def _check_clustered(info: api.StreamInfo, replicas: int) -> None:
    """A stream on a JetStream that is not clustered has no cluster information."""
    if replicas > 1 and info.cluster is None:
        raise ClusterError(_single_server(info.config.name or "?", replicas))


def _single_server(stream: str, replicas: int) -> str:
    return (
        f"cluster_replicas is {replicas}, but NATS runs JetStream on a single server, which "
        f"cannot keep {replicas} copies of stream {stream}: run a NATS cluster of at least "
        f"{replicas} JetStream servers, or set cluster_replicas to 1"
    )


@contextlib.contextmanager
def _refusals(stream: str, replicas: int, copies: int | None) -> Iterator[None]:
    """JetStream's refusal of ``replicas`` copies of ``stream`` (which has ``copies`` now, or
    does not exist yet: None) as one ``ClusterError`` line saying what to do; any other
    error goes on to ``broker.cluster.errors.nats_errors``."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        why = exc.description or "refused"
        if exc.err_code == _NOT_CLUSTERED:
            raise ClusterError(_single_server(stream, replicas)) from None
        if exc.err_code in _TOO_FEW_SERVERS:
            raise ClusterError(
                f"cluster_replicas is {replicas}, but NATS cannot place {replicas} copies of "
                f"stream {stream} ({why}): it needs {replicas} JetStream servers up in its "
                "cluster; add servers or lower cluster_replicas"
            ) from None
        if exc.err_code == _NOT_UPDATABLE and copies is not None:
            raise ClusterError(
                f"cluster_replicas is {replicas}, but NATS cannot change stream {stream} from "
                f"{copies} copies ({why}): set cluster_replicas to {copies}, or delete the "
                f"stream (its data is lost: nats stream rm {stream}) and start again"
            ) from None
        raise
