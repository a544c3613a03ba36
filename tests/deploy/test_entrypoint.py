"""scripts/entrypoint as a real process: wait for PostgreSQL, migrate, exec the server; a device
provisioned with the shipped tools connects with mutual TLS; SIGTERM stops it cleanly.

The start script is installed as in the image (``nanoiot-entrypoint`` in a bin folder of its
own, ``nanoiot`` and the keygen scripts found on PATH) and run from an empty working
directory with only the container's variables, against a fresh database of the PostgreSQL
server on this machine. The server's processes bind 127.0.0.1 on free ports.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.files import ENTRYPOINT, dockerfile_instructions, healthcheck_command
from tests.e2e.harness import WAIT, mqtt_client
from tests.e2e.interop import VENV_BIN, Process, checked

DEVICE = "sensor-1"
START = 60.0  # seconds: interpreter start-ups, migration and TLS set-up on a busy machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def image_path(bin_dir: Path) -> str:
    """PATH as in the image: the start script's folder, then nanoiot's, then the system's."""
    return os.pathsep.join([str(bin_dir), str(VENV_BIN), "/usr/bin", "/bin"])


@dataclass(frozen=True)
class Container:
    """What the container would hold: its bin folder, environment and data volume."""

    bin_dir: Path
    workdir: Path
    data: Path
    env: dict[str, str]
    mqtt_port: int
    http_port: int

    @property
    def server_cert(self) -> Path:
        return self.data / "certs" / "mqttserver.pub.pem"

    @contextlib.contextmanager
    def start(self, *args: str) -> Iterator[Process]:
        """The start script in a process group of its own (setsid execs it, same pid), so
        that whatever it left running, had it failed to exec or to stop its steps, is
        killed afterwards with the group."""
        command: list[str | Path] = ["setsid", self.bin_dir / "nanoiot-entrypoint", *args]
        with Process(command, cwd=self.workdir, env=self.env) as process:
            try:
                yield process
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)


@pytest.fixture
def container(tmp_path: Path) -> Container:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy2(ENTRYPOINT, bin_dir / "nanoiot-entrypoint")
    workdir = tmp_path / "workdir"  # empty: no conf/nanoiot.yaml, no keygen.properties
    workdir.mkdir()
    data = tmp_path / "volume"
    env = {
        "PATH": image_path(bin_dir),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "NANOIOT_DATA_DIR": str(data),
        "NANOIOT_HTTP_BIND_ADDRESS": "127.0.0.1",
        "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
        "NANOIOT_ADMIN_TOKEN": secrets.token_hex(32),
    }
    return Container(bin_dir, workdir, data, env, free_port(), free_port())


@pytest.fixture
def serving(container: Container, postgres_url: str) -> Iterator[tuple[Container, Process]]:
    """Server credentials made as the keygen service makes them, then the entrypoint started
    on a fresh PostgreSQL database; killed afterwards if a test left it running."""
    output = checked(
        ["server.keygen.sh", "--dir", str(container.data / "certs")],
        cwd=container.workdir,
        env=container.env,
    )
    assert f"MQTT_SSL_PEM_CERT={container.server_cert}" in output
    container.env.update(
        {
            "NANOIOT_DATABASE_URL": postgres_url,
            "NANOIOT_HTTP_PORT": str(container.http_port),
            "MQTT_SSL_BIND_PORT": str(container.mqtt_port),
            "MQTT_SSL_CREDENTIALS_TYPE": "PEM",
            "MQTT_SSL_PEM_CERT": str(container.server_cert),
            "MQTT_SSL_PEM_KEY": str(container.data / "certs" / "mqttserver.key.pem"),
        }
    )
    with container.start() as process:
        yield container, process


def provision(container: Container, pub: Path) -> None:
    """Create the device with its certificate through the admin REST API, with curl, as
    docs/deploy.md shows."""
    body = {
        "device": {"name": DEVICE},
        "credentials": {"credentialsType": "X509_CERTIFICATE", "credentialsValue": pub.read_text()},
    }
    request = container.workdir / "request.json"
    request.write_text(json.dumps(body))
    result = subprocess.run(
        [
            "curl", "-sS", "-w", "\n%{http_code}",
            "-H", f"Authorization: Bearer {container.env['NANOIOT_ADMIN_TOKEN']}",
            "-H", "Content-Type: application/json", "--data", f"@{request}",
            f"http://127.0.0.1:{container.http_port}/api/device-with-credentials",
        ],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    text, _, status = result.stdout.rpartition("\n")
    assert status == "200", text
    assert json.loads(text)["name"] == DEVICE


def healthcheck(container: Container) -> int:
    """The image's HEALTHCHECK command, run as Docker runs it (with the container's env)."""
    command = healthcheck_command(dockerfile_instructions())
    assert command[0] == "python"
    python = str(VENV_BIN / "python")
    result = subprocess.run(
        [python, *command[1:]], env=container.env, capture_output=True, timeout=30, check=False
    )
    return result.returncode


@pytest.mark.postgres
@pytest.mark.slow
def test_waits_migrates_serves_a_device_and_stops_on_sigterm(
    serving: tuple[Container, Process],
) -> None:
    container, process = serving
    process.wait_for("database postgresql+asyncpg://", timeout=START)
    process.wait_for("database is at revision", timeout=START)
    process.wait_for(f"ready: mqtts://127.0.0.1:{container.mqtt_port}", timeout=START)
    # exec: the process the container runtime signals is the server itself, not a shell.
    cmdline = Path(f"/proc/{process.popen.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [Path(os.fsdecode(part)).name for part in cmdline[-2:]] == ["nanoiot", "serve"]
    assert healthcheck(container) == 0

    device_dir = container.workdir / "device"
    checked(
        [
            "client.keygen.sh", "--dir", str(device_dir), "--cn", DEVICE,
            "--server-cert", str(container.server_cert),
        ],
        cwd=container.workdir, env=container.env,
    )  # fmt: skip
    provision(container, device_dir / "mqttclient.pub.pem")
    client = mqtt_client(
        container.mqtt_port, container.server_cert, device_dir / "mqttclient.nopass.pem"
    )
    try:
        assert client.wait_connack() == 0
    finally:
        client.close()

    process.popen.send_signal(signal.SIGTERM)
    assert process.finish(timeout=WAIT) == 0, process.text
    assert healthcheck(container) != 0  # nothing answers once it stopped


def test_an_unreachable_database_fails_clearly_within_the_bound(container: Container) -> None:
    port = free_port()  # nothing listens there
    container.env["NANOIOT_DATABASE_URL"] = (
        f"postgresql+asyncpg://nanoiot:hunter2secret@127.0.0.1:{port}/nanoiot"
    )
    container.env["DATABASE_WAIT_SECONDS"] = "2"
    started = time.monotonic()
    with container.start() as process:
        code = process.finish(timeout=START)
    elapsed = time.monotonic() - started
    assert code == 1, process.text
    last = process.output[-1]
    assert last.startswith("error: cannot use the database postgresql+asyncpg://nanoiot:***@")
    assert "gave up after 2 s" in last
    assert "hunter2secret" not in process.text
    assert elapsed < 2 + START / 2, elapsed  # the bound, plus interpreter start-ups


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_sigterm_while_waiting_for_the_database_stops_at_once(container: Container) -> None:
    """`docker stop` during the wait must not have to wait out its bound."""
    container.env["NANOIOT_DATABASE_URL"] = f"postgresql+asyncpg://x@127.0.0.1:{free_port()}/x"
    container.env["DATABASE_WAIT_SECONDS"] = "300"
    with container.start() as process:
        process.wait_for("waiting up to 300 s for the database", timeout=START)
        waiting = _children(process.popen.pid)
        assert waiting, "the wait runs as a child of the start script"
        process.popen.send_signal(signal.SIGTERM)
        assert process.finish(timeout=WAIT) == 128 + signal.SIGTERM
    for pid in waiting:
        assert not Path(f"/proc/{pid}").exists(), "the database wait outlived the script"


def test_missing_server_credentials_are_named_before_any_wait(
    container: Container, tmp_path: Path
) -> None:
    missing = tmp_path / "volume" / "certs" / "mqttserver.pub.pem"
    container.env["MQTT_SSL_PEM_CERT"] = str(missing)
    container.env["NANOIOT_DATABASE_URL"] = f"postgresql+asyncpg://x@127.0.0.1:{free_port()}/x"
    with container.start() as process:
        assert process.finish(timeout=START) == 1
    assert process.output == [
        f"error: MQTT_SSL_PEM_CERT={missing} does not exist: make the server credentials first "
        f"(server.keygen.sh --dir {missing.parent}; with Docker Compose: docker compose run "
        "--rm keygen; see docs/deploy.md)"
    ]


def test_outside_a_container_it_uses_the_project_virtualenv(tmp_path: Path) -> None:
    """Run from the source tree with nothing on PATH but the system: .venv/bin/nanoiot is used
    (SQLite in a data folder it creates)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NANOIOT_DATA_DIR": str(tmp_path / "d")}
    with Process([ENTRYPOINT, "nanoiot", "db", "upgrade"], cwd=tmp_path, env=env) as process:
        assert process.finish(timeout=START) == 0, process.text
    assert "is SQLite: nothing to wait for" in process.text
    assert (tmp_path / "d" / "nanoiot.db").exists()


@pytest.mark.parametrize("check", [["bash", "-n"], ["shellcheck"]], ids=["bash-n", "shellcheck"])
def test_the_script_is_clean_bash(check: list[str]) -> None:
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} is not installed (apt-get install {check[0]})")
    result = subprocess.run([*check, str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
