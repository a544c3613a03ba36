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

A claim in any other form (a member of a later version wrote more, or something else wrote
the bucket) is read as naming the member its first word names, if that word is a member's
name (``nanoiot.settings``: letters, digits, ``_`` and ``-``), and nobody otherwise; as a
connect with Clean Start 0, and as no sign of the client coming back: a delayed will of its
session is published when its delay ends, never dropped on a claim this member cannot read
(a will published when its client took the session on is visible, a will lost is not). Each
such claim read is counted (``unknown_claims``) and logged, once a minute at most.

What must not import: anything of the broker's (this only reads and writes bytes).
"""

import logging
import re
import time
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Claim", "adoption_value", "came_back", "claim_value", "clean_start", "connect_revision",
    "holder_of", "is_adoption", "read_claim", "unknown_claims",
]  # fmt: skip

log = logging.getLogger(__name__)

_CLEAN: Final = b" clean"
_ADOPTED: Final = b" adopted "
# The forms this version writes: ``<member>``, then `` adopted <revision>``, then `` clean``.
_FORM: Final = re.compile(rb"([A-Za-z0-9_-]+)(?: adopted ([0-9]{1,19}))?( clean)?")
_MEMBER: Final = re.compile(rb"[A-Za-z0-9_-]+")
_WARN_EVERY: Final = 60.0  # seconds between log lines about claims of an unknown form


@dataclass(frozen=True, slots=True)
class Claim:
    holder: str  # the member holding the session; "" if the claim names none this reads
    clean: bool  # the session's last connect had Clean Start
    adopted: int | None  # an adoption's: the revision of the last connect's claim
    known: bool = True  # in a form this version writes (or an earlier one wrote)


class _Unknown:
    """Claims read in a form this version does not know, and when one was last logged."""

    count = 0
    logged_at = float("-inf")


def unknown_claims() -> int:
    """Claims read so far in a form this version does not know."""
    return _Unknown.count


def read_claim(value: bytes) -> Claim:
    """``value`` read as a claim (the module's docstring says how one of an unknown form is)."""
    if (form := _FORM.fullmatch(value)) is not None:
        member, adopted, clean = form.groups()
        return Claim(member.decode(), clean is not None, None if adopted is None else int(adopted))
    first = value.split(b" ", 1)[0]
    holder = first.decode() if _MEMBER.fullmatch(first) else ""
    _Unknown.count += 1
    now = time.monotonic()
    if now - _Unknown.logged_at >= _WARN_EVERY:
        _Unknown.logged_at = now
        log.warning("a session claim of a form this version does not know (%d so far; a node of "
                    "another version?): %r read as held by %s, its delayed will published when "
                    "due", _Unknown.count, value[:80], holder or "no member")  # fmt: skip
    return Claim(holder, False, None, known=False)


def claim_value(member: str, clean: bool) -> bytes:
    """The claim of ``member`` for a connect with Clean Start ``clean``."""
    return member.encode() + _CLEAN if clean else member.encode()


def adoption_value(member: str, adopted: bytes, revision: int) -> bytes:
    """The claim of ``member`` adopting a session whose claim was ``adopted``, at
    ``revision``: it names the same connect as that one."""
    value = member.encode() + _ADOPTED + str(connect_revision(adopted, revision)).encode()
    return value + _CLEAN if clean_start(adopted) else value


def holder_of(value: bytes) -> str:
    """The member a claim names ("" if none this version can read)."""
    return read_claim(value).holder


def clean_start(value: bytes) -> bool:
    """Whether the session's last connect had Clean Start (False if the claim does not say:
    a member of an earlier version made it)."""
    return read_claim(value).clean


def is_adoption(value: bytes) -> bool:
    """Whether an adoption made the claim (not a connect)."""
    return read_claim(value).adopted is not None


def connect_revision(value: bytes, revision: int) -> int:
    """The revision of the claim made by the session's last connect, when its claim is
    ``value`` at ``revision``: that one, unless an adoption made it."""
    adopted = read_claim(value).adopted
    return revision if adopted is None else adopted


def came_back(value: bytes, revision: int, since: int) -> bool:
    """Whether the session's client connected again after the connect that made its claim
    at revision ``since``, now that its claim is ``value`` at ``revision`` (not known from a
    claim of an unknown form: the will waits for its delay)."""
    claim = read_claim(value)
    if not claim.known:
        return False
    return (revision if claim.adopted is None else claim.adopted) != since
