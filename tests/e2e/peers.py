"""Two kinds of real peers for protocol tests over mutual TLS.

``Paho``: a paho-mqtt client (the real client devices use) whose every callback feeds a queue:
CONNACK with session present, messages, SUBACK, UNSUBACK, PUBACK/PUBCOMP of its own
publishes, and paho's log lines (to see a PUBREL arrive, which paho does not report
otherwise). ``Raw``: a blocking TLS socket that writes packets made with the core's own
codec and reads the broker's packets back, for what paho will not do (a second CONNECT,
another protocol name, never acknowledging anything).
"""

import contextlib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from broker.mqtt.decode import decode
from broker.mqtt.encode import encode
from broker.mqtt.packets import (
    MQTT_3_1_1,
    Connack,
    Connect,
    Packet,
    Pingreq,
    Pingresp,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
)
from broker.mqtt.wire import Reader
from tests.e2e.harness import V311_RETURN_CODE, WAIT
from tests.paho_loop import stop_loop

HOST = "127.0.0.1"


class Paho:
    def __init__(
        self,
        port: int,
        server_cert: Path,
        certfile: Path,
        client_id: str,
        *,
        clean_session: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int] | None = None,
        manual_ack: bool = False,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
    ) -> None:
        """``on_message``: where messages go instead of ``messages``, from the very first
        (those a session had waiting come right behind the CONNACK)."""
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
            manual_ack=manual_ack, protocol=protocol, reconnect_on_failure=False,
        )  # fmt: skip
        self.connacks: Queue[tuple[int, bool]] = Queue()
        self.messages: Queue[mqtt.MQTTMessage] = Queue()
        self.subacks: Queue[list[int]] = Queue()
        self.unsubacks: Queue[int] = Queue()
        self.published: Queue[int] = Queue()
        self.logs: Queue[str] = Queue()
        self.disconnected: Queue[bool] = Queue()
        paho = self.paho
        paho.tls_set(ca_certs=str(server_cert), certfile=str(certfile), keyfile=None)
        if will is not None:
            paho.will_set(will[0], will[1], qos=will[2])
        paho.on_connect = self._on_connect
        deliver = on_message or self.messages.put
        paho.on_message = lambda _c, _u, message: deliver(message)
        paho.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put([c.value for c in codes])
        paho.on_unsubscribe = lambda _c, _u, mid, *_rest: self.unsubacks.put(mid)
        paho.on_publish = lambda _c, _u, mid, _rc, _p: self.published.put(mid)
        paho.on_log = lambda _c, _u, _level, line: self.logs.put(line)
        paho.on_disconnect = lambda *_args: self.disconnected.put(True)
        paho.connect_async(HOST, port, keepalive=keepalive)
        paho.loop_start()

    def _on_connect(self, _c: object, _u: object, flags: Any, code: ReasonCode, _p: object) -> None:
        self.connacks.put((V311_RETURN_CODE.get(code.value, code.value), flags.session_present))

    def connack(self) -> tuple[int, bool]:
        return self.connacks.get(timeout=WAIT)

    def subscribe(self, *filters: tuple[str, int]) -> list[int]:
        self.paho.subscribe(list(filters))
        return self.subacks.get(timeout=WAIT)

    def unsubscribe(self, topic_filter: str) -> None:
        self.paho.unsubscribe(topic_filter)
        self.unsubacks.get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False) -> None:
        """Publish and wait until it is acknowledged (PUBACK, or PUBCOMP at QoS 2)."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT)
        assert info.is_published()

    def receive(self, count: int) -> list[mqtt.MQTTMessage]:
        return [self.messages.get(timeout=WAIT) for _ in range(count)]

    def nothing_more(self, within: float = 0.5) -> bool:
        """True if no message arrives; only after a round trip proved delivery works."""
        try:
            self.messages.get(timeout=within)
        except Empty:
            return True
        return False

    def wait_log(self, fragment: str) -> str:
        while True:
            line = self.logs.get(timeout=WAIT)
            if fragment in line:
                return line

    def close(self) -> None:
        self.paho.disconnect()
        stop_loop(self.paho)

    def drop(self) -> None:
        """Go away without DISCONNECT, as a device that loses its network."""
        stop_loop(self.paho)
        sock = self.paho.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


class Raw:
    """A blocking TLS connection: packets in with the core's codec, packets out."""

    def __init__(
        self,
        port: int,
        server_cert: Path,
        certfile: Path,
        level: int = MQTT_3_1_1,
        *,
        receive_buffer: int | None = None,
        plain: bool = False,
    ) -> None:
        """``receive_buffer``: a small socket buffer, for a client that will stop reading.
        ``plain``: TCP without TLS, to a TLS proxy (``tests.e2e.tls_proxy``)."""
        raw = socket.socket()
        if receive_buffer is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        raw.settimeout(WAIT)
        raw.connect((HOST, port))
        self.sock: socket.socket = raw
        if not plain:
            context = ssl.create_default_context(cafile=str(server_cert))
            context.load_cert_chain(str(certfile))
            self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.level = level
        self._buffer = b""

    def send(self, *packets: Packet | bytes) -> None:
        self.sock.sendall(
            b"".join(p if isinstance(p, bytes) else encode(p, self.level) for p in packets)
        )

    def connect(self, connect: Connect) -> Connack:
        """Send ``connect``; the CONNACK that accepts it."""
        self.send(connect)
        connack = self.read()
        assert isinstance(connack, Connack)
        assert connack.code == 0
        return connack

    def publishes_before_pingresp(self) -> list[Publish]:
        """Every PUBLISH the broker sent before its answer to a PINGREQ sent now: what it sent
        at once, without waiting for an acknowledgement (on a resumed session, the messages
        queued for it go out right after CONNACK, before that answer)."""
        self.send(Pingreq())
        found: list[Publish] = []
        while not isinstance(packet := self.read(), Pingresp):
            assert isinstance(packet, Publish)
            found.append(packet)
        return found

    def publish_again_and_release(self, topic: str, payload: bytes, packet_id: int) -> None:
        """A QoS 2 PUBLISH sent again (DUP) and then released: the broker must answer PUBREC
        and PUBCOMP (MQTT 3.1.1 §4.3.3), whether or not it routes it."""
        self.send(Publish(topic, payload, 2, dup=True, packet_id=packet_id))
        assert self.read() == Pubrec(packet_id)
        self.send(Pubrel(packet_id))
        assert self.read() == Pubcomp(packet_id)

    def read(self) -> Packet | None:
        """The next packet from the broker; None once it closed the connection."""
        while True:
            if len(self._buffer) >= 2:
                reader = Reader(self._buffer, 1)
                with contextlib.suppress(Exception):
                    length = reader.varint("remaining length")
                    end = reader.at + length
                    if end <= len(self._buffer):
                        data, self._buffer = self._buffer, self._buffer[end:]
                        return decode(data[0], data, reader.at, end, self.level)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk

    def closed(self) -> bool:
        """True if the broker closes the connection (whatever it sent before)."""
        try:
            while self.read() is not None:
                pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
