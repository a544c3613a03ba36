"""The test TLS proxy (tests/e2e/tls_proxy.py) leaves no socket open when it stops, even one
whose TLS peer never answers its close_notify: a leaked socket surfaces later, in whichever
test the garbage collector runs in, as an unraisable ResourceWarning."""

import datetime as dt
import gc
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanoiot.keygen.files import write_files
from nanoiot.keygen.outputs import ServerPaths, server_outputs
from nanoiot.keygen.properties import build_properties
from tests.certgen import issue
from tests.e2e.harness import WAIT, write_pem
from tests.e2e.tls_proxy import TlsProxy


class SilentTlsPeer:
    """A TLS server that completes the handshake, reads until the proxy's close_notify, and
    then neither answers it nor closes: the proxy's graceful close waits on it forever."""

    def __init__(self, paths: ServerPaths) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(paths.cert_pem), str(paths.key_pem))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.close_notify = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with self._context.wrap_socket(connection, server_side=True) as tls:
            while tls.recv(4096):
                pass
            self.close_notify.set()
            self._release.wait(WAIT)

    def stop(self) -> None:
        self._release.set()
        self._thread.join(WAIT)
        self._listener.close()


@pytest.fixture
def server_paths(tmp_path: Path) -> ServerPaths:
    props = build_properties({}, "test")
    paths = ServerPaths.of(props, tmp_path)
    write_files(server_outputs(props, paths, with_ca=False, now=dt.datetime.now(dt.UTC)))
    return paths


@pytest.fixture
def silent_peer(server_paths: ServerPaths) -> Iterator[SilentTlsPeer]:
    peer = SilentTlsPeer(server_paths)
    yield peer
    peer.stop()


def test_stopping_with_a_close_unanswered_leaves_no_socket_open(
    tmp_path: Path, server_paths: ServerPaths, silent_peer: SilentTlsPeer
) -> None:
    certfile = write_pem(tmp_path, issue("device"), "device")
    proxy = TlsProxy(silent_peer.port, server_paths.cert_pem, certfile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT) as client:
            client.sendall(b"\x10\x00")
        # The client's end reached the proxy: it closed its TLS side and waits for the answer.
        assert silent_peer.close_notify.wait(WAIT)
        proxy.stop()
        del proxy
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []
