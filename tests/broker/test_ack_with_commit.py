"""``with_commit``: what a QoS 2 PUBREC of a persistent session waits for, the store's commit
of its packet id (MQTT 3.1.1 §4.3.3) together with whatever routing asked it to wait for."""

import asyncio

import pytest

from broker.acks import with_commit


async def test_without_a_confirmation_the_pending_commit_is_waited_for() -> None:
    commit = asyncio.get_running_loop().create_future()
    assert with_commit(False, commit) is True
    assert with_commit(True, None) is True


async def test_a_confirmation_is_joined_with_the_commit() -> None:
    loop = asyncio.get_running_loop()
    confirmed, commit = loop.create_future(), loop.create_future()
    joined = with_commit(confirmed, commit)
    assert isinstance(joined, asyncio.Future)
    confirmed.set_result(None)
    await asyncio.sleep(0)  # one turn of the loop: the done callbacks run
    assert not joined.done()  # the id is not committed yet
    commit.set_result(None)
    await asyncio.wait_for(joined, 1.0)


async def test_a_failed_confirmation_fails_the_acknowledgement() -> None:
    loop = asyncio.get_running_loop()
    confirmed, commit = loop.create_future(), loop.create_future()
    joined = with_commit(confirmed, commit)
    assert isinstance(joined, asyncio.Future)
    confirmed.set_exception(ConnectionError("not confirmed"))
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(joined, 1.0)
    cancelled = loop.create_future()
    joined = with_commit(cancelled, loop.create_future())
    assert isinstance(joined, asyncio.Future)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(joined, 1.0)


async def test_a_commit_done_already_or_the_same_is_not_joined() -> None:
    loop = asyncio.get_running_loop()
    confirmed, done = loop.create_future(), loop.create_future()
    done.set_result(None)
    assert with_commit(confirmed, done) is confirmed
    assert with_commit(confirmed, confirmed) is confirmed
    assert with_commit(confirmed, None) is confirmed
