"""Which existing device a trusted CA's leaf may attach to (auth.binding)."""

from auth.binding import ExistingDevice, attach_problem
from auth.decision import Reason


def reason(device: ExistingDevice) -> Reason | None:
    refusal = attach_problem(device, "ca-x", "fleet")
    return refusal.reason if refusal is not None else None


def test_a_device_created_by_the_ca_or_bound_to_it_takes_its_leaves() -> None:
    assert reason(ExistingDevice.of("pump", None, ["ca-x"])) is None  # created by it
    assert reason(ExistingDevice.of("pump", "ca-x", [])) is None  # bound, no leaf yet
    assert reason(ExistingDevice.of("pump", "ca-x", ["ca-x", "ca-x"])) is None


def test_any_other_device_is_not_the_cas() -> None:
    unbound = attach_problem(ExistingDevice.of("pump", None, []), "ca-x", "fleet")
    assert unbound is not None
    assert unbound.reason is Reason.NOT_BOUND_TO_CA
    assert "nanoiot device bind pump fleet" in unbound.detail
    assert reason(ExistingDevice.of("pump", "ca-y", [])) is Reason.NOT_BOUND_TO_CA


def test_credentials_of_another_origin_keep_the_device_whatever_the_binding() -> None:
    pinned = attach_problem(ExistingDevice.of("boiler", "ca-x", [None]), "ca-x", "fleet")
    assert pinned is not None
    assert pinned.reason is Reason.DEVICE_NOT_CAS
    assert "a certificate an operator registered" in pinned.detail
    assert reason(ExistingDevice.of("boiler", "ca-x", ["ca-x", "ca-y"])) is Reason.DEVICE_NOT_CAS
