"""The CONNECT phase of one client connection: from its CONNECT to its CONNACK, or a refusal.

The only asynchronous part of a connection (``broker.client``): one task, started by the
CONNECT and cancelled if the client goes away, authenticates the client (``Broker.decide``),
admits it (``broker.admission``) and takes its session over, which may wait for the previous
connection to close (MQTT 3.1.1 §3.1.4). It runs within ``connect_timeout`` of the connection's
start (``timed_out``). The accepted client gets its CONNACK and its keep-alive timer, and what
it sent behind its CONNECT is read once the previous run's sessions are all restored
(§3.1.2.4: a message published earlier would miss their subscriptions).

These functions work on the connection's own state, as ``broker.acks`` does.
"""

import functools
import logging
from typing import TYPE_CHECKING

from auth.connack import ConnackCode
from auth.decision import Decision
from broker import backpressure, cert_expiry, keep_alive, store_backlog
from broker.admission import admit, password_text
from broker.authn import ConnectRequest
from broker.connection_limit import host_of
from broker.journal import release_commit
from broker.mqtt.connection import AUTHENTICATING
from broker.mqtt.packets import MQTT_5, Connect
from broker.sessions import BrokerSession
from nanoiot.errors import SessionQuotaExceeded, StoreError

if TYPE_CHECKING:
    from broker.client import MqttClient

log = logging.getLogger("broker.client")  # logged as the connection it belongs to


async def run(client: "MqttClient", connect: Connect) -> None:
    """Authenticate and admit the client that sent ``connect``, then accept it or refuse."""
    broker = client.broker
    password, usable = password_text(connect.password)
    if not usable:
        broker.client_log.info(
            host_of(client.tls.remote[0]), "CONNECTs refused before authentication",
            "refused %s: password is not UTF-8 text", client.label,
        )  # fmt: skip
        refuse(client, ConnackCode.BAD_USERNAME_OR_PASSWORD)
        return
    tls = client.tls
    request = ConnectRequest(
        certificate=tls.peer_certificate, chain=tls.peer_chain, username=connect.username,
        password=password, client_id=connect.client_id, remote=tls.remote[0],
    )  # fmt: skip
    # What stays is the admitted peer's request, certificates parsed afresh (``admit``).
    tls.peer_certificate, tls.peer_chain = None, ()
    try:
        decision = await broker.decide(request)
        client.auth_counted = True
        broker.auth_throttle.decided(request.remote, decision)
        admitted = admit(
            decision, connect, request, broker.acl_for,
            strict_client_id=broker.config.strict_client_id,
        )  # fmt: skip
        if isinstance(admitted, Decision):
            broker.auth_log.refused(admitted, request, mqtt5=client.core.level == MQTT_5)
            # 5.0 §3.2.2.2: a 5.0 client reads why, in the auth log's words.
            refuse(client, admitted.connack, admitted.detail)
            return
        refusing = broker.registry.refusing
        if refusing is not None:  # §3.2.2.3 (5.0 0x88): the client may try elsewhere
            broker.client_log.info(
                host_of(client.tls.remote[0]), "CONNECTs refused while fenced off",
                "refused %s: %s", client.label, refusing,
            )  # fmt: skip
            refuse(client, ConnackCode.SERVER_UNAVAILABLE, refusing)
            return
        expiry = client._expiry()
        if store_backlog.refuses_connect(client, connect, expiry):
            store_backlog.refuse_connect(client)
            return
        broker.auth_log.allowed(decision, request, admitted.client_id)
        broker.auth_throttle.admitted(request.remote)
        client.peer = admitted
        broker.registry.admitted(client)  # reachable by a kick from now on
        taken = await broker.registry.take_over(client, connect.clean_start, expiry)
        if taken is not None and not client.ended:
            accept(client, *taken, connect)
    except SessionQuotaExceeded as exc:  # at the device's connect rate: limited per host
        broker.client_log.info(
            host_of(client.tls.remote[0]), "CONNECTs refused past max_sessions_per_device",
            "refused %s: %s", client.label, exc,
        )  # fmt: skip
        broker.metrics.count_limit("max_sessions_per_device")
        client.core.refuse(exc.return_code, exc.connack_reason, str(exc))
        client._end(will=False)
    except StoreError as exc:  # its stored session cannot be read: it may retry
        broker.client_log.warning(
            host_of(client.tls.remote[0]), "CONNECTs refused for a session not read",
            "refused %s: its session cannot be restored: %s", client.label, exc,
        )  # fmt: skip
        refuse(client, ConnackCode.SERVER_UNAVAILABLE)
    except Exception:
        log.exception("admitting %s failed", client.label)
        client._end(will=False)


def accept(client: "MqttClient", session: BrokerSession, present: bool, connect: Connect) -> None:
    """CONNACK the admitted client with ``session`` (``present``: it was there before)."""
    client.session = session
    client.tls.admitted()  # off its host's max_connecting_per_address
    client.broker.unadmitted.release(client)  # and off max_unadmitted_bytes
    if client._timer is not None:
        client._timer.cancel()
        client._timer = None
    peer = client.peer
    assert peer is not None
    # Released messages whose PUBREL waits until the store has committed the release (§4.3.3):
    # the others' goes at once, in the order of the messages.
    later = [m.packet_id for m in session.inflight.values() if release_commit(m) is not None]
    events = client.core.accept(
        session, session_present=present,
        # 5.0 §3.2.2.3.7: the client id the server chose for one that sent none.
        assigned_client_id=peer.client_id if not connect.client_id else None,
        # §3.2.2.3.15: where the device may have responses sent (its own topics).
        response_information=(
            None if peer.identity.application else f"devices/{peer.identity.device_name}/"
        ),
        pubrel_later=later,
    )  # fmt: skip
    keep_alive.arm(client)
    cert_expiry.arm(client)
    if events:
        client._handle(events)
    if client.ended:
        return
    client._flush()
    restoring = client.broker.restoring()
    if restoring is not None:
        # Its own session is complete; others may not be in yet, and a message it
        # published now would miss their subscriptions (§3.1.2.4): it is read afterwards.
        client._stash = []
        client._paused = True
        client.tls.pause_reading()
        restoring.add_done_callback(functools.partial(restored, client))
        return
    restored(client)


def restored(client: "MqttClient", _done: object = None) -> None:
    """Read what the client sent behind its CONNECT, and from now on as it comes."""
    if client.ended:
        return
    stashed, client._stash = client._stash, None
    if client._paused:
        client._paused = False
        backpressure.resume(client)
    client._receive(b"".join(stashed) if stashed else b"")
    if not client.ended:
        client._flush()


def refuse(client: "MqttClient", code: int, reason: str | None = None) -> None:
    """CONNACK with the refusal ``code`` (and, to a 5.0 client, ``reason``), then close."""
    client.core.refuse(code, None, reason)
    client._end(will=False)


def ended(client: "MqttClient") -> None:
    """The client's connection ended: the bytes it held before it was admitted go back, and a
    client never admitted nor decided cost a TLS handshake for nothing (``broker.
    auth_throttle``)."""
    broker = client.broker
    broker.unadmitted.release(client)
    if client.peer is None and not client.auth_counted:
        broker.auth_throttle.abandoned(client.tls.remote[0])


def timed_out(client: "MqttClient") -> None:
    """``connect_timeout`` after the connection started: close it unless it was accepted."""
    client._timer = None
    if client.session is None and not client.ended:
        phase = "no CONNECT" if client.core.state != AUTHENTICATING else "not admitted"
        # Not admitted in time: the broker's slowness (a password check's queue), not the
        # client's doing; no CONNECT in time: a handshake for nothing (broker.auth_throttle).
        client.auth_counted = client.core.state == AUTHENTICATING
        client.broker.client_log.info(
            host_of(client.tls.remote[0]), f"connections with {phase} in time",
            "refused %s: %s within %g s", client.label, phase,
            client.broker.config.connect_timeout,
        )  # fmt: skip
        client._end(will=False)
