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
from dataclasses import dataclass

from auth.decision import Decision
from broker.authn import ConnectRequest
from nanoiot.errors import StoreError
from storage.interface import CredentialStore
from storage.records import AuthOutcome

log = logging.getLogger("nanoiot.auth")


@dataclass(frozen=True)
class _Event:
    outcome: AuthOutcome
    reason: str
    device_id: str | None
    fingerprint: str | None
    remote: str


class AuthLog:
    def __init__(self, store: CredentialStore, *, queue_size: int = 10_000) -> None:
        self._store = store
        self._queue: asyncio.Queue[_Event] = asyncio.Queue(queue_size)
        self._writer: asyncio.Task[None] | None = None
        self.counts: Counter[str] = Counter()
        self.dropped = 0

    def allowed(self, decision: Decision, request: ConnectRequest, client_id: str) -> None:
        self.counts[decision.reason.value] += 1
        log.info("connected %s from %s, client id '%s'", decision.detail, request.remote, client_id)
        self._enqueue(AuthOutcome.ALLOWED, decision, request)

    def refused(self, decision: Decision, request: ConnectRequest) -> None:
        self.counts[decision.reason.value] += 1
        log.warning(
            "refused %s (client id '%s'): %s [%s, CONNACK %d]",
            request.remote, request.client_id, decision.detail, decision.reason.value,
            decision.connack,
        )  # fmt: skip
        self._enqueue(AuthOutcome.DENIED, decision, request)

    def _enqueue(self, outcome: AuthOutcome, decision: Decision, request: ConnectRequest) -> None:
        holder = decision.holder
        event = _Event(
            outcome, f"{decision.reason.value}: {decision.detail}",
            holder.device_id if holder else None,
            decision.fingerprint, request.remote,
        )  # fmt: skip
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

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
        while True:
            event = await self._queue.get()
            try:
                await self._store.record_auth_event(
                    outcome=event.outcome,
                    reason=event.reason,
                    device_id=uuid.UUID(event.device_id) if event.device_id else None,
                    fingerprint=event.fingerprint,
                    remote_address=event.remote,
                )
            except StoreError as exc:
                self.dropped += 1
                log.debug("auth event not recorded: %s", exc)
            finally:
                self._queue.task_done()
