"""The web UI's sessions the server issued and that have not ended (``admin.web.session``).

In memory, so a restart signs every browser out; bounded, so a script that signs in again and
again (it needs the admin token) cannot grow it without end: past ``http_max_web_sessions``
the oldest is signed out.
"""

from collections import OrderedDict

from admin.limits import HttpLimits


class LiveSessions:
    """The nonces of the sessions issued and not ended, with their expiry; bounded."""

    def __init__(self, limit: int = HttpLimits.max_web_sessions) -> None:
        self._limit = limit
        self._expiry: OrderedDict[str, int] = OrderedDict()

    def add(self, nonce: str, expires_at: int, now: float) -> None:
        for old, expiry in list(self._expiry.items()):
            if expiry <= now:
                del self._expiry[old]
        while len(self._expiry) >= self._limit:
            self._expiry.popitem(last=False)
        self._expiry[nonce] = expires_at

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._expiry

    def end(self, nonce: str) -> None:
        self._expiry.pop(nonce, None)
