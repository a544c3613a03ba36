"""From an authentication decision to an admitted client (a ``Peer``), or a refusal.

Runs after ``Authenticator.authenticate`` and before any session is touched (MQTT 3.1.1
§3.1.2.4: the session is chosen by the client id, which only counts once we know whose it
is). Refuses what the store could not keep (a client id longer than its column) and what
the identity may not use (another device's name under the strict policy, a will topic
outside its ACL), so nothing is acknowledged that cannot be honoured.
"""

import secrets
from collections.abc import Callable
from dataclasses import replace

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auth.acl import CompiledAcl, Identity
from auth.decision import Decision, Reason, deny
from auth.pinning import vouched_common_name
from auth.topics import SYSTEM_PREFIX
from broker.authn import ConnectRequest
from broker.mqtt.packets import Connect
from broker.mqtt.wire import utf8
from broker.peer import Peer
from nanoiot.errors import MalformedPacket
from nanoiot.text import printable
from storage.models import MQTT_CLIENT_ID_MAX


def password_text(password: bytes | None) -> tuple[str | None, bool]:
    """(the password as text, whether it was usable). MQTT 3.1.1 §3.1.3.5 allows binary
    passwords; ours are text, so one that is not UTF-8 can match nothing."""
    if password is None:
        return None, True
    try:
        return utf8(password, "password"), True
    except MalformedPacket:
        return None, False


def admit(
    decision: Decision,
    connect: Connect,
    request: ConnectRequest,
    acl_for: Callable[[Identity], CompiledAcl],
    *,
    strict_client_id: bool,
) -> Peer | Decision:
    """The admitted client, or the refusal: the decision itself, or a client id or will topic
    this identity may not use."""
    holder = decision.holder
    if not decision.allowed or holder is None:
        return decision
    certificate = request.certificate
    cert_cn = vouched_common_name(certificate, holder) if certificate is not None else None
    identity = Identity(holder.device_id, holder.device_name, cert_cn, holder.application)
    client_id = _client_id(connect.client_id, identity, strict_client_id)
    refusal = _client_id_problem(client_id, connect.client_id, identity)
    if refusal is not None:
        return deny(
            Reason.CLIENT_ID_MISMATCH, refusal, holder=holder, fingerprint=decision.fingerprint
        )
    acl = acl_for(identity)
    # The registered PEM served this decision (``auth.pinning``); a live client keeps the
    # rest, not another half KiB of text.
    kept = replace(decision, holder=replace(holder, pinned_pem=None))
    peer = Peer(identity, kept, kept_request(request), acl, client_id or "")
    will = connect.will
    topic = "" if will is None else peer.canonical(will.topic)
    if will is not None and (topic.startswith(SYSTEM_PREFIX) or not acl.can_publish(topic)):
        return deny(
            Reason.WILL_NOT_ALLOWED, f"will topic '{printable(will.topic)}' is not allowed",
            holder=holder, fingerprint=decision.fingerprint,
        )  # fmt: skip
    return peer


def kept_request(request: ConnectRequest) -> ConnectRequest:
    """The request as a live client keeps it, for the decisions its device's changes call
    for (``broker.revocation``): its certificates parsed again from their DER, without the
    extensions and names this decision read, which a parsed certificate keeps once read
    (about 3 KiB a connection, most of what an idle device's certificate holds)."""
    if request.certificate is None and not request.chain:
        return request
    fresh = {id(c): x509.load_der_x509_certificate(c.public_bytes(Encoding.DER))
             for c in (request.certificate, *request.chain) if c is not None}  # fmt: skip
    leaf = fresh[id(request.certificate)] if request.certificate is not None else None
    return replace(request, certificate=leaf, chain=tuple(fresh[id(c)] for c in request.chain))


def _client_id(sent: str, identity: Identity, strict: bool) -> str | None:
    if strict and not identity.application:
        return identity.device_name if sent in ("", identity.device_name) else None
    # §3.1.3.1: the server assigns a unique id to a client that sent none (CleanSession 1).
    return sent or f"auto-{secrets.token_hex(8)}"


def _client_id_problem(client_id: str | None, sent: str, identity: Identity) -> str | None:
    if client_id is None:
        return f"client id '{printable(sent)}' is not the device name '{identity.device_name}'"
    if len(client_id) > MQTT_CLIENT_ID_MAX:
        return f"client id of {len(client_id)} characters: at most {MQTT_CLIENT_ID_MAX} are kept"
    return None
