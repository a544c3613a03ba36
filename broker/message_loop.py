"""amqtt's per-client message loop without its four tasks: a mixin for ``NanoIoTBroker``.

amqtt 0.12.1's ``Broker._client_message_loop`` wraps four waits in tasks (the disconnect, the
next SUBSCRIBE, the next UNSUBSCRIBE, the next message to deliver), ``asyncio.wait``s on them
and cancels three at the end: close to a tenth of the broker's CPU for a client that only
connects and disconnects. Here the three queues call back when an item arrives
(``WakingQueue``, installed by ``broker.handler`` and ``broker.session_state``), the disconnect
waiter wakes the loop through a done callback, and the loop awaits one ``asyncio.Event``.

Same handlers, same order as amqtt's loop: on each wake-up the disconnect first, then at most
one SUBSCRIBE, one UNSUBSCRIBE and one delivery; after a disconnect the loop ends. A
cancellation ends the loop quietly, as in amqtt. Queues that are not ``WakingQueue`` (a
session restored from the store) fall back to amqtt's loop.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from amqtt.broker import Broker
from amqtt.session import Session


class WakingQueue(asyncio.Queue[Any]):
    """An ``asyncio.Queue`` that calls ``on_put`` once an item is in it."""

    on_put: Callable[[], None] | None = None

    def put_nowait(self, item: Any) -> None:  # ``put`` ends here too
        super().put_nowait(item)
        if self.on_put is not None:
            self.on_put()


def _resolved(value: Any) -> "asyncio.Future[Any]":
    """What amqtt's handlers take: the finished waiter of ``value``."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


class LeanMessageLoop(Broker):  # type: ignore[misc]  # amqtt is untyped
    """Mixed into ``NanoIoTBroker`` before amqtt's ``Broker``."""

    async def _client_message_loop(self, client_session: Session, handler: Any) -> None:
        queues = (
            handler._pending_subscriptions,
            handler._pending_unsubscriptions,
            client_session.delivered_message_queue,
        )
        disconnect = handler._disconnect_waiter
        if disconnect is None or not all(isinstance(q, WakingQueue) for q in queues):
            await super()._client_message_loop(client_session, handler)
            return
        wake = asyncio.Event()
        for queue in queues:
            queue.on_put = wake.set
        disconnect.add_done_callback(lambda _: wake.set())
        try:
            await self._serve_queues(client_session, handler, disconnect, queues, wake)
        except asyncio.CancelledError:
            pass  # amqtt's loop ends quietly when cancelled, and so does this one
        finally:
            for queue in queues:
                if queue.on_put == wake.set:  # a newer connection of the session may own it
                    queue.on_put = None

    async def _serve_queues(
        self,
        session: Session,
        handler: Any,
        disconnect: "asyncio.Future[Any]",
        queues: tuple[WakingQueue, WakingQueue, WakingQueue],
        wake: asyncio.Event,
    ) -> None:
        subscriptions, unsubscriptions, deliveries = queues
        while True:
            wake.clear()
            connected = True
            if disconnect.done():
                await self._handle_disconnect(session, handler, disconnect)
                connected = False
            if not subscriptions.empty():
                subscription = _resolved(subscriptions.get_nowait())
                await self._handle_subscription(session, handler, subscription)
            if not unsubscriptions.empty():
                unsubscription = _resolved(unsubscriptions.get_nowait())
                await self._handle_unsubscription(session, handler, unsubscription)
            if not deliveries.empty():
                delivery = _resolved(deliveries.get_nowait())
                if not await self._handle_message_delivery(session, handler, delivery):
                    return
            if not connected:
                return
            if subscriptions.empty() and unsubscriptions.empty() and deliveries.empty():
                await wake.wait()
