"""What the connect path saves, each with the behaviour it must keep.

- The server context accepts any client chain in the handshake (trust is decided after it)
  and still insists on a certificate when one is required.
- The compiled ACL is built once per identity, shared by its connections, from a bounded cache.
- A connection waits for its CONNECT within the connect timeout without a task of its own.
- The broker's long-lived start-up objects are frozen out of the garbage collector.
"""

import asyncio
import contextlib
import gc
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL

from auth.acl import Acl, CompiledAcl, Identity
from broker import core
from broker.tls import build_server_context
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, device_client


def _handshake(server: SSL.Context, client: ssl.SSLContext) -> SSL.Connection:
    """A TLS handshake over memory BIOs; the server's connection once both are done."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(incoming, outgoing, server_hostname="localhost")
    tls_server = SSL.Connection(server, None)
    tls_server.set_accept_state()
    client_done = server_done = False
    for _ in range(10):
        try:
            tls_client.do_handshake()
            client_done = True
        except ssl.SSLWantReadError:
            pass
        tls_server.bio_write(outgoing.read())
        try:
            tls_server.do_handshake()
            server_done = True
        except SSL.WantReadError:
            pass
        with contextlib.suppress(SSL.WantReadError):
            incoming.write(tls_server.bio_read(65536))
        if client_done and server_done:
            return tls_server
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("client_kind", ["ec", "rsa"])
def test_any_client_chain_is_accepted(
    tls_settings: Callable[..., Settings],
    pki: ServerPki,
    client_ec: ClientFiles,
    client_rsa: ClientFiles,
    client_kind: str,
) -> None:
    client = client_ec if client_kind == "ec" else client_rsa  # self-signed, unknown to us
    context = build_server_context(tls_settings())
    server = _handshake(context, pki.client_context(client))

    peer = server.get_peer_certificate(as_cryptography=True)
    assert peer is not None
    assert peer.subject.rfc4514_string() == client.issued.cert.subject.rfc4514_string()


def test_a_required_client_certificate_is_still_required(
    tls_settings: Callable[..., Settings], pki: ServerPki
) -> None:
    context = build_server_context(tls_settings(require_client_certificate=True))
    with pytest.raises((SSL.Error, ssl.SSLError)):
        _handshake(context, pki.client_context(None))


def test_the_compiled_acl_is_made_once_per_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[Identity] = []
    original = Acl.for_identity

    def counting(self: Acl, identity: Identity) -> CompiledAcl:
        compiled.append(identity)
        return original(self, identity)

    monkeypatch.setattr(Acl, "for_identity", counting)
    broker = BrokerThread(broker_settings(tmp_path / "data"))
    try:
        first, issued = device_client(broker, tmp_path, "gauge", client_id="g")
        assert first.wait_connack() == 0
        first.close()
        again, _ = device_client(broker, tmp_path, "gauge", issued, client_id="g")
        try:
            assert again.wait_connack() == 0
            # The shared ACL still decides: its own topics yes, another device's no.
            assert again.subscribe("v1/devices/me/rpc/request/+") == [1]
            assert again.subscribe("devices/other/#") == [128]
        finally:
            again.close()
    finally:
        broker.stop()
    assert [identity.device_name for identity in compiled] == ["gauge"]


def test_the_acl_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "_ACL_CACHE_SIZE", 2)
    broker = core.Broker.__new__(core.Broker)
    broker.acl = Acl()
    broker._acls = {}
    identities = [Identity(f"id-{n}", f"device-{n}") for n in range(5)]
    acls = [broker.acl_for(identity) for identity in identities]
    assert len(broker._acls) <= 2
    assert acls[4].can_publish("devices/device-4/telemetry")
    assert not acls[4].can_publish("devices/device-3/telemetry")


async def _record_tasks(created: list[str]) -> None:
    """Note the coroutine of every task the broker's loop creates from now on."""
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> "asyncio.Future[Any]":
        created.append(getattr(coro, "__qualname__", ""))
        return asyncio.Task(coro, loop=loop)

    loop.set_task_factory(factory)


async def _stop_recording() -> None:
    asyncio.get_running_loop().set_task_factory(None)


def test_a_silent_connection_is_closed_at_the_connect_timeout_without_a_task(
    tmp_path: Path,
) -> None:
    broker = BrokerThread(broker_settings(tmp_path / "data", tls_handshake_timeout=0.5))
    created: list[str] = []
    try:
        context = ssl.create_default_context(cafile=str(broker.server_cert))
        context.check_hostname = False
        broker.call(_record_tasks(created))
        raw = socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT)
        with context.wrap_socket(raw) as tls:  # the handshake is done; no CONNECT follows
            started = time.monotonic()
            assert tls.recv(1) == b""  # closed by the broker
        assert 0.3 < time.monotonic() - started < WAIT
        broker.call(_stop_recording())
        # The transport and the connection wait with a timer each, not a task.
        assert [name for name in created if name.startswith(("MqttClient", "TlsServer"))] == []
    finally:
        broker.stop()


@pytest.fixture
def frozen_count() -> Iterator[int]:
    before = gc.get_freeze_count()
    yield before
    gc.unfreeze()  # the test process goes on with other brokers


def test_start_up_objects_are_frozen_out_of_the_collector(
    tmp_path: Path, frozen_count: int
) -> None:
    gc.unfreeze()
    broker = BrokerThread(broker_settings(tmp_path / "data"))
    try:
        assert gc.get_freeze_count() > 0
    finally:
        broker.stop()
