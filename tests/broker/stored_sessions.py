"""A persistent session on a real SQLite store, routed to without a broker: the router tests'
common start (the fixtures ``sqlite_store``, in tests/conftest.py, and ``sessions``, in this
package's, give the stores)."""

from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.router import LocalRouter
from broker.session_store import SqlSessionStore
from broker.sessions import BrokerSession
from storage.sql import SqlCredentialStore


async def subscribed_away(
    sessions: SqlSessionStore, credentials: SqlCredentialStore, qos: int
) -> tuple[LocalRouter, BrokerSession]:
    """Device "meter"'s persistent session subscribed to a/# at ``qos``, on a router of its
    own and in the store, its client away."""
    device = await credentials.create_device("meter")
    router = LocalRouter(sessions, Limits(), BrokerMetrics())
    session = BrokerSession((str(device.id), "c"), "meter", persistent=True)
    sessions.save_session(session)
    router.subscribe(session, "a/#", Subscription(qos))
    sessions.subscribe(session, "a/#", Subscription(qos))
    return router, session
