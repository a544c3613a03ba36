"""When ``Awaiting`` has a member probed (``broker.cluster.confirmations``): once a frame waited
``PROBE_AFTER`` seconds unanswered, then at most once every ``PROBE_AFTER`` seconds while its
frames keep waiting; never a member whose frames were answered. Pure logic on the event
loop's clock."""

import asyncio

from broker.cluster.confirmations import CONFIRM_WITHIN, PROBE_AFTER, Awaiting

WAIT = 10.0


async def test_a_member_is_probed_once_a_probe_after_while_its_frames_wait() -> None:
    loop = asyncio.get_running_loop()
    probes: list[tuple[str, float]] = []
    second = asyncio.Event()

    def probe(member: str) -> None:
        probes.append((member, loop.time()))
        if len(probes) == 2:
            second.set()

    awaiting = Awaiting(probe)
    began = loop.time()
    waits = [loop.create_future() for _ in range(3)]
    awaiting.add("slow", b"1", waits[0])
    awaiting.add("slow", b"2", waits[1])
    answered = awaiting.add("quick", b"3", waits[2])
    assert awaiting.answered(answered) is not None  # in time: never probed
    try:
        await asyncio.wait_for(second.wait(), WAIT)
        assert [member for member, _at in probes] == ["slow", "slow"]
        first, then = probes[0][1] - began, probes[1][1] - probes[0][1]
        assert PROBE_AFTER <= first < CONFIRM_WITHIN, first
        assert then >= PROBE_AFTER, then  # the second frame was due too: not at once
    finally:
        awaiting.fail_all("the test ends")
    for wait in waits[:2]:
        assert isinstance(wait.exception(), Exception)
