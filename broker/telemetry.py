"""What the broker reports about authentication: a log line, a count, an auth event.

Every refusal logs one line with its reason and is counted by reason; every decision is
recorded in the store's auth-event log by a background writer, so a slow or unreachable
database never delays a CONNACK (events are dropped and counted when the queue is full).
"""

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from datetime import UTC, datetime

from auth.decision import Decision
from broker.authn import ConnectRequest
from nanoiot.errors import StoreError
from storage.interface import CredentialStore
from storage.records import AuthOutcome, NewAuthEvent

log = logging.getLogger("nanoiot.auth")


# Events written per transaction at most: one commit per connect cost SQLite more CPU than
# the rest of the connect's database work; a batch shares it. The writer lingers this long
# after the first event of a batch, so that a stream of connects makes batches, not one
# small transaction each (an event reaches the store at most this much later). Each batch
# costs a transaction and a few hops to the database thread, whatever its size: at 0.2 s a
# stream of connects shares them four times as widely as at 0.05 s.
_BATCH = 500
_LINGER_S = 0.2


class AuthLog:
    def __init__(self, store: CredentialStore, *, queue_size: int = 10_000) -> None:
        self._store = store
        self._queue: asyncio.Queue[NewAuthEvent] = asyncio.Queue(queue_size)
        self._writer: asyncio.Task[None] | None = None
        self.counts: Counter[str] = Counter()
        self.dropped = 0

    def allowed(self, decision: Decision, request: ConnectRequest, client_id: str) -> None:
        self.counts[decision.reason.value] += 1
        log.info("connected %s from %s, client id '%s'", decision.detail, request.remote, client_id)
        self._enqueue(AuthOutcome.ALLOWED, decision, request)

    def refused(self, decision: Decision, request: ConnectRequest, *, mqtt5: bool = False) -> None:
        """``mqtt5``: the client speaks MQTT 5, so it read the reason code (and string) of
        its refusal; the event says which code."""
        self.counts[decision.reason.value] += 1
        code = f"MQTT 5 reason code {decision.reason_code:#04x}" if mqtt5 else (
            f"CONNACK {decision.connack:d}"
        )  # fmt: skip
        log.warning(
            "refused %s (client id '%s'): %s [%s, %s]",
            request.remote, request.client_id, decision.detail, decision.reason.value, code,
        )  # fmt: skip
        self._enqueue(AuthOutcome.DENIED, decision, request, f" [{code}]" if mqtt5 else "")

    def _enqueue(
        self, outcome: AuthOutcome, decision: Decision, request: ConnectRequest, note: str = ""
    ) -> None:
        holder = decision.holder
        event = NewAuthEvent(
            at=datetime.now(UTC), outcome=outcome,
            reason=f"{decision.reason.value}: {decision.detail}{note}",
            device_id=uuid.UUID(holder.device_id) if holder else None,
            fingerprint=decision.fingerprint, remote_address=request.remote,
        )  # fmt: skip
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def flushed(self) -> None:
        """Return once every decision made so far is in the store (tests and the web UI's
        'recent events' read it right after a connect)."""
        await self._queue.join()

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_events(), name="nanoiot-auth-events")

    async def stop(self) -> None:
        """Write what is queued (briefly), then stop."""
        if self._writer is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 2.0)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    async def _write_events(self) -> None:
        """Write what is queued, in batches: the events that arrive while one transaction
        commits go into the next one."""
        queue = self._queue
        while True:
            batch = [await queue.get()]
            if queue.qsize() < _BATCH:
                await asyncio.sleep(_LINGER_S)
            while len(batch) < _BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._store.record_auth_events(batch)
            except StoreError as exc:
                self.dropped += len(batch)
                log.debug("%d auth events not recorded: %s", len(batch), exc)
            finally:
                for _ in batch:
                    queue.task_done()
