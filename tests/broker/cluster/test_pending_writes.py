"""Changes waiting for a bucket's writer (``broker.cluster.pending_writes``): pure, no NATS.
A subscribe/unsubscribe loop, or a retained message published in one, must not queue a write
per change (it outran NATS without bound, and other clients' changes waited behind it)."""

import asyncio

from broker.cluster.pending_writes import PendingWrites


async def _write_all(pending: PendingWrites) -> list[tuple[str, bytes | None]]:
    """What a writer writes of what waits now, each marked done as NATS took it."""
    written = []
    while len(pending):
        key, value = await pending.next()
        written.append((key, value))
        pending.done(key, value)
    return written


async def test_a_loop_of_subscribe_and_unsubscribe_writes_nothing_or_its_last_state() -> None:
    pending = PendingWrites()
    for n in range(10_000):  # distinct filters, each dropped before it was written
        pending.change(f"a.f{n}", b"")
        pending.change(f"a.f{n}", None)
    assert len(pending) == 0
    for _ in range(10_000):  # one filter over and over: its last state, once
        pending.change("a.same", b"")
        pending.change("a.same", None)
    pending.change("a.same", b"")
    assert await _write_all(pending) == [("a.same", b"")]


async def test_a_key_in_the_bucket_is_deleted_and_keys_keep_their_first_order() -> None:
    pending = PendingWrites()
    pending.stored(["a.left"])  # the previous run's
    pending.change("a.x", b"")
    pending.change("a.left", None)
    pending.change("a.y", b"")
    pending.change("a.x", b"again")  # keeps its place, written in its latest state
    assert await _write_all(pending) == [("a.x", b"again"), ("a.left", None), ("a.y", b"")]
    pending.change("a.x", None)  # written before: deleted
    pending.change("a.left", None)  # deleted already: nothing
    assert await _write_all(pending) == [("a.x", None)]


async def test_a_delete_while_the_key_is_being_written_follows_the_write() -> None:
    pending = PendingWrites()
    pending.change("a.x", b"")
    key, value = await pending.next()  # on its way to NATS
    pending.change("a.x", None)
    pending.done(key, value)
    assert await _write_all(pending) == [("a.x", None)]


async def test_written_waits_for_the_changes_before_it_only() -> None:
    pending = PendingWrites()
    assert pending.written().done()  # nothing waits
    pending.change("a.x", b"")
    marker = pending.written()
    pending.change("a.y", b"")  # after it: not waited for
    pending.change("a.x", b"later")  # coalesced into the change it waits for
    assert not marker.done()
    key, value = await pending.next()
    assert (key, value) == ("a.x", b"later")
    assert not marker.done()  # still on its way
    pending.done(key, value)
    assert marker.done()
    later = pending.written()
    pending.change("a.z", b"")
    pending.change("a.z", None)  # dropped unwritten
    await _write_all(pending)
    assert later.done()


async def test_next_waits_for_a_change() -> None:
    pending = PendingWrites()
    waiting = asyncio.ensure_future(pending.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    pending.change("a.x", b"")
    assert await asyncio.wait_for(waiting, 1.0) == ("a.x", b"")


async def test_a_delete_in_a_shared_bucket_is_always_written() -> None:
    """Another member may have written the key (a retained message's topic)."""
    pending = PendingWrites(shared=True)
    pending.change("t", None)
    assert await _write_all(pending) == [("t", None)]
    for n in range(1000):  # a retained message published in a loop: its last state, once
        pending.change("t", b"%d" % n)
    pending.change("t", None)
    assert await _write_all(pending) == [("t", None)]


async def test_a_restores_changes_go_after_the_others_and_a_wait_for_some_keys_ends_early() -> None:
    pending = PendingWrites()
    for n in range(1_000):  # a restore's
        pending.change(f"a.r{n}", b"", later=True)
    marker = pending.written()
    pending.change("a.client", b"")  # a client's subscription: before them
    pending.change("a.r500", b"", later=True)  # a restore's again: keeps its place
    hurried = pending.keys_written(["a.r999", "a.client"])
    pending.hurry(["a.r999"])  # a connect waits for it: before the others too
    assert [await _next_written(pending) for _ in range(2)] == ["a.client", "a.r999"]
    assert hurried.done()
    assert not marker.done()
    assert pending.keys_written(["a.r999", "a.unknown"]).done()  # nothing left of either
    rest = await _write_all(pending)
    assert [key for key, _value in rest] == [f"a.r{n}" for n in range(999)]
    assert marker.done()


async def test_a_wait_for_a_key_covers_its_change_made_while_it_was_written() -> None:
    pending = PendingWrites()
    pending.change("a.x", b"", later=True)
    key, value = await pending.next()  # on its way to NATS
    pending.change("a.x", b"again", later=True)
    waited = pending.keys_written(["a.x"])
    pending.change("a.x", b"third")  # a client's: no longer a later one
    pending.done(key, value)
    assert not waited.done()  # its latest change is still to be written
    assert await _write_all(pending) == [("a.x", b"third")]
    assert waited.done()
    dropped = PendingWrites()
    dropped.change("a.y", b"", later=True)
    gone = dropped.keys_written(["a.y"])
    dropped.change("a.y", None)  # never written: nothing to wait for
    assert gone.done()
    assert len(dropped) == 0


async def _next_written(pending: PendingWrites) -> str:
    key, value = await pending.next()
    pending.done(key, value)
    return key
