"""The start-up fit of what a node may send in one NATS message, as pure logic: the
boundaries, on either side (test_link checks the same against a real NATS server)."""

from pathlib import Path

from broker.cluster.fit import payload_fit_problem
from broker.cluster.frames import FRAMING, groups_room
from nanoiot.settings import Settings

MIB = 1024 * 1024


def _settings(tmp_path: Path, packet: int, shared: int) -> Settings:
    return Settings(data_dir=tmp_path, max_packet_size=packet, max_shared_subscription_bytes=shared)


def test_a_packet_fits_up_to_the_payload_less_its_frame(tmp_path: Path) -> None:
    assert payload_fit_problem(_settings(tmp_path, MIB - FRAMING, 0), MIB, "nats://n") is None
    problem = payload_fit_problem(_settings(tmp_path, MIB - FRAMING + 1, 0), MIB, "nats://n")
    assert problem is not None
    assert problem.startswith(f"max_packet_size {MIB - FRAMING + 1} does not fit")
    assert "NATS nats://n has max_payload 1048576" in problem


def test_the_shared_groups_names_count_against_the_same_payload(tmp_path: Path) -> None:
    shared = 256 * 1024
    largest = MIB - FRAMING - groups_room(shared)
    assert payload_fit_problem(_settings(tmp_path, largest, shared), MIB, "nats://n") is None
    problem = payload_fit_problem(_settings(tmp_path, largest + 1, shared), MIB, "nats://n")
    assert problem is not None
    assert f"and max_shared_subscription_bytes {shared} do not fit" in problem
    assert f"the groups' names take up to {groups_room(shared)} bytes" in problem
