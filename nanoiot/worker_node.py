"""A node of several broker workers (``nanoiot serve --workers N``): what the supervisor's
process holds besides the workers (``nanoiot.supervisor``) and the order it opens them in.

Opened before any worker starts, so workers never race on them: development server
credentials (generated once), the server's TLS context (a bad certificate fails here, once),
the admin token, the MQTT port (reserved), the store (migrated), this node on NATS, and the
admin HTTP server. Closed in reverse order.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from admin.app import start_admin
from admin.context import AdminContext
from admin.limits import HttpLimits
from admin.server import HttpServer
from admin.token import admin_token
from broker.cluster.link import ClusterLink
from broker.cluster.members import BUCKET as MEMBERS
from broker.cluster.members import MISSED_BEATS, MemberRegistry
from broker.cluster.metrics import MembersCollector
from broker.cluster.view import ClusterAdminView
from broker.devcerts import needs_development_credentials, with_development_credentials
from broker.tls import build_server_context
from nanoiot.node import announce_change, join_cluster
from nanoiot.settings import Settings
from nanoiot.store import open_store
from nanoiot.supervisor import Supervisor, reserve_port

log = logging.getLogger(__name__)


class WorkersView:
    """The workers as the admin surfaces see them (``admin.context.BrokerView``)."""

    def __init__(self, supervisor: Supervisor, cluster: ClusterLink) -> None:
        self._supervisor = supervisor
        self._cluster = cluster
        self._announcing: set[asyncio.Task[None]] = set()

    def connected_device_ids(self) -> set[str]:
        return set()  # held by the workers; gathered over NATS once sessions are shared

    def is_listening(self) -> bool:
        return self._supervisor.alive() > 0

    def session_store_problem(self) -> str:
        return ""  # each worker's own: its log and nanoiot_session_store_writable

    def changed(self) -> None:
        """Tell every worker to apply the store's change now (revocation within a second)."""
        task = asyncio.get_running_loop().create_task(announce_change(self._cluster))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)


@dataclass
class WorkerNode:
    settings: Settings  # as the workers got them: the bound port, development credentials
    supervisor: Supervisor
    http: HttpServer
    admin_token: str
    admin_token_created: bool
    development_credentials: bool

    @property
    def port(self) -> int:
        return self.settings.mqtt_ssl_bind_port


@contextlib.asynccontextmanager
async def worker_node(settings: Settings, count: int) -> AsyncIterator[WorkerNode]:
    """Everything of the node open and every worker listening; all stopped on exit."""
    development = needs_development_credentials(settings)
    if development:
        settings = with_development_credentials(settings)
    build_server_context(settings)  # a bad certificate or key: one error, before any worker
    token, created = admin_token(settings)
    port = reserve_port(settings.mqtt_ssl_bind_address, settings.mqtt_ssl_bind_port)
    settings = settings.model_copy(update={"mqtt_ssl_bind_port": port.getsockname()[1]})
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(port.close)
        store = await open_store(settings)
        stack.push_async_callback(store.close)
        cluster = await join_cluster(settings)
        stack.push_async_callback(cluster.close)
        members = await _watch_members(cluster, settings)
        stack.push_async_callback(members.stop)
        metrics = CollectorRegistry(auto_describe=True)  # the workers' own: on each worker
        metrics.register(MembersCollector(members.live))
        supervisor = Supervisor(settings, count)
        context = AdminContext(
            store=store, admin_token=token, broker=WorkersView(supervisor, cluster),
            metrics=metrics, cluster=ClusterAdminView(cluster, members),
            limits=HttpLimits.of(settings),
        )  # fmt: skip
        http = await start_admin(context, settings)
        stack.push_async_callback(http.stop)
        stack.push_async_callback(supervisor.stop)
        await supervisor.start_all()
        await cluster.answer_pings(workers=count, http_port=http.address[1])
        yield WorkerNode(settings, supervisor, http, token, created, development)


async def _watch_members(cluster: ClusterLink, settings: Settings) -> MemberRegistry:
    """The members bucket, watched: the supervisor holds no clients, so it writes no entry."""
    interval = settings.cluster_heartbeat_interval
    bucket = await cluster.key_value(MEMBERS, ttl=interval * MISSED_BEATS)
    members = MemberRegistry(cluster, bucket, interval)
    await members.start()
    return members
