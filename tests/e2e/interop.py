"""Shared helpers for the interoperability tests: real clients against a real broker.

Keys come from the shipped scripts (``conf/server.keygen.sh``, ``conf/client.keygen.sh``), run
the way an operator runs them: copied with ``keygen.properties`` into a folder, stdin closed.
External clients (mosquitto, MQTT.js, Java) run as subprocesses whose output lines feed a
queue; tests wait on those lines with bounded timeouts, never on time, and every process is
killed in a ``finally`` block (``Process`` is a context manager).
"""

import contextlib
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from types import TracebackType
from typing import Self

import pytest

from auth.certificate import parse_credential
from nanoiot.settings import Settings
from storage.records import Device
from tests.e2e.harness import WAIT, BrokerThread, broker_settings

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
VENV_BIN = Path(sys.executable).parent
SHIPPED = ("keygen.properties", "server.keygen.sh", "client.keygen.sh")

# MQTT.js lives in a project-local, git-ignored folder that .ci/run fills with
# `npm install --prefix tests/e2e/.node mqtt@5`.
NODE_PREFIX = REPO / "tests" / "e2e" / ".node"
MQTTJS_MODULE = NODE_PREFIX / "node_modules" / "mqtt"
MQTTJS_CLI = NODE_PREFIX / "node_modules" / ".bin" / "mqtt"
JAVA_SOURCES = REPO / "tests" / "e2e" / "java"
# Debian's libmqtt-client-java (org.fusesource.mqtt-client) and what it depends on.
JAVA_JARS = tuple(
    Path("/usr/share/java") / name
    for name in ("mqtt-client.jar", "hawtdispatch-transport.jar", "hawtdispatch.jar", "hawtbuf.jar")
)


# --- tools --------------------------------------------------------------------------------


def require_tool(name: str, package: str) -> str:
    """The path of an external program, or a skip naming the package that provides it."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: install the Debian package {package} (.ci/run does)")
    return found


def require_mqttjs() -> Path:
    require_tool("node", "nodejs")
    if not MQTTJS_CLI.exists():
        pytest.skip(
            f"MQTT.js is not installed in {NODE_PREFIX}: "
            f"run `npm install --prefix {NODE_PREFIX.relative_to(REPO)} mqtt@5` (.ci/run does)"
        )
    return MQTTJS_CLI


def require_java_mqtt_client() -> tuple[str, str, str]:
    """``(javac, java, classpath)`` for Debian's libmqtt-client-java, or a skip."""
    javac = require_tool("javac", "openjdk-17-jdk-headless")
    java = require_tool("java", "openjdk-17-jdk-headless")
    missing = [str(jar) for jar in JAVA_JARS if not jar.exists()]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} missing: install the Debian package libmqtt-client-java "
            "(.ci/run does)"
        )
    return javac, java, os.pathsep.join(str(jar) for jar in JAVA_JARS)


# --- processes ----------------------------------------------------------------------------


class Process:
    """A subprocess whose merged stdout and stderr lines feed a queue the test waits on."""

    def __init__(
        self,
        args: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = [str(arg) for arg in args]
        self.lines: Queue[str | None] = Queue()
        self.output: list[str] = []
        self.popen = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # end of output

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    def wait_for(self, wanted: str | Callable[[str], bool], timeout: float = WAIT) -> str:
        """The first new output line containing ``wanted`` (or satisfying it); fail otherwise."""
        matches = wanted if callable(wanted) else lambda line: wanted in line
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except Empty:
                pytest.fail(
                    f"{self.args[0]}: no line matching {wanted!r} within {timeout} s:\n{self.text}"
                )
            if line is None:
                self.lines.put(None)
                pytest.fail(
                    f"{self.args[0]} ended without a line matching {wanted!r}:\n{self.text}"
                )
            self.output.append(line)
            if matches(line):
                return line

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the process to end and its output to be read; its exit status."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.args[0]} did not end within {timeout} s:\n{self.text}")
        self._reader.join(timeout)
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.output.append(line)
        self.lines.put(None)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(WAIT)
        if self.popen.stdout is not None:
            self._reader.join(WAIT)
            self.popen.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.kill()


def run(
    args: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, str]:
    """Run a command to its end (killed if it outlives ``timeout``): exit status and output."""
    with Process(args, cwd=cwd, env=env) as process:
        code = process.finish(timeout)
        return code, process.text


def checked(
    args: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> str:
    """``run`` that fails the test, with the command's output, unless it exits 0."""
    code, output = run(args, cwd=cwd, env=env, timeout=timeout)
    if code != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {code}:\n{output}")
    return output


# --- keys from the shipped scripts --------------------------------------------------------


def operator_env(data_dir: Path | None = None) -> dict[str, str]:
    """The environment of an operator's shell: the virtualenv's bin first on PATH, none of
    this session's NanoIoT settings, and ``NANOIOT_DATA_DIR`` if given (the broker's store)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOIOT_", "MQTT_SSL_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if data_dir is not None:
        env["NANOIOT_DATA_DIR"] = str(data_dir)
    return env


@dataclass(frozen=True)
class DeviceKeys:
    """What ``client.keygen.sh`` writes for one device."""

    name: str  # the certificate's CN, and the device's name when provisioned
    nopass: Path  # key + certificate (paho certfile, mosquitto --cert/--key)
    pub: Path  # the certificate: what is provisioned
    jks: Path  # PKCS#12 key store + trust store for Java, password "password"


@dataclass(frozen=True)
class Keys:
    """A folder holding the shipped scripts and the broker's files they wrote."""

    folder: Path
    server_cert: Path  # mqttserver.pub.pem: the broker's certificate, and clients' ca_certs
    server_key: Path  # mqttserver.key.pem

    def device(self, name: str, prefix: str | None = None) -> DeviceKeys:
        """Run ``client.keygen.sh --cn NAME`` (``--prefix PREFIX`` if given) in the folder."""
        args = ["./client.keygen.sh", "--cn", name]
        if prefix is not None:
            args += ["--prefix", prefix]
        checked(args, cwd=self.folder, env=operator_env())
        stem = self.folder / (prefix or "mqttclient")
        return DeviceKeys(
            name,
            Path(f"{stem}.nopass.pem"),
            Path(f"{stem}.pub.pem"),
            Path(f"{stem}.jks"),
        )

    def settings(self, data_dir: Path, **overrides: object) -> Settings:
        """Broker settings using the generated server PEM certificate and key."""
        return broker_settings(
            data_dir,
            mqtt_ssl_pem_cert=self.server_cert,
            mqtt_ssl_pem_key=self.server_key,
            **overrides,
        )


def make_keys(folder: Path) -> Keys:
    """Ship the scripts and ``keygen.properties`` into ``folder`` and run server.keygen.sh."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        shutil.copy2(CONF / name, folder / name)
    checked(["./server.keygen.sh"], cwd=folder, env=operator_env())
    return Keys(folder, folder / "mqttserver.pub.pem", folder / "mqttserver.key.pem")


@contextlib.contextmanager
def running_broker(keys: Keys, data_dir: Path, **overrides: object) -> Iterator[BrokerThread]:
    """A broker with the generated server certificate; always stopped."""
    broker = BrokerThread(keys.settings(data_dir, **overrides))
    try:
        yield broker
    finally:
        broker.stop()


def provision_pem(broker: BrokerThread, device: DeviceKeys) -> Device:
    """Register a script-made certificate for a new device straight in the broker's store
    (the CLI path, which takes ~2 s per command, is exercised in test_product_text)."""
    credential = parse_credential(device.pub.read_bytes())
    created, _ = broker.call(
        broker.running.store.create_device_with_credential(device.name, x509=credential)
    )
    return created


# --- paho ----------------------------------------------------------------------------------


def deprecated_protocol(tls_version: ssl._SSLMethod) -> contextlib.AbstractContextManager[object]:
    """Python warns when a fixed-version ``ssl.PROTOCOL_TLSv1*`` context is made; expect that
    warning exactly there (pytest runs with filterwarnings=error)."""
    if tls_version == ssl.PROTOCOL_TLS_CLIENT:
        return contextlib.nullcontext()
    return pytest.warns(DeprecationWarning, match=f"{tls_version.name} is deprecated")


def close_leaked_tls_socket(exc: BaseException) -> None:
    """paho 2.2 does not close its SSLSocket when the handshake fails (client.py,
    ``_ssl_wrap_socket``); close it here, or its ResourceWarning surfaces in whichever later
    test the garbage collector happens to run (filterwarnings=error)."""
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        sock = frame.f_locals.get("ssl_sock")
        if isinstance(sock, ssl.SSLSocket):
            sock.close()
