"""The age of what waits unread in the parked stream, on the machine's NATS
(``broker.cluster.parked_age``): told in ``/metrics`` and, once a batch is old enough that
JetStream will drop it soon (acknowledged messages and all), in a warning naming the member."""

import asyncio
import logging

import pytest

from broker.cluster.link import ClusterLink
from broker.cluster.parked_age import ParkedAge
from broker.router import Message
from tests.broker.cluster.parking import WAIT, parking_forwarder


async def test_a_batch_parked_unread_is_warned_of_once_old_and_no_longer_once_read(
    link: ClusterLink, caplog: pytest.LogCaptureFixture
) -> None:
    async with parking_forwarder(link) as (forwarder, parked):
        confirmed = forwarder.forward(["dead"], Message("t", b"0", 1), ["dead"], {})
        assert confirmed is not None
        await asyncio.wait_for(confirmed, WAIT)  # parked, acknowledged
        young, old = ParkedAge(forwarder, warn_after=3600.0), ParkedAge(forwarder, warn_after=0.0)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="broker.cluster.forward"):
            await young.look()
            assert _warned(caplog) == []
            assert 0.0 <= young.oldest_seconds < WAIT
            await old.look()
            [line] = _warned(caplog)
            assert "JetStream drops each 3600 s after it was parked" in line
            assert 0.0 <= old.oldest_seconds < WAIT

            await parked.purge("dead", await parked.last("dead"))  # read: its sessions taken
            await old.look()
            assert old.oldest_seconds == 0.0
            assert len(_warned(caplog)) == 1


def _warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.getMessage().startswith("frames parked for member dead are ")
    ]  # fmt: skip
