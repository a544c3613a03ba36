"""What every route works on, built once per application and kept on ``app.state``."""

from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry
from starlette.requests import Request

from admin.limits import HttpLimits
from admin.live_sessions import LiveSessions
from admin.ratelimit import FailureLimiter
from nanoiot.members import ClusterView
from storage.interface import CredentialStore


class BrokerView(Protocol):
    """The broker as the admin surfaces see it, when they run in its process."""

    def connected_device_ids(self) -> set[str]:
        """Ids (str of the UUID) of the devices with at least one live connection."""

    def is_listening(self) -> bool: ...

    def session_store_problem(self) -> str:
        """Why the broker cannot save session changes (PUBACKs wait); "" when it can."""

    def changed(self) -> None:
        """A change was just written to the store: apply it to live sessions now, without
        waiting for the next poll of the change feed."""


@dataclass
class AdminContext:
    store: CredentialStore
    admin_token: str
    # None under ``nanoiot api``: changes then reach brokers through the change feed.
    broker: BrokerView | None = None
    metrics: CollectorRegistry | None = None  # the broker's, when it runs in this process
    # The nodes (one, or a cluster's members) and where devices are connected; None under
    # ``nanoiot api``, which runs no broker.
    cluster: ClusterView | None = None
    limits: HttpLimits = field(default_factory=HttpLimits)  # the http_* settings
    # Bad admin tokens per address, and the web UI's sign-ins: bounded by ``limits``.
    limiter: FailureLimiter = field(init=False)
    web_sessions: LiveSessions = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = FailureLimiter(max_tracked=self.limits.max_failure_addresses)
        self.web_sessions = LiveSessions(self.limits.max_web_sessions)

    def changed(self) -> None:
        if self.broker is not None:
            self.broker.changed()

    def connected_device_ids(self) -> set[str]:
        return self.broker.connected_device_ids() if self.broker is not None else set()

    async def connections(self, device_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Device id -> (member, client id) of each live connection of ``device_ids``."""
        if self.cluster is not None:
            return dict(await self.cluster.connections(device_ids))
        connected = self.connected_device_ids()  # where is not known: connected or not
        return {device_id: [] for device_id in device_ids if device_id in connected}


def context_of(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.context
    return context
