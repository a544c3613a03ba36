"""A node's connection to the cluster's NATS: joining with the configured credentials and TLS,
and NATS's errors turned into NanoIoT's at this edge.

Imported only when ``nats_url`` is set (``nanoiot.node``), so a single node never loads the
NATS client (the ``cluster`` extra). What a node does on NATS is named under its
``cluster_name``: ``<cluster>.nodes.ping`` is answered by every member with who it is, and
key-value buckets are ``<cluster>_<name>`` (``broker.cluster.kv``).

After the first connection the client reconnects by itself for as long as the node runs
(NATS keeps the subscriptions); losing and regaining NATS is logged once each way. The
key-value watches are remade on each reconnection (``broker.cluster.watches``): a restarted
server has forgotten their consumers.

Nothing is kept to be sent later while the connection is down: a write then fails at once
(``ClusterUnavailableError``), and what the client still held to send when the loss was
noticed is dropped. By default nats-py keeps both and sends them on the next connection,
after their callers took them as failed (timed out) and acted on it: a will entry's delete
replayed after the fencing left the entry to the departure of the run that ended lost that
will; a heartbeat, a claim or a forwarded message would land late likewise.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Self
from urllib.parse import urlsplit, urlunsplit

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.cluster.errors import nats_errors, plain
from broker.cluster.fit import payload_fit_problem
from broker.cluster.kv import KeyValue
from broker.cluster.nats_tls import nats_tls_context, readable
from broker.cluster.streams import open_bucket
from broker.cluster.watches import OpenWatches
from nanoiot.errors import ClusterError, ClusterUnavailableError, ConfigError
from nanoiot.settings import Settings

__all__ = ["ClusterLink", "node_name", "redacted"]

log = logging.getLogger(__name__)

# Bound on joining at start-up; afterwards reconnection goes on for as long as the node runs.
CONNECT_WITHIN: Final = 10.0
REQUEST_TIMEOUT: Final = 2.0
FLUSH_TIMEOUT: Final = 2  # nats-py takes whole seconds here
# A dead NATS connection is noticed within PING_INTERVAL x (MAX_OUTSTANDING_PINGS + 1) s.
PING_INTERVAL: Final = 5
MAX_OUTSTANDING_PINGS: Final = 2
RECONNECT_WAIT: Final = 1.0

Handler = Callable[[bytes, str | None], Awaitable[bytes | None]]


def node_name(settings: Settings) -> str:
    """``node_name``, or the host name with what NATS subjects cannot carry turned into -."""
    if settings.node_name:
        return settings.node_name
    host = socket.gethostname().split(".")[0] or "node"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:64]


def redacted(url: str) -> str:
    """The URL(s) without user and password, for logs and errors."""
    return ",".join(_without_userinfo(one.strip()) for one in url.split(","))


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


class ClusterLink:
    """This node (or worker) on the cluster's NATS; ``started``: when this process joined
    (its member entry's, which with its pid tells this process from a restarted one)."""

    def __init__(
        self,
        client: Client,
        cluster: str,
        member: str,
        events: "_Events | None" = None,
        *,
        replicas: int = 1,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.member = member  # unique in the cluster: node name, plus the worker number
        self.replicas = replicas  # copies of each JetStream stream (broker.cluster.streams)
        self.started = time.time()
        self._subscriptions: list[Subscription] = []
        self._events = events if events is not None else _Events()  # called by the client
        self._watches = OpenWatches()  # of this link's buckets
        self._events.back.append(self._watches.reconnected)

    @classmethod
    async def connect(cls, settings: Settings, *, worker: int | None = None) -> Self:
        """Join the cluster, or raise ``ConfigError`` / ``ClusterError`` in one line."""
        assert settings.nats_url is not None
        member = node_name(settings) + (f"-w{worker}" if worker is not None else "")
        options = _connection_options(settings)
        url = redacted(settings.nats_url)
        events = _Events()
        client = await _join(settings.nats_url, member, options, url, events)
        problem = payload_fit_problem(settings, client.max_payload, url)
        if problem is not None:
            await client.close()
            raise ConfigError(problem)
        log.info("joined cluster '%s' as %s through NATS %s", settings.cluster_name, member, url)
        return cls(
            client, settings.cluster_name, member, events, replicas=settings.cluster_replicas
        )

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time the connection to NATS is found lost."""
        self._events.lost.append(callback)

    def on_reconnected(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time the connection to NATS is back after a loss."""
        self._events.back.append(callback)

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up, as far as the client knows (a lost one is
        noticed at once when NATS closes it, after missed pings when the network drops)."""
        return bool(self.client.is_connected)

    def subject(self, *tokens: str) -> str:
        return ".".join((self.cluster, *tokens))

    async def taken_in(self) -> None:
        """Once the socket to NATS takes more: at once unless what was written to it waits
        in its buffer past the high-water mark. nats-py's ``publish`` never waits for the
        socket (``pending_size`` 0; its flusher hands the socket all it holds), so a sender
        faster than NATS takes in grew the buffer without bound, and a heartbeat written
        behind it came too late: the member fenced itself off (``broker.cluster.fence``)."""
        transport = self.client._transport
        if transport is None or not self.client.is_connected:
            return
        with contextlib.suppress(OSError, RuntimeError):  # lost: nats-py handles it
            await transport.drain()  # type: ignore[no-untyped-call]

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        with nats_errors(f"publishing on {subject}"):
            await self.client.publish(subject, payload, reply=reply)

    async def request(self, subject: str, payload: bytes) -> bytes:
        """One answer to ``payload`` on ``subject`` within REQUEST_TIMEOUT seconds."""
        with nats_errors(f"request on {subject}"):
            reply = await self.client.request(subject, payload, timeout=REQUEST_TIMEOUT)
        return reply.data

    async def answers(self, subject: str) -> bool | None:
        """Whether a member listening on ``subject`` answers an empty request: True; False
        when NATS says nobody listens there (its connection is gone); None when nobody
        answered within REQUEST_TIMEOUT (it may be stalled, or its host unreachable)."""
        with nats_errors(f"request on {subject}"):
            try:
                await self.client.request(subject, b"", timeout=REQUEST_TIMEOUT)
            except nats.errors.NoRespondersError:
                return False
            except nats.errors.TimeoutError:
                return None
        return True

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> None:
        """Call ``handler(payload, reply subject)`` for each message; what it returns is sent
        to the reply subject. A handler's error is logged, not raised into NATS's reader."""

        async def on_message(msg: Msg) -> None:
            try:
                answer = await handler(msg.data, msg.reply or None)
                if answer is not None and msg.reply:
                    await self.client.publish(msg.reply, answer)
            except Exception:
                log.exception("handling a message on %s", msg.subject)

        with nats_errors(f"subscribing to {subject}"):
            subscription = await self.client.subscribe(subject, queue=queue, cb=on_message)
            await self.flush()  # the server has it: nothing is missed
        self._subscriptions.append(subscription)

    async def flush(self) -> None:
        """Until NATS has everything this connection sent so far, a subscription or an
        unsubscription just made included. One ``flush`` of nats-py is not enough: it writes
        its PING straight to the socket, ahead of the commands its flusher task has not
        written yet (the SUB just made), so its PONG can come before NATS has them, and a
        member on another connection is told nobody listens (43 of 2,000 subscriptions on a
        loaded 2-core machine). The flusher, woken with that PING, writes them before its PONG
        can come back: a second PING, sent after that PONG, follows them (0 of 2,000)."""
        for _ in range(2):
            await self.client.flush(FLUSH_TIMEOUT)

    async def key_value(self, name: str, *, ttl: float | None = None) -> KeyValue:
        """The bucket ``<cluster>_<name>``, made if missing, with ``replicas`` copies;
        ``ttl``: entries expire that many seconds after their last write (a bucket-wide age:
        NATS 2.9 has no per-key TTL)."""
        bucket = f"{self.cluster}_{name}"
        with nats_errors(f"opening key-value bucket {bucket}"):
            js = self.client.jetstream(timeout=REQUEST_TIMEOUT)
            store = await open_bucket(js, bucket, self.replicas, ttl)
        return KeyValue(store, bucket, js, self._watches)

    async def answer_pings(self, **about: Any) -> None:
        """Reply to ``<cluster>.nodes.ping`` with this member's name and ``about``."""
        info = json.dumps({"member": self.member, "pid": os.getpid(), **about}).encode()

        async def pong(_payload: bytes, _reply: str | None) -> bytes:
            return info

        await self.subscribe(self.subject("nodes", "ping"), pong)

    async def ping_members(self, *, expect: int, within: float) -> list[dict[str, Any]]:
        """The answers of the members to a ping: ``expect`` of them, or what came ``within``
        seconds."""
        answers: asyncio.Queue[bytes] = asyncio.Queue()
        inbox = self.client.new_inbox()

        async def collect(msg: Msg) -> None:
            if msg.data:  # not a status message (no responders: nobody is there)
                answers.put_nowait(msg.data)

        with nats_errors("pinging the cluster's members"):
            subscription = await self.client.subscribe(inbox, cb=collect)
            try:
                await self.client.publish(self.subject("nodes", "ping"), b"", reply=inbox)
                found: list[dict[str, Any]] = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(within):
                        while len(found) < expect:
                            found.append(json.loads(await answers.get()))
                return found
            finally:
                await subscription.unsubscribe()

    async def close(self) -> None:
        """Send what is pending, then leave; never raises (the node is stopping anyway) but
        its own cancellation, and closes the connection even then."""
        try:
            await self._watches.close()
            with nats_errors("leaving the cluster"):
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await self.client.drain()
        except ClusterError as exc:
            log.debug("%s", exc)
        finally:
            if not self.client.is_closed:
                await self.client.close()


async def _join(
    servers: str,
    member: str,
    options: dict[str, Any],
    url: str,
    events: "_Events",
) -> Client:
    """Connect, retrying for CONNECT_WITHIN seconds; refused credentials end it at once.
    ``events``: told each time the connection is lost and back later."""
    last: list[Exception] = []
    refusals: list[Exception] = []
    refused = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        last.append(exc)
        if _is_refusal(exc):
            refusals.append(exc)
            refused.set()
        log.debug("NATS: %s", plain(exc))

    client = Client()
    connecting = asyncio.ensure_future(
        client.connect(
            servers=[one.strip() for one in servers.split(",")],
            name=f"nanoiot {member}",
            error_cb=on_error,
            disconnected_cb=_lost(client, url, events),
            reconnected_cb=_back(client, url, events),
            **options,
        )
    )
    waiting = asyncio.ensure_future(refused.wait())
    await asyncio.wait({connecting, waiting}, timeout=CONNECT_WITHIN, return_when="FIRST_COMPLETED")
    waiting.cancel()
    if connecting.done() and connecting.exception() is None:
        return client
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    await client.close()
    if refusals:
        # The refusal itself: the server then closes the socket, and the client may report
        # that reset ("connection reset by peer") after it, before we get to run.
        why = plain(refusals[0])
        raise ClusterError(f"NATS {url} refused this node: {why} (check the nats_* settings)")
    why = plain(last[-1]) if last else f"no answer within {CONNECT_WITHIN:g} s"
    raise ClusterUnavailableError(f"cannot reach NATS {url} (nats_url): {why}")


def _is_refusal(exc: Exception) -> bool:
    """NATS said no to who we are (credentials, or TLS it requires): retrying cannot help."""
    refusals = (
        nats.errors.AuthorizationError,
        nats.errors.SecureConnRequiredError,
        nats.errors.SecureConnWantedError,
        ssl.SSLError,  # a certificate either side refuses
    )
    return isinstance(exc, refusals) or "authorization violation" in str(exc).lower()


@dataclass
class _Events:
    """What is called when the connection to NATS is lost, and when it is back."""

    lost: list[Callable[[], None]] = field(default_factory=list)
    back: list[Callable[[], None]] = field(default_factory=list)


def _lost(client: Client, url: str, events: _Events) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        _drop_unsent(client)
        if not (client.is_closed or client.is_draining):  # not when we leave on purpose
            log.warning("lost the connection to NATS %s", url)
            _tell(events.lost)

    return callback


def _back(client: Client, url: str, events: _Events) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        if not (client.is_closed or client.is_draining):
            log.warning("reconnected to NATS %s", url)
            _tell(events.back)

    return callback


def _tell(callbacks: list[Callable[[], None]]) -> None:
    for call in callbacks:
        try:
            call()
        except Exception:
            log.exception("handling the connection to NATS lost or back")


def _drop_unsent(client: Client) -> None:
    """Drop what the client still holds to send when it noticed the connection lost: handed
    to it in the same moment, before it knew; its caller's request times out, and it is
    not to land later (nats-py would send it first thing on the next connection). The
    client has no call for this; ``pending_size`` 0 keeps anything else from piling up."""
    client._pending = []
    client._pending_data_size = 0


def _connection_options(settings: Settings) -> dict[str, Any]:
    """nats-py's keyword arguments for the configured credentials, TLS and timing."""
    options: dict[str, Any] = {
        "connect_timeout": 2,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,  # for as long as the node runs
        "reconnect_time_wait": RECONNECT_WAIT,
        # No buffer while the connection is down: a write fails at once rather than being
        # sent on the next connection, after its caller took it as failed.
        "pending_size": 0,
        "ping_interval": PING_INTERVAL,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
    }
    if settings.nats_creds_file is not None:
        readable(settings.nats_creds_file, "nats_creds_file")
        options["user_credentials"] = str(settings.nats_creds_file)
    if settings.nats_user is not None and settings.nats_password is not None:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password.get_secret_value()
    if settings.nats_token is not None:
        options["token"] = settings.nats_token.get_secret_value()
    tls = nats_tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    return options
