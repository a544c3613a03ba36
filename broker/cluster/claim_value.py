"""The value of a session's claim in ``<cluster>_clients`` (``broker.cluster.sessions``): the
name of the member holding the session, whether the claim was made by a connect or by an
adoption, and whether that connect had Clean Start (MQTT 5 §3.1.2.4; 3.1.1: CleanSession).

Whoever holds a delayed will of the session's client reads it when the claim changes: the
survivor of a dead member (``broker.cluster.survivor``), or a member back from fencing with
the will of a connection it closed (``broker.cluster.wills``). A connect with Clean Start ends
the session, so the will goes at once (5.0 §3.1.3.2.2: when the delay passes or the session
ends, whichever comes first); one without takes the session on, and the will is never
published ([MQTT-3.1.3-9]). An adoption is not the client coming back: the will still waits.

A connect's claim is ``<member>``, or ``<member> clean`` with Clean Start (a member name has
no space: ``nanoiot.settings``). An adoption's (``broker.cluster.adoption``) is ``<member>
adopted <revision>``: ``<revision>`` is the revision of the claim the session's last connect
made, carried over from adoption to adoption (a survivor that dies has the sessions it adopted
adopted again), and `` clean`` follows if that connect had Clean Start. So a will whose
connection made the claim at ``<revision>`` is known to be still waiting for its client, and
one of an earlier connection is known to have been decided by a later connect (``came_back``).

A claim of Clean Start 0 is written as members of earlier versions wrote every claim, and one
they wrote reads as Clean Start 0, an adoption's included: the will is dropped, as those
versions did. Members of earlier versions read ``<member> clean`` and ``<member> adopted ...``
as naming an unknown member: every member is upgraded first.

What must not import: anything of the broker's (this only reads and writes bytes).
"""

from typing import Final

__all__ = [
    "adoption_value", "came_back", "claim_value", "clean_start", "connect_revision", "holder_of",
    "is_adoption",
]  # fmt: skip

_CLEAN: Final = b" clean"
_ADOPTED: Final = b" adopted "


def claim_value(member: str, clean: bool) -> bytes:
    """The claim of ``member`` for a connect with Clean Start ``clean``."""
    return member.encode() + _CLEAN if clean else member.encode()


def adoption_value(member: str, adopted: bytes, revision: int) -> bytes:
    """The claim of ``member`` adopting a session whose claim was ``adopted``, at
    ``revision``: it names the same connect as that one."""
    value = member.encode() + _ADOPTED + str(connect_revision(adopted, revision)).encode()
    return value + _CLEAN if clean_start(adopted) else value


def holder_of(value: bytes) -> str:
    """The member a claim names."""
    return value.split(b" ", 1)[0].decode()


def clean_start(value: bytes) -> bool:
    """Whether the session's last connect had Clean Start (False if the claim does not say:
    a member of an earlier version made it)."""
    return value.endswith(_CLEAN)


def is_adoption(value: bytes) -> bool:
    """Whether an adoption made the claim (not a connect)."""
    return _ADOPTED in value


def connect_revision(value: bytes, revision: int) -> int:
    """The revision of the claim made by the session's last connect, when its claim is
    ``value`` at ``revision``: that one, unless an adoption made it."""
    _, adopted, rest = value.partition(_ADOPTED)
    if not adopted:
        return revision
    origin = rest.split(b" ", 1)[0]
    return int(origin) if origin.isdigit() else revision


def came_back(value: bytes, revision: int, since: int) -> bool:
    """Whether the session's client connected again after the connect that made its claim
    at revision ``since``, now that its claim is ``value`` at ``revision``."""
    return connect_revision(value, revision) != since
