"""Following the store's change feed, so revocations reach live sessions within a second.

A change made anywhere (the CLI in another process, the admin API, another broker node) is a
row in the ``changes`` table; we look a few times a second and, for every device a change
touches, decide its live connections again with exactly the
checks a new connection would get. Those now refused are closed without their wills
(a revoked device must not be able to publish one last message), and so is dropped the will
that one of its sessions, its client away, holds for its Will Delay Interval (MQTT 5.0
§3.1.3.2.2): decided again with the connection that set it.

The same re-decision closes a connection whose certificate expired meanwhile, when its
timer says so (``broker.cert_expiry``).

A batch costs what it touches, not the fleet: the changed devices' connections and sessions
are found by the broker's per-device indexes (``Registry.live``, ``SessionTable.of_device``),
since provisioning a fleet is a change per device, a batch every quarter second. Only a
trusted CA's change, which may decide any connection, looks at them all.

A look is first the store's change marker (the feed's highest seq, read without the ORM in
some ten microseconds), and the feed's range query only when that moved: an idle broker must
cost next to nothing.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from auth.decision import Decision, Reason
from broker import cert_expiry
from broker.authn import Authenticator
from broker.last_will import DelayedWill
from broker.peer import Peer
from broker.sessions import BrokerSession
from nanoiot.errors import StoreError
from nanoiot.tasks import cancel_and_wait
from storage.interface import CredentialStore
from storage.records import Change, ChangeKind

if TYPE_CHECKING:
    from broker.client import MqttClient

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25
_PAGE = 1000  # changes read at once


class LiveBroker(Protocol):
    """What the follower needs of the broker (``broker.core.Broker``)."""

    def live_peers(self, device_ids: set[str] | None = None) -> list[Peer]: ...
    def waiting_wills(
        self, device_ids: set[str] | None
    ) -> list[tuple[BrokerSession, DelayedWill]]: ...
    def drop_will(self, session: BrokerSession, will: DelayedWill, reason: str) -> None: ...
    def note_changes(self, device_ids: set[str] | None) -> None: ...
    def forget_device(self, device_id: str) -> None: ...
    def kick_device(
        self, device_id: str, reason: str, which: Callable[[Peer], bool] | None = None
    ) -> int: ...


class RevocationFollower:
    def __init__(
        self,
        store: CredentialStore,
        broker: LiveBroker,
        authenticator: Authenticator,
        *,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._store = store
        self._broker = broker
        self._authenticator = authenticator
        self._interval = interval
        self._seq = 0
        self._marker: int | None = None  # the store's change marker when the feed was read
        self._task: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()  # set by the interval's timer or by wake()
        self._woken = False
        self.applied = asyncio.Event()  # set after each batch: tests wait on it, not on time
        # Live clients whose certificate expired, to decide again (``certificate_due``). One
        # entry per timer that fired, and a client's timer is cancelled when it ends: at most
        # one per connection.
        self._due: list[MqttClient] = []

    async def start(self) -> None:
        self._seq = await self._store.last_change_seq()
        self._task = asyncio.create_task(self._follow(), name="nanoiot-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def certificate_due(self, client: "MqttClient") -> None:
        """A certificate ``client`` presented reached its notAfter: decide it again now."""
        self._due.append(client)
        self._tick.set()

    def wake(self) -> None:
        """Poll now: a change was written in this process (the admin API), so its effect on
        live sessions need not wait for the next interval."""
        self._woken = True
        self._tick.set()

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            woken, self._woken = self._woken, False
            self._tick.clear()
            try:
                await self._look(woken)
            except StoreError as exc:
                # Connected devices keep working while the database is away; we catch up later.
                log.warning("change feed unavailable: %s", exc)
            await self._decide_due()
            # A timer, not asyncio.wait_for: that makes a task and a timeout for every wait,
            # which was most of what an idle broker still did.
            timer = loop.call_later(self._interval, self._tick.set)
            try:
                await self._tick.wait()
            finally:
                timer.cancel()

    async def _look(self, woken: bool) -> None:
        # The marker is read before the feed: a commit between the two moves it again, so
        # the next look reads the feed once more rather than missing that commit.
        marker = await self._store.change_marker()
        if marker is not None and marker == self._marker and not woken:
            self.applied.set()
            self.applied = asyncio.Event()
            return
        changes = await self.poll_once()
        # A full page may have more behind it: read the feed again next time.
        self._marker = marker if len(changes) < _PAGE else None

    async def poll_once(self) -> Sequence[Change]:
        changes = await self._store.changes_since(self._seq, _PAGE)
        if changes:
            self._seq = changes[-1].seq
            await self._apply(changes)
        self.applied.set()
        self.applied = asyncio.Event()
        return changes

    async def _apply(self, changes: Sequence[Change]) -> None:
        devices: set[str] = set()
        deleted: set[str] = set()
        recheck_ca_issued = False
        for change in changes:
            if change.kind is ChangeKind.CA_CHANGED:
                self._authenticator.forget_trusted_cas()
                recheck_ca_issued = True
            elif change.device_id is not None and change.kind in _RECHECK:
                devices.add(str(change.device_id))
                if change.kind is ChangeKind.DEVICE_DELETED:
                    deleted.add(str(change.device_id))
        # Connects whose lookup is running now look again (Broker.decide).
        self._broker.note_changes(None if recheck_ca_issued else devices)
        # Only the changed devices' connections and sessions are looked up (the broker's
        # per-device indexes): a batch costs what it touches, not the fleet.
        for peer in self._broker.live_peers(None if recheck_ca_issued else devices):
            await self._recheck(peer)
        if devices or recheck_ca_issued:
            await self._recheck_wills(None if recheck_ca_issued else devices)
        for device_id in deleted:
            self._broker.forget_device(device_id)

    async def _recheck_wills(self, devices: set[str] | None) -> None:
        """Drop the waiting wills of these devices' sessions (None: any) that the connection
        which set them could no longer set."""
        for session, will in self._broker.waiting_wills(devices):
            refusal, _ = await self._refusal(will.peer)
            if refusal is not None:
                self._broker.drop_will(session, will, refusal)

    async def _decide_due(self) -> None:
        due, self._due = self._due, []
        for client in due:
            peer = client.peer
            if client.ended or peer is None:
                continue
            decided = await self._recheck(peer)
            if not client.ended:  # still allowed: a CA it sent but needs not ran out, say
                cert_expiry.arm(client, retry=not decided)

    async def _recheck(self, peer: Peer) -> bool:
        """Decide ``peer`` again and close it if now refused; False if the store could not
        answer (the device stays connected)."""
        refusal, answered = await self._refusal(peer)
        if refusal is not None:
            self._broker.kick_device(peer.device_id, refusal, which=lambda p: p is peer)
        return answered

    async def _refusal(self, peer: Peer) -> tuple[str | None, bool]:
        """(why ``peer`` would be refused now, None if it would not; whether the store
        answered: if not, that is no revocation)."""
        return refusal_of(await self._authenticator.authenticate(peer.request), peer.device_id)


def refusal_of(decision: Decision, device_id: str) -> tuple[str | None, bool]:
    """(why a connection of ``device_id`` decided again as ``decision`` would be refused now,
    None if it would not; whether the store answered: if not, that is no revocation). Also
    what a cluster survivor asks of a dead member's client's will (``broker.cluster.survivor``)."""
    holder = decision.holder
    if decision.allowed and holder is not None and holder.device_id == device_id:
        return None, True
    if decision.reason is Reason.STORE_UNAVAILABLE:
        return None, False
    return (
        decision.detail if not decision.allowed else "credentials now name another device",
        True,
    )


_RECHECK = frozenset(
    {
        ChangeKind.DEVICE_DISABLED,
        ChangeKind.DEVICE_DELETED,
        ChangeKind.DEVICE_UPDATED,
        ChangeKind.CREDENTIAL_CHANGED,
    }
)
