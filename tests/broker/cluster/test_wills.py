"""Wills of a dead member on the machine's NATS: exactly one survivor publishing them
(compare-and-set), a delayed will after its delay and not if its client connected again
elsewhere meanwhile (MQTT 5 §3.1.3.2.2)."""

import asyncio
import dataclasses
import functools
from collections.abc import Callable
from types import SimpleNamespace

from broker.cluster.frames import to_key
from broker.cluster.link import ClusterLink
from broker.cluster.will_entries import StoredWill, decode_will, encode_will, incarnation
from broker.cluster.wills import DEPARTURES, Wills
from broker.peer import store_key
from nanoiot.members import Figures, Member
from nanoiot.settings import Settings

WAIT = 10.0
DEAD = incarnation("a", 41, 0.0, 0)  # the will entries' prefix of a dead member's run


def _will(client_id: str, claim: int, delay: int = 0) -> StoredWill:
    return StoredWill(
        ("0190d4a0-0000-7000-8000-000000000001", client_id), claim,
        f"devices/sensor/{client_id}", b"gone", 1, False, b"", delay,
    )  # fmt: skip


def test_a_stored_will_reads_back_as_written() -> None:
    will = StoredWill(("d", "c"), 7, "devices/d/status", b"\x00\xffgone", 2, True, b"\x02\x01", 5)
    assert decode_will(encode_will(will)) == will
    started = dataclasses.replace(will, due=1_780_000_000.25)  # its delay started
    assert decode_will(encode_will(started)) == started


async def test_one_survivor_publishes_the_dead_runs_wills_unless_their_client_came_back(
    cluster_settings: Callable[..., Settings],
) -> None:
    link = await ClusterLink.connect(cluster_settings())
    try:
        wills_bucket = await link.key_value("wills")
        claims = await link.key_value("clients")
        departures = await link.key_value(DEPARTURES)
        # The dead run ``DEAD``: three connected clients with wills; two connected again on
        # another member since (their claims changed), one of which had a delayed will.
        moved = _will("moved", await claims.create(_claim_key("moved"), b"a"))
        await claims.put(_claim_key("moved"), b"c")
        delayed = _will("delayed", await claims.create(_claim_key("delayed"), b"a"), delay=1)
        back = _will("back", await claims.create(_claim_key("back"), b"a"), delay=1)
        await claims.put(_claim_key("back"), b"c")
        for will in (moved, delayed, back):
            await wills_bucket.put(f"{DEAD}.{to_key(store_key(will.key))}", encode_will(will))

        published: dict[str, list[StoredWill]] = {"b": [], "c": []}
        done = asyncio.Event()

        def survivor(name: str) -> Wills:
            def publish(will: StoredWill) -> None:
                published[name].append(will)
                if sum(map(len, published.values())) == 2:
                    done.set()

            return Wills(wills_bucket, departures, claims, f"{name}.1", publish)

        survivors = [survivor("b"), survivor("c")]
        watch = await wills_bucket.watch(f"{DEAD}.>")
        while await watch.value() is not None:
            pass  # the three entries as they are
        loop = asyncio.get_running_loop()
        noticed = loop.time()
        for each in survivors:
            each.member_gone(Member("a", "host", 41, 0.0, 1.0, Figures()))  # both see it
        await asyncio.wait_for(done.wait(), WAIT)
        everything = published["b"] + published["c"]
        # §3.1.2.5: its connection ended without DISCONNECT, wherever it is now.
        assert [w.key[1] for w in everything] == ["moved", "delayed"]
        assert loop.time() - noticed >= 1.0  # the delayed one after its delay
        assert [] in published.values()  # one survivor did it all
        deleted: set[str] = set()
        async with asyncio.timeout(WAIT):  # each entry dealt with: deleted
            while len(deleted) < 3:
                change = await watch.value()
                if change is not None and change[1] is None:
                    deleted.add(change[0])
        await watch.stop()
        for each in survivors:
            await each.stop()
    finally:
        await link.close()


def _claim_key(client_id: str) -> str:
    return to_key(store_key(("0190d4a0-0000-7000-8000-000000000001", client_id)))


class _Held:
    """What ``Wills`` reads of a connection whose connect could not keep its will."""

    def __init__(self, client_id: str) -> None:
        self.peer = SimpleNamespace(key=("0190d4a0-0000-7000-8000-000000000002", client_id))
        self.label = client_id
        self.core = SimpleNamespace(will=object())
        self.ended = False


async def test_wills_held_while_nats_is_lost_are_bounded(
    cluster_settings: Callable[..., Settings],
) -> None:
    """Wills that fell due while their connects could not keep them wait for NATS to be
    back, at most ``max_held`` of them: one more is dropped, and counted."""
    link = await ClusterLink.connect(cluster_settings())
    try:
        wills = Wills(
            await link.key_value("wills"), await link.key_value(DEPARTURES),
            await link.key_value("clients"), "a.1", lambda _will: None,
        )  # fmt: skip
        wills.max_held = 2
        published: list[str] = []
        for client_id in ("one", "two", "three"):
            client = _Held(client_id)
            wills.unkept(client)  # type: ignore[arg-type]
            wills.due(client, functools.partial(published.append, client_id))  # type: ignore[arg-type]
        assert published == []
        assert wills.held_dropped == 1
        wills.back()
        assert published == ["one", "two"]
        wills.back()  # published once
        assert published == ["one", "two"]
    finally:
        await link.close()


def test_two_processes_of_a_member_with_one_pid_have_runs_of_their_own() -> None:
    """A container's process is always pid 1: a member restarted there is told from the one
    before by its start time, so its departure is not the earlier one's (done already)."""
    before, after = incarnation("a", 1, 1764961234.5678, 0), incarnation("a", 1, 1764961299.1, 0)
    assert before != after
    assert incarnation("a", 1, 1764961234.5678, 2) == f"{before}-2"  # its run after 2 fencings
    assert "." not in before.removeprefix("a.")  # one key token: ``<run>.>`` matches its own
