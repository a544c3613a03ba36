"""One NanoIoT node: the broker and, in the same event loop, the admin HTTP server.

``Node.start(settings)`` is what ``nanoiot serve`` runs: the broker first (it owns the store),
then the admin application over that store, so the API's changes reach live sessions at once
(``BrokerView.changed`` wakes the change-feed follower instead of waiting for its next poll).
With ``nats_url`` set the node first joins the cluster (``broker.cluster``, imported only
then), so an unreachable NATS stops the start before anything else is opened.
"""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from admin.context import AdminContext
from admin.limits import HttpLimits
from admin.server import HttpServer, LazyApp
from admin.token import admin_token
from broker.server import RunningBroker
from broker.sys_topics import member_figures
from nanoiot.members import ClusterView, Member
from nanoiot.settings import Settings
from nanoiot.text import host_port

if TYPE_CHECKING:
    from fastapi import FastAPI

    from broker.cluster.link import ClusterLink

log = logging.getLogger(__name__)


class _LiveBroker:
    """The broker as the admin surfaces see it (``admin.context.BrokerView``)."""

    def __init__(self, running: RunningBroker, cluster: "ClusterLink | None") -> None:
        self._running = running
        self._cluster = cluster
        self._announcing: set[asyncio.Task[None]] = set()

    def connected_device_ids(self) -> set[str]:
        return set(self._running.broker.live)

    def is_listening(self) -> bool:
        return self._running.listener.is_serving()

    def session_store_problem(self) -> str:
        status = self._running.sessions.status()
        if status.writable:
            return ""
        return (
            f"{status.unsaved} changes unsaved for {status.unwritable_for:.0f} s, "
            f"acknowledgements wait: {status.problem}"
        )

    def changed(self) -> None:
        """Apply the store's change now, here and (in a cluster) on every other member,
        instead of at their next poll of the change feed: revocation within a second."""
        self._running.follower.wake()
        if self._cluster is not None:
            task = asyncio.get_running_loop().create_task(announce_change(self._cluster))
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)


class SingleNode:
    """This node alone as the admin's ``ClusterView``: no NATS, so no cluster name."""

    cluster = ""

    def __init__(self, name: str, running: RunningBroker) -> None:
        self.member = name
        self._running = running
        self._started = time.time()
        self._host = socket.gethostname()

    def members(self) -> list[Member]:
        figures = member_figures(self._running.broker)
        me = Member(
            self.member, self._host, os.getpid(), self._started, 0.0, figures, self._running.port
        )
        return [me]

    async def connections(self, device_ids: Collection[str]) -> Mapping[str, list[tuple[str, str]]]:
        live = self._running.broker.registry.live
        return {
            device_id: sorted((self.member, c.peer.key[1]) for c in live[device_id] if c.peer)
            for device_id in device_ids
            if live.get(device_id)
        }


def _cluster_view(settings: Settings, running: RunningBroker) -> ClusterView:
    router = running.cluster_router
    if router is None or router.members is None:
        return SingleNode(settings.node_name or socket.gethostname().split(".")[0], running)
    from broker.cluster.view import ClusterAdminView

    return ClusterAdminView(router.link, router.members)


@dataclass
class Node:
    broker: RunningBroker
    http: HttpServer
    admin_token: str
    admin_token_created: bool  # generated at this start: print it once
    cluster: "ClusterLink | None" = None  # with nats_url: this node on the cluster's NATS

    @property
    def http_url(self) -> str:
        return f"http://{host_port(*self.http.address)}"

    @classmethod
    async def start(cls, settings: Settings) -> Self:
        token, created = admin_token(settings)  # a bad token setting fails before anything
        cluster = await join_cluster(settings) if settings.nats_url else None
        try:
            running = await RunningBroker.start(settings, cluster=cluster)
        except BaseException:
            if cluster is not None:
                await cluster.close()
            raise
        try:
            context = AdminContext(
                store=running.store,
                admin_token=token,
                broker=_LiveBroker(running, cluster),
                metrics=running.broker.metrics.registry,
                cluster=_cluster_view(settings, running),
                limits=HttpLimits.of(settings),
            )
            http = await HttpServer.start(
                _admin_app(context), settings.http_bind_address, settings.http_port,
                trusted_proxies=settings.http_trusted_proxies, limits=context.limits,
            )  # fmt: skip
        except BaseException:
            await running.stop()
            if cluster is not None:
                await cluster.close()
            raise
        if cluster is not None:
            await listen_for_changes(cluster, running)
            await cluster.answer_pings(mqtt_port=running.port)
        return cls(running, http, token, created, cluster)

    async def stop(self) -> None:
        """HTTP first (no change arrives for a broker that is stopping), then the broker."""
        try:
            await self.http.stop()
        finally:
            try:
                await self.broker.stop()
            finally:
                if self.cluster is not None:
                    await self.cluster.close()


def _admin_app(context: AdminContext) -> LazyApp:
    """The admin application, built by its first request: a broker nobody administers or
    scrapes does not hold FastAPI and the API's models (about 11 MiB)."""

    def build() -> "FastAPI":
        from admin.app import create_app

        return create_app(context)

    return LazyApp(build)


async def join_cluster(settings: Settings, worker: int | None = None) -> "ClusterLink":
    """This process on the cluster's NATS; the NATS client is imported here, only then."""
    from broker.cluster.link import ClusterLink

    return await ClusterLink.connect(settings, worker=worker)


async def announce_change(cluster: "ClusterLink") -> None:
    """Tell every member that the store changed (``listen_for_changes``)."""
    from nanoiot.errors import ClusterError

    try:
        await cluster.publish(cluster.subject("store", "changed"), b"")
    except ClusterError as exc:
        log.warning("%s (the other members see the change at their next poll)", exc)


async def listen_for_changes(cluster: "ClusterLink", running: RunningBroker) -> None:
    """Apply a change another member announced now, not at the next poll of the feed."""

    async def store_changed(_payload: bytes, _reply: str | None) -> None:
        running.follower.wake()

    await cluster.subscribe(cluster.subject("store", "changed"), store_changed)
