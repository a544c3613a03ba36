"""Assembling a running broker: store, sessions, TLS listener, change feed, ``$SYS``.

``RunningBroker.start(settings)`` is what ``nanoiot serve`` and the end-to-end tests use: it
returns once the listener accepts connections (``port`` is the bound port, so tests pass 0)
and ``stop()`` closes everything it opened, in reverse order.
"""

import asyncio
import contextlib
import functools
import gc
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Self

from OpenSSL import SSL

from auth.acl import Acl, parse_rule
from broker.authn import Authenticator, certificate_policy
from broker.connection_limit import (
    ConnectingPerHost,
    ConnectionLimit,
    quiet_accept_errors,
    usable_connections,
)
from broker.core import Broker, BrokerConfig
from broker.devcerts import needs_development_credentials, with_development_credentials
from broker.listen import bind_mqtt_socket
from broker.mqtt.limits import Limits
from broker.password_gate import PasswordGate, PasswordPolicy
from broker.proxy_protocol import TrustedProxies
from broker.restore import Restoration
from broker.retained import RetainLimits
from broker.revocation import RevocationFollower
from broker.session_store import SqlSessionStore
from broker.slowed_hosts import SlowingPolicy
from broker.sys_topics import SysTopics, member_figures
from broker.telemetry import AuthLog, AuthLogPolicy
from broker.tls import build_server_context
from broker.tls_failures import TlsFailureLog
from broker.tls_reload import ServerCertificateReloader
from broker.transport import TlsServer, start_tls_server
from nanoiot.settings import Settings
from nanoiot.store import open_store
from nanoiot.text import host_port
from storage.sql import SqlCredentialStore

if TYPE_CHECKING:
    from broker.cluster.fence import Fencing
    from broker.cluster.link import ClusterLink
    from broker.cluster.router import ClusterRouter
    from broker.router import LocalRouter

log = logging.getLogger(__name__)
JOURNAL_CLOSE_S = 5.0  # bound on saving the last session changes at shutdown


def acl_from_settings(settings: Settings) -> Acl:
    """The default topic rules plus the operator's ``acl_rules`` (checked at start-up)."""
    rules = [
        parse_rule(rule, where=f"acl_rules[{index}]")
        for index, rule in enumerate(settings.acl_rules)
    ]
    return Acl(rules)


def password_gate(settings: Settings) -> PasswordGate:
    """The bounds on MQTT basic password checks, from the ``password_*`` settings."""
    return PasswordGate(
        PasswordPolicy(
            workers=settings.password_check_workers,
            queue=settings.password_check_queue,
            per_address=settings.password_checks_per_address,
            free_failures=settings.password_failures_before_throttle,
            max_block=settings.password_throttle_max_seconds,
            tracked=settings.password_throttle_addresses,
            log_interval=settings.auth_log_interval_seconds,
        )
    )


def auth_log_policy(settings: Settings) -> AuthLogPolicy:
    """How refusals are aggregated and auth events kept, from the ``auth_*`` settings."""
    return AuthLogPolicy(
        repeats=settings.auth_log_repeats,
        interval=settings.auth_log_interval_seconds,
        max_age=timedelta(days=settings.auth_events_max_age_days),
        max_rows=settings.auth_events_max_rows,
    )


def broker_config(settings: Settings) -> BrokerConfig:
    """The broker's limits and policies from the settings of the same names."""
    limits = Limits(
        max_packet_size=settings.max_packet_size,
        max_inflight=settings.max_inflight_messages,
        max_queued_messages=settings.max_queued_messages,
        max_queued_bytes=settings.max_queued_bytes,
        max_queued_messages_per_device=settings.device_bound(
            "max_queued_messages_per_device", "max_queued_messages"
        ),
        max_queued_bytes_per_device=settings.device_bound(
            "max_queued_bytes_per_device", "max_queued_bytes"
        ),
        max_awaiting_pubrel=settings.max_awaiting_pubrel,
        max_filters_per_subscribe=settings.max_filters_per_subscribe,
        max_session_expiry=settings.max_session_expiry_interval,
        persistent_session_expiry=settings.persistent_session_expiry,
        max_keep_alive=settings.max_keep_alive,
        max_topic_aliases=settings.max_topic_aliases,
        reason_strings=settings.reason_strings,
    )
    retain = RetainLimits(
        max_messages=settings.max_retained_messages,
        max_bytes=settings.max_retained_bytes,
        max_messages_per_device=settings.max_retained_messages_per_device,
        max_bytes_per_device=settings.max_retained_bytes_per_device,
        max_topic_levels=settings.max_topic_levels,
    )
    return BrokerConfig(
        strict_client_id=settings.strict_client_id,
        connect_timeout=settings.tls_handshake_timeout,
        ack_timeout=settings.ack_timeout,
        auth_timeout=settings.auth_timeout,
        max_outgoing_buffer=settings.max_outgoing_buffer,
        max_unadmitted_bytes=settings.max_unadmitted_bytes,
        max_subscriptions=settings.max_subscriptions,
        max_subscription_bytes=settings.max_subscription_bytes,
        max_subscription_bytes_per_device=settings.device_bound(
            "max_subscription_bytes_per_device", "max_subscription_bytes"
        ),
        max_topic_levels=settings.max_topic_levels,
        max_share_name_length=settings.max_share_name_length,
        max_shared_subscription_bytes=settings.max_shared_subscription_bytes,
        max_shared_subscription_bytes_per_device=settings.max_shared_subscription_bytes_per_device,
        max_sessions_per_device=settings.max_sessions_per_device,
        max_unsaved_session_changes=settings.max_unsaved_session_changes,
        max_subacks_waiting=settings.cluster_max_subacks_waiting,
        auth_throttle=SlowingPolicy(
            free_failures=settings.auth_failures_before_throttle,
            rate=settings.auth_throttled_connects_per_second,
            tracked=settings.auth_throttle_addresses,
        ),
        limits=limits,
        retain=retain,
    )


@dataclass
class RunningBroker:
    settings: Settings
    store: SqlCredentialStore
    broker: Broker
    sessions: SqlSessionStore
    listener: TlsServer
    follower: RevocationFollower
    auth_log: AuthLog
    sys_topics: SysTopics
    development_credentials: bool
    tls_failures: TlsFailureLog
    tls_reload: ServerCertificateReloader
    restoration: Restoration
    cluster_router: "ClusterRouter | None" = None  # with a cluster: routing across it
    fencing: "Fencing | None" = None  # with a cluster: given up while cut off from NATS

    @property
    def port(self) -> int:
        return self.listener.port

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        acl: Acl | None = None,
        reuse_port: bool = False,
        cluster: "ClusterLink | None" = None,
    ) -> Self:
        """``reuse_port``: one of several worker processes sharing the MQTT port;
        ``cluster``: this process on the cluster's NATS, to route messages across it."""
        development = needs_development_credentials(settings)
        if development:
            settings = with_development_credentials(settings)
        context = build_server_context(settings)  # fails before anything is opened
        acl = acl or acl_from_settings(settings)  # so does a bad topic rule
        # So does a port in use: one line naming the settings, nothing to unwind.
        sock = bind_mqtt_socket(
            settings.mqtt_ssl_bind_address,
            settings.mqtt_ssl_bind_port,
            reuse_port=reuse_port,
            keepalive_idle=settings.tcp_keepalive_idle,
        )
        try:
            return await cls._start(settings, acl, context, sock, development, cluster)
        except BaseException:
            sock.close()
            raise

    @classmethod
    async def _start(
        cls,
        settings: Settings,
        acl: Acl,
        context: SSL.Context,
        sock: socket.socket,
        development: bool,
        cluster: "ClusterLink | None",
    ) -> Self:
        # A step that fails closes what the steps before it opened, in reverse order.
        async with contextlib.AsyncExitStack() as opened:
            store = await open_store(settings)
            opened.push_async_callback(store.close)
            authenticator = Authenticator(
                store, policy=certificate_policy(settings), passwords=password_gate(settings)
            )
            auth_log = AuthLog(store, policy=auth_log_policy(settings))
            kept = settings.cluster_qos2_completed_kept if cluster is not None else 0
            sessions = SqlSessionStore(
                store, completed_kept=kept, persistent_expiry=settings.persistent_session_expiry
            )
            opened.push_async_callback(sessions.close, JOURNAL_CLOSE_S)
            routers: list[ClusterRouter] = []
            broker = Broker(
                authenticator, acl, auth_log, broker_config(settings), store=sessions,
                router=None if cluster is None else _cluster_router(cluster, settings, routers),
            )  # fmt: skip
            cluster_router = routers[0] if routers else None
            fencing: Fencing | None = None
            if cluster_router is not None:  # the others' routes, before any subscription
                await cluster_router.start(broker.retained, broker.registry)
                # Before any departure.
                _survivor_decides(cluster_router, authenticator, settings.cluster_max_will_lookups)
                figures = functools.partial(member_figures, broker, cluster_router)
                await cluster_router.start_members(
                    settings.cluster_heartbeat_interval, figures, sock.getsockname()[1],
                    broker.registry,
                )  # fmt: skip
                broker.metrics.registry.register(cluster_router.collector())
                opened.push_async_callback(cluster_router.stop)
                fencing = _fencing(cluster_router, broker, settings.cluster_max_held_wills)
                opened.push_async_callback(fencing.stop)
            auth_log.start()
            opened.push_async_callback(auth_log.stop)
            follower = RevocationFollower(store, broker, authenticator)
            await follower.start()
            opened.push_async_callback(follower.stop)
            broker.certificate_due = follower.certificate_due
            members = cluster_router.members if cluster_router is not None else None
            sys_topics = SysTopics(
                broker, settings.sys_interval, members.live if members is not None else None,
                members.name if members is not None else "",
            )  # fmt: skip
            sys_topics.start()
            opened.push_async_callback(sys_topics.stop)
            quiet_accept_errors(asyncio.get_running_loop())
            tls_failures = TlsFailureLog()  # failed handshakes: logged plainly, in /metrics
            broker.metrics.registry.register(tls_failures)
            tls_failures.classified = broker.auth_throttle.handshake_failed
            broker.auth_throttle.balancers = TrustedProxies(settings.proxy_protocol_trusted)
            opened.callback(tls_failures.close)
            listener = await start_tls_server(
                context,
                settings.mqtt_ssl_bind_address,
                settings.mqtt_ssl_bind_port,
                handshake_timeout=settings.tls_handshake_timeout,
                on_open=broker.open,
                sock=sock,
                handshake_failed=tls_failures.report,
                proxy_trusted=broker.auth_throttle.balancers,
                shut_out=_shut_out(broker, authenticator),
                connection_limit=ConnectionLimit(
                    usable_connections(settings.max_connections),
                    lambda: broker.metrics.count_limit("max_connections"),
                ),
                connecting=ConnectingPerHost(
                    settings.max_connecting_per_address,
                    lambda: broker.metrics.count_limit("max_connecting_per_address"),
                ),
            )
            opened.push_async_callback(listener.__aexit__)
            # The previous run's persistent sessions, behind the open listener (a client
            # connecting meanwhile gets its own first: broker.restore).
            restoration = broker.start_restoring()
            opened.push_async_callback(restoration.stop)
            tls_reload = ServerCertificateReloader(
                settings, listener.use_context, interval=settings.tls_reload_interval
            )
            tls_reload.start()
            opened.pop_all()  # all open: stop() closes them
        running = cls(
            settings, store, broker, sessions, listener, follower, auth_log, sys_topics,
            development, tls_failures, tls_reload, restoration, cluster_router, fencing,
        )  # fmt: skip
        log.info("listening on %s", host_port(settings.mqtt_ssl_bind_address, listener.port))
        if settings.proxy_protocol_trusted:
            log.info("PROXY protocol v2 required from %s", settings.proxy_protocol_trusted)
        # Everything made so far (modules, the broker, the store) lives as long as the
        # broker: out of the collector's reach, the collections each connect's garbage
        # triggers stay small instead of traversing every object of the process. Garbage
        # first, so that nothing dead is kept forever.
        gc.collect()
        gc.freeze()
        return running

    async def stop(self) -> None:
        """Refuse new connections, close live ones, save the sessions, close the store."""
        await self.tls_reload.stop()
        if self.fencing is not None:  # not while the node stops
            await self.fencing.stop()
        await self.restoration.stop()
        self.broker.close_all()
        self.listener.close()
        await self.listener.wait_closed()
        if self.cluster_router is not None:
            await self.cluster_router.stop()
        self.tls_failures.close()
        await self.sys_topics.stop()
        await self.follower.stop()
        await self.sessions.close(within=JOURNAL_CLOSE_S)
        self.broker.client_log.flush()  # the counts of lines held back, not lost
        self.broker.device_lines.flush()
        self.broker.authenticator.passwords.flush()
        await self.auth_log.stop()
        await self.store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _shut_out(broker: Broker, authenticator: Authenticator) -> Callable[[str], bool]:
    """Whether the listener drops a client address's connection before its handshake: its
    host is shut out for failed password checks, or slowed for refused connects and over its
    rate. The password throttle is asked first: a connection it drops
    takes none of the host's slots."""
    passwords, slowed = authenticator.passwords.shut_out, broker.auth_throttle.drops
    return lambda address: passwords(address) or slowed(address)


def _fencing(router: "ClusterRouter", broker: Broker, max_held_wills: int) -> "Fencing":
    """This member's fencing while cut off from NATS, started, in ``/metrics``."""
    from broker.cluster.fence import Fencing

    assert router.members is not None
    assert router.wills is not None
    router.wills.max_held = max_held_wills
    assert router.claims is not None
    fencing = Fencing(router.members, router.wills, router.claims, broker)
    fencing.router = router
    fencing.start()
    broker.registry.fenced_now = fencing.fenced_now  # asked before acting on what comes in
    broker.metrics.registry.register(fencing)
    return fencing


def _survivor_decides(router: "ClusterRouter", authenticator: Authenticator, at_once: int) -> None:
    """A dead member's client's will is decided again before it is published here, at most
    ``at_once`` at a time."""
    from broker.cluster.will_decision import Decisions

    assert router.wills is not None
    router.wills.survivor.refusal = Decisions(authenticator, at_once)
    router.wills.survivor.in_flight = at_once


def _cluster_router(
    cluster: "ClusterLink", settings: Settings, made: "list[ClusterRouter]"
) -> "Callable[[LocalRouter], ClusterRouter]":
    """The broker's router factory in a cluster; the NATS client is imported only here."""
    from broker.cluster.router import ClusterRouter

    def make(local: "LocalRouter") -> ClusterRouter:
        router = ClusterRouter(
            local, cluster, local.store, settings.max_forward_buffer,
            settings.cluster_handover_window, settings.cluster_max_parked_bytes,
            settings.cluster_qos2_ids_kept, settings.cluster_replay_wait,
            (settings.cluster_compaction_interval, settings.cluster_delete_markers_kept),
        )  # fmt: skip
        made.append(router)
        return router

    return make
