"""The value of a session's claim in ``<cluster>_clients`` (``broker.cluster.sessions``): the
name of the member holding the session, and whether the connect that made the claim had Clean
Start (MQTT 5 §3.1.2.4; 3.1.1: CleanSession).

A survivor holding a dead member's delayed will (``broker.cluster.survivor``) reads it when
the claim changes: a connect with Clean Start ends the session, so the will goes at once (5.0
§3.1.3.2.2: when the delay passes or the session ends, whichever comes first); one without
takes the session on, and the will is never published ([MQTT-3.1.3-9]).

A claim is ``<member>``, or ``<member> clean`` for a connect with Clean Start (a member name
has no space: ``nanoiot.settings``). A claim of Clean Start 0 is written as members of earlier
versions wrote every claim, and one they wrote reads as Clean Start 0: the will is dropped, as
those versions did.

What must not import: anything of the broker's (this only reads and writes bytes).
"""

from typing import Final

__all__ = ["claim_value", "clean_start", "holder_of"]

_CLEAN: Final = b" clean"


def claim_value(member: str, clean: bool) -> bytes:
    """The claim of ``member`` for a connect with Clean Start ``clean``."""
    return member.encode() + _CLEAN if clean else member.encode()


def holder_of(value: bytes) -> str:
    """The member a claim names."""
    return value.removesuffix(_CLEAN).decode()


def clean_start(value: bytes) -> bool:
    """Whether the connect that made the claim had Clean Start (False if the claim does not
    say: made by an adoption, or by a member of an earlier version)."""
    return value.endswith(_CLEAN)
