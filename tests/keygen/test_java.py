"""A real Java TLS client with the client keystore, against a Python server with the server
files: the reference's users failed right here (key vs store password, missing trust)."""

import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from tests.keygen.conftest import REPO, Generated
from tests.keygen.tlsutil import server_context

JAVA_CLIENT = REPO / "tests" / "keygen" / "data" / "KeystoreClient.java"


@pytest.mark.slow
@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_java_client_connects_with_the_client_keystore(generated: Generated, hostname: str) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("Java is not installed on this machine; install a JDK to run this check")
    folder = generated.folder
    context = server_context(
        folder / "mqttserver.pub.pem", folder / "mqttserver.key.pem", folder / "mqttclient.pub.pem"
    )
    peer: dict[str, object] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        server = threading.Thread(target=_serve_once, args=(listener, context, peer))
        server.start()
        port = listener.getsockname()[1]
        result = subprocess.run(
            [
                java,
                str(JAVA_CLIENT),
                str(folder / "mqttclient.jks"),
                "password",
                hostname,
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        server.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("handshake ok TLSv1.")
    assert peer.get("error") is None
    assert "subject" in peer


def _serve_once(listener: socket.socket, context: ssl.SSLContext, peer: dict[str, object]) -> None:
    """Accept one connection, complete the handshake, read the client's one byte."""
    try:
        connection, _address = listener.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            certificate = tls.getpeercert()
            peer["subject"] = certificate["subject"] if certificate else None
            tls.recv(1)
    except (OSError, ssl.SSLError) as exc:
        peer["error"] = exc
