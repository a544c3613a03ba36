"""A will as the cluster keeps it for survivors (``broker.cluster.wills``): what a survivor
needs to publish it, as one entry of ``<cluster>_wills``, and the key prefix of the member run
it belongs to; reading a run's entries and deleting one; whether a connect ended the session
of a delayed will."""

import base64
import binascii
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding

from broker.cluster.claim_value import clean_start
from broker.cluster.kv import KeyValue
from broker.mqtt.properties import Properties, Property, encode_properties
from broker.peer import SessionKey
from broker.sessions import connect_ends
from nanoiot.errors import ClusterConflictError, ClusterError

if TYPE_CHECKING:
    from broker.client import MqttClient

__all__ = [
    "StoredWill", "decode_will", "delete_will", "encode_will", "ends_session", "incarnation",
    "stored_will", "wills_of",
]  # fmt: skip

log = logging.getLogger("broker.cluster.survivor")  # where operators read of wills published


def incarnation(name: str, pid: int, started: float, run: int) -> str:
    """The prefix of one run's will entries, and its departure's key:
    ``<member>.<pid>-<start in ms>``, then ``-<run>`` after a fencing (no dot: a run's keys
    never match another's filter). The start time tells apart two processes of one member
    with the same pid: a container's process is always pid 1, and a departure's entry stays
    ``DEPARTURES_KEPT`` (a member restarted within that time would find it done)."""
    process = f"{name}.{pid}-{round(started * 1000)}"
    return process if run == 0 else f"{process}-{run}"


@dataclass(frozen=True)
class StoredWill:
    """A will as a survivor needs it: the topic in canonical form, the properties to send
    (without the Will Delay Interval), and how long to wait."""

    key: SessionKey
    claim: int  # the revision of the session's claim made by the will's connection
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: bytes  # encoded as in a PUBLISH (§2.2.2); empty: none
    delay: int  # seconds
    # When the delay ends, in seconds since the epoch: written to the entry by the survivor
    # that starts the delay, read by one that takes its departure over (None: not started).
    due: float | None = None
    # What its connection was admitted with, for a survivor to decide its device again
    # before it publishes (``broker.cluster.will_decision``): the certificate chain the
    # client presented (DER, its own first), or without one the credential's id (a token
    # or password is never written here). Neither: written by an earlier version.
    chain: tuple[bytes, ...] = ()
    credential: str | None = None


def encode_will(will: StoredWill) -> bytes:
    record = {
        "key": list(will.key),
        "claim": will.claim,
        "topic": will.topic,
        "payload": base64.b64encode(will.payload).decode(),
        "qos": will.qos,
        "retain": will.retain,
        "properties": base64.b64encode(will.properties).decode(),
        "delay": will.delay,
        "due": will.due,
        "chain": [base64.b64encode(der).decode() for der in will.chain],
        "credential": will.credential,
    }
    return json.dumps(record).encode()


def decode_will(data: bytes) -> StoredWill:
    try:
        raw = json.loads(data)
        device_id, client_id = raw["key"]
        due = raw.get("due")  # an entry written before it was kept has none
        if due is not None and not math.isfinite(due):
            raise ValueError(f"due {due}")
        return StoredWill(
            (str(device_id), str(client_id)), int(raw["claim"]), str(raw["topic"]),
            base64.b64decode(raw["payload"]), int(raw["qos"]), bool(raw["retain"]),
            base64.b64decode(raw["properties"]), int(raw["delay"]),
            None if due is None else float(due),
            tuple(base64.b64decode(der) for der in raw.get("chain", ())),
            None if raw.get("credential") is None else str(raw["credential"]),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ClusterError(f"a stored will is not readable: {exc}") from None


def stored_will(client: "MqttClient", claim: int) -> StoredWill | None:
    """The will of ``client`` as a survivor would publish it; None if it has none."""
    will, peer = client.core.will, client.peer
    if will is None or peer is None:
        return None
    delay = will.properties.get(Property.WILL_DELAY_INTERVAL, 0) if will.properties else 0
    v5 = client.core.v5
    expiry = v5.session_expiry if v5 is not None else None
    wait = min(delay, expiry) if isinstance(delay, int) and delay and expiry else 0
    kept = [item for item in will.properties or () if item[0] != Property.WILL_DELAY_INTERVAL]
    properties = encode_properties(Properties(kept)) if kept else b""
    holder = peer.decision.holder
    request = peer.request  # its chain starts with its certificate (``ConnectRequest``)
    certs = request.chain or (() if request.certificate is None else (request.certificate,))
    chain = tuple(cert.public_bytes(Encoding.DER) for cert in certs)
    return StoredWill(
        peer.key, claim, peer.canonical(will.topic), will.payload, will.qos, will.retain,
        properties, wait, None, chain,
        None if chain or holder is None else holder.credential_id,
    )  # fmt: skip


def ends_session(claim: bytes) -> bool:
    """Whether the connect that made ``claim`` ended the session of a delayed will: the
    one rule of a take-over (``BrokerSession.ends_with_connect``). A will waits for its delay
    only if its session was kept (``stored_will``: a session expiry interval), so the
    session was persistent: the connect's Clean Start decides."""
    return connect_ends(clean_start(claim), persistent=True)


async def delete_will(bucket: KeyValue, kv_key: str, revision: int | None) -> None:
    """Delete a will's entry (only at ``revision``, when given)."""
    try:
        await bucket.delete(kv_key, revision)
    except ClusterConflictError:
        pass  # a newer connection's will: it stays
    except ClusterError as exc:
        log.info("%s (the will's entry stays until the member's departure)", exc)


async def wills_of(bucket: KeyValue, run: str) -> list[tuple[str, StoredWill, int]]:
    """The will entries of member run ``run`` (``incarnation``): key, will, revision."""
    found: list[tuple[str, StoredWill, int]] = []
    watch = await bucket.watch(f"{run}.>")
    try:
        while (change := await watch.value()) is not None:
            kv_key, value = change
            if value is None:
                continue
            try:  # a watch gives entries in revision order: the last given is this one
                found.append((kv_key, decode_will(value), watch.revision))
            except ClusterError as exc:
                log.warning("%s/%s: %s", bucket.bucket, kv_key, exc)
    finally:
        await watch.stop()
    return found
