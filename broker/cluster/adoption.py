"""A dead member's persistent sessions taken in by the survivor its departure chose
(``broker.cluster.wills``): each claimed by compare-and-set in ``<cluster>_clients`` (with
an adoption's value, naming the connect the claim replaced: ``broker.cluster.claim_value``),
read from the shared store, and queued for here (``broker.cluster.sessions``, whose
``SessionClaims.adopt`` this is).
"""

import logging
from typing import TYPE_CHECKING

from broker.cluster.claim_value import adoption_value, holder_of
from broker.cluster.frames import from_key
from broker.cluster.kv import KeyValue
from broker.cluster.silence import nobody_listens
from nanoiot.errors import ClusterConflictError

if TYPE_CHECKING:
    from broker.cluster.sessions import SessionClaims
    from broker.sessions import BrokerSession

__all__ = ["adopt", "read_holders"]

log = logging.getLogger("broker.cluster.sessions")  # where operators read of adoptions


async def adopt(claims: "SessionClaims", gone: str) -> int:
    """Take the sessions dead member ``gone`` held: claimed by compare-and-set (a device
    connecting elsewhere meanwhile wins), read from the store, queued for here."""
    if not claims.is_gone(gone):
        return 0  # it came back (restarted): it restored its own
    if not await nobody_listens(claims.link, gone, claims.is_gone, claims.until_back):
        return 0
    taken: list[BrokerSession] = []
    complete = False
    try:
        adopted = await _adopt_all(claims, gone, taken)
        complete = True
    finally:  # what is held for those taken is released, whatever happened
        if claims.replays is not None:
            claims.replays.start(gone, taken, purge=complete)
    claims.adopted += adopted
    if adopted:
        log.info("adopted %d persistent sessions of member %s", adopted, gone)
    if claims.replays is not None:  # all taken: the others stop parking frames for it
        claims.replays.forget(gone)
    elif claims.announcer is not None:
        await claims.announcer.forget(gone)
    return adopted


async def _adopt_all(claims: "SessionClaims", gone: str, taken: list["BrokerSession"]) -> int:
    """Claim and read each session ``gone`` holds; those read here join ``taken``."""
    member, adopted = claims.link.member, 0
    for kv_key, holder in (await read_holders(claims.bucket)).items():
        if holder != gone:
            continue
        entry = await claims.bucket.get(kv_key)
        if entry is None or holder_of(entry.value) != gone:
            continue
        device_id, _, client_id = from_key(kv_key).partition("/")
        key = (device_id, client_id)
        if claims.replays is not None:  # a take-over from here on takes its frames along
            claims.replays.owed.adopting(key, gone)
        try:  # an adoption's claim: not its client coming back (``claim_value``)
            adoption = adoption_value(member, entry.value, entry.revision)
            revision = await claims.bucket.update(kv_key, adoption, entry.revision)
        except ClusterConflictError:
            if claims.replays is not None:
                claims.replays.owed.given(key, gone)
            continue  # its device connected meanwhile
        if not await claims.registry.adopt(key):
            if claims.replays is not None:
                claims.replays.owed.given(key, gone)
            continue
        session = claims.registry.sessions.get(key)
        if session is not None and claims.replays is not None:
            claims.replays.hold([session])  # in the turn it was restored: nothing came yet
            taken.append(session)
        now = await claims.bucket.get(kv_key)
        if now is None or now.revision != revision:
            # Its device connected elsewhere while the session was read, and that
            # member's take-over request found nothing here yet: it is theirs.
            session = claims.registry.sessions.get(key)
            if session is not None and session.client is None:
                claims.registry.forget(session)
            continue
        adopted += 1
    return adopted


async def read_holders(bucket: KeyValue) -> dict[str, str]:
    """Every claim at this moment: the member it names."""
    return {kv_key: holder_of(value) for kv_key, value in (await bucket.values()).items()}
