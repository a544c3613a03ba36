"""A connected client's certificate running out: its connection is decided again then.

RFC 5280 §4.1.2.5: a certificate is valid up to its notAfter, and the TLS handshake checked
it once. A device admitted the minute before its certificate expired stayed connected for as
long as it kept the connection alive, months with a keep-alive. One timer per connection that
presented a certificate, set when it is accepted (``broker.connecting``) for the earliest
notAfter among the certificates it sent (a CA of its chain may run out first); when it fires,
the change-feed follower (``broker.revocation``) decides the connection again with the checks
a new connection gets, and closes it if those now refuse it (without its will, as a
revocation does); else the timer is set for the next notAfter. Nothing is set under
``mqtt_ssl_skip_validity_check_for_client_cert``.

Works on ``broker.client.MqttClient``'s state, as ``broker.keep_alive`` does.
"""

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from broker.authn import ConnectRequest

if TYPE_CHECKING:
    from broker.client import MqttClient

# The decision could not be made (the store did not answer): ask again after this long.
RETRY_SECONDS = 5.0
# X.509 times have whole seconds and the period includes notAfter itself (§4.1.2.5): the
# decision is taken just past it, when ``auth.validity`` calls it expired.
_PAST_END = 1.0


def next_expiry(request: ConnectRequest, now: datetime) -> datetime | None:
    """The earliest notAfter still to come among the certificates ``request`` presented."""
    ends = (c.not_valid_after_utc for c in (request.certificate, *request.chain) if c)
    return min((end for end in ends if end >= now), default=None)


def arm(client: "MqttClient", *, retry: bool = False) -> None:
    """Set ``client``'s timer for its next certificate expiry (``retry``: for a decision the
    store could not make), unless it has none or validity is not checked."""
    broker, peer = client.broker, client.peer
    if broker.certificate_due is None or peer is None or not broker.authenticator.check_validity:
        return
    if retry:
        delay = RETRY_SECONDS
    else:
        now = datetime.now(UTC)
        end = next_expiry(peer.request, now)
        if end is None:
            return
        delay = (end - now).total_seconds() + _PAST_END
    client._cert_timer = client._loop.call_later(delay, _due, client)


def _due(client: "MqttClient") -> None:
    client._cert_timer = None
    due = client.broker.certificate_due
    if not client.ended and due is not None:
        due(client)
