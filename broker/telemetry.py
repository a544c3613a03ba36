"""What the broker reports about authentication: a log line, a count, an auth event.

Every refusal is counted by reason. The first few refusals per client address and reason in
each interval log one line and record one auth event each; the rest are counted and reported
as one line and one event when the interval ends (``broker.repeats``), so a flood of refused
CONNECTs cannot fill the disk. An accepted CONNECT records its event every time (the audit
trail, kept within its retention), but its "connected" line is limited the same way per
device: a device's certificate used to connect in a loop wrote one line per handshake.
Client-chosen text (client id, user name, topic) is cut and escaped (``nanoiot.text``): it
can neither flood a line nor forge one. Events are written by a background writer, so a slow
or unreachable database never delays a CONNACK (events are dropped and counted when the queue
is full), and the writer keeps ``auth_events`` within its retention (age and row count) as it
goes.
"""

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from auth.decision import Decision
from broker.authn import ConnectRequest
from broker.repeats import LogLimiter, RepeatCounter, Summary, SummaryTimer
from nanoiot.errors import StoreError
from nanoiot.tasks import cancel_and_wait
from nanoiot.text import printable
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
_DETAIL = 512  # characters of a decision's detail kept (it quotes client-chosen text)
_PRUNE_EVERY_S = 60.0


@dataclass(frozen=True)
class AuthLogPolicy:
    repeats: int = 5  # refusals per address and reason reported one by one per interval
    interval: float = 60.0
    max_age: timedelta = timedelta(days=90)  # auth events kept at most this long
    max_rows: int = 1_000_000  # and at most this many


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class AuthLog:
    def __init__(
        self,
        store: CredentialStore,
        *,
        queue_size: int = 10_000,
        policy: AuthLogPolicy | None = None,
    ) -> None:
        self._store = store
        self.policy = policy or AuthLogPolicy()
        self._queue: asyncio.Queue[NewAuthEvent] = asyncio.Queue(queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._repeats = RepeatCounter(repeats=self.policy.repeats, interval=self.policy.interval)
        # Each host's count is reported and its key forgotten when its interval ends.
        self._summaries = SummaryTimer(self._repeats, self._report, _loop_time)
        # "connected" lines, per device: "device 'x': 40 more connections in 60 s".
        self._connected = LogLimiter(
            log, interval=self.policy.interval, repeats=self.policy.repeats
        )
        self._pruned_at = float("-inf")
        self.counts: Counter[str] = Counter()
        self.dropped = 0

    def allowed(self, decision: Decision, request: ConnectRequest, client_id: str) -> None:
        self.counts[decision.reason.value] += 1
        holder = decision.holder
        owner = "?" if holder is None else (
            f"{'application' if holder.application else 'device'} '{holder.device_name}'"
        )  # fmt: skip
        self._connected.info(
            owner, "connections", "connected %s from %s, client id '%s'",
            printable(decision.detail, _DETAIL), request.remote, printable(client_id),
        )  # fmt: skip
        self._enqueue(AuthOutcome.ALLOWED, decision, request)

    def refused(self, decision: Decision, request: ConnectRequest, *, mqtt5: bool = False) -> None:
        """``mqtt5``: the client speaks MQTT 5, so it read the reason code (and string) of
        its refusal; the event says which code."""
        reason = decision.reason.value
        self.counts[reason] += 1
        reported = self._repeats.report(request.remote, reason, _loop_time())
        self._summaries.arm()
        if not reported:
            return
        code = f"MQTT 5 reason code {decision.reason_code:#04x}" if mqtt5 else (
            f"CONNACK {decision.connack:d}"
        )  # fmt: skip
        log.warning(
            "refused %s (client id '%s'): %s [%s, %s]",
            request.remote, printable(request.client_id), printable(decision.detail, _DETAIL),
            reason, code,
        )  # fmt: skip
        self._enqueue(AuthOutcome.DENIED, decision, request, f" [{code}]" if mqtt5 else "")

    def hosts_held(self) -> int:
        """Hosts (and reasons) whose refusals are counted in the current interval."""
        return len(self._repeats)

    def _report(self, summary: Summary) -> None:
        text = (
            f"{summary.count} more refusals from {summary.address} in {summary.seconds:g} s, "
            "not reported one by one"
        )
        log.warning("%s [%s]", text, summary.reason)
        event = NewAuthEvent(
            at=datetime.now(UTC), outcome=AuthOutcome.DENIED,
            reason=f"{summary.reason}: {text}", device_id=None, fingerprint=None,
            remote_address=summary.address,
        )  # fmt: skip
        self._put(event)

    def _enqueue(
        self, outcome: AuthOutcome, decision: Decision, request: ConnectRequest, note: str = ""
    ) -> None:
        holder = decision.holder
        event = NewAuthEvent(
            at=datetime.now(UTC), outcome=outcome,
            reason=f"{decision.reason.value}: {printable(decision.detail, _DETAIL)}{note}",
            device_id=uuid.UUID(holder.device_id) if holder else None,
            fingerprint=decision.fingerprint, remote_address=request.remote,
        )  # fmt: skip
        self._put(event)

    def _put(self, event: NewAuthEvent) -> None:
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
        """Report what waits for a summary, write what is queued (briefly), then stop."""
        self._summaries.flush()
        self._connected.flush()
        if self._writer is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 2.0)
        await cancel_and_wait(self._writer)
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
            else:
                await self._prune()
            finally:
                for _ in batch:
                    queue.task_done()

    async def _prune(self) -> None:
        """Keep ``auth_events`` within its retention: checked at most once a minute, after a
        write (no writes, no new rows to make room for)."""
        now = asyncio.get_running_loop().time()
        if now - self._pruned_at < _PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            deleted = await self._store.prune_auth_events(
                older_than=datetime.now(UTC) - self.policy.max_age, keep=self.policy.max_rows
            )
        except StoreError as exc:
            log.debug("auth events not pruned: %s", exc)
            return
        if deleted:
            log.info("auth events: %d past their retention deleted", deleted)
