"""Which member settles a departure, on the machine's NATS: the one its entry names, also
when that member's own create was made at NATS but its answer lost."""

from collections.abc import Callable

from broker.cluster.departure import DONE, creator, departure_won
from broker.cluster.link import ClusterLink
from broker.cluster.wills import DEPARTURES
from nanoiot.settings import Settings


def test_each_process_creates_departures_with_a_value_of_its_own() -> None:
    first, second = creator("b.1"), creator("b.1")  # a restarted process may get the same pid
    assert first != second
    assert first.startswith(b"b.1 ")
    assert DONE not in (first, second)


async def test_the_departures_entry_says_who_won(
    cluster_settings: Callable[..., Settings],
) -> None:
    link = await ClusterLink.connect(cluster_settings())
    try:
        departures = await link.key_value(DEPARTURES)
        b, c = creator("b.1"), creator("c.1")
        assert await departure_won(departures, "a.41", b) is True
        # B's create again, as when its first answer was lost: the entry names B.
        assert await departure_won(departures, "a.41", b) is True
        assert await departure_won(departures, "a.41", c) is False
        await departures.put("a.41", DONE)
        assert await departure_won(departures, "a.41", b) is False  # done: nothing left
    finally:
        await link.close()
