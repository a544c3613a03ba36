"""Which existing device a trusted CA's leaf may attach to, decided without I/O.

A leaf that chains to a trusted CA names a device through the CA's CN rule. Trusting a CA
must not hand it every device whose name its leaves can spell (with a rule like
``device-(.+)`` that is every device): the leaf gets the device's identity, its session and
its queued messages. So a leaf of CA X attaches to an existing device only when:

- the device is X's: X created it (its X.509 credentials came through X), or an operator
  bound the device to X (``nanoiot device add NAME --ca X`` / ``nanoiot device bind``); and
- the device holds no X.509 credential of another origin (one an operator pinned, or one
  of another CA), revoked ones included: a revoked credential is not an opening for a CA.

A device that does not exist is created only when the CA may create devices
(``broker.authn``). Refusals say what the operator can do.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from auth.decision import Decision, Reason, deny


@dataclass(frozen=True)
class ExistingDevice:
    """What the store knows about the device a leaf's CN names."""

    name: str
    bound_ca_id: str | None  # the CA an operator bound the device to, or None
    # The origin of each of its X.509 credentials: the trusted CA's id, or None for one an
    # operator registered.
    x509_origins: tuple[str | None, ...]

    @classmethod
    def of(
        cls, name: str, bound_ca_id: str | None, x509_origins: Iterable[str | None]
    ) -> "ExistingDevice":
        return cls(name, bound_ca_id, tuple(x509_origins))


def attach_problem(device: ExistingDevice, ca_id: str, ca_name: str) -> Decision | None:
    """Why a leaf of CA ``ca_id`` may not attach to ``device``, or None if it may."""
    foreign = [origin for origin in device.x509_origins if origin != ca_id]
    if foreign:
        what = "a certificate an operator registered" if None in foreign else "another CA"
        return deny(
            Reason.DEVICE_NOT_CAS,
            f"device '{device.name}' has X.509 credentials from {what}: a leaf of CA "
            f"'{ca_name}' may not attach to it",
        )
    if ca_id not in device.x509_origins and device.bound_ca_id != ca_id:
        return deny(
            Reason.NOT_BOUND_TO_CA,
            f"device '{device.name}' was not created by CA '{ca_name}' nor bound to it "
            f"(nanoiot device bind {device.name} {ca_name})",
        )
    return None
