"""Validity periods, decided without I/O (RFC 5280 §4.1.2.5).

One function serves both moments that need it: registering a certificate (refuse one that has
already expired, unless asked to keep it) and a device connecting (refuse it while outside its
validity, unless the operator set ``MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT``).
"""

from datetime import datetime

from auth.certificate import ParsedCredential
from nanoiot.errors import CertificateRejected


def validity_problem(
    not_before: datetime | None, not_after: datetime | None, now: datetime
) -> str | None:
    """Why a certificate is not valid at ``now`` (one short phrase), or None if it is.

    RFC 5280 §4.1.2.5: the validity period includes both ends.
    """
    if not_after is not None and now > not_after:
        return f"expired on {not_after:%Y-%m-%d %H:%M:%S} UTC"
    if not_before is not None and now < not_before:
        return f"not valid before {not_before:%Y-%m-%d %H:%M:%S} UTC"
    return None


def check_registrable(parsed: ParsedCredential, now: datetime, *, allow_expired: bool) -> None:
    """Refuse to register a certificate that has already expired, unless ``allow_expired``.

    A certificate that is not valid *yet* is accepted: devices are often provisioned before
    their certificate starts.
    """
    if allow_expired or parsed.not_after is None or now <= parsed.not_after:
        return
    raise CertificateRejected(
        f"the certificate {validity_problem(None, parsed.not_after, now)}: devices could not "
        "connect with it (register it anyway with --allow-expired)"
    )
