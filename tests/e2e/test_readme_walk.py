"""The README walked as a new user walks it, by running its own code blocks.

A fresh copy of the project (every file git tracks or would track, committed into a new
repository: what a clone holds), a new HOME, a PATH with nothing of NanoIoT on it. Then, in
the README's order: ``./scripts/run`` (which makes ``.venv`` with pip and links ``nanoiot``
into ``~/.local/bin``), the first-device commands, the paho client, revocation of a connected
device, the keygen scripts in ``conf/``, the provisioning commands (bare ``nanoiot``, run from
``conf/``), and the REST API calls. The blocks are read from README.md, so the README cannot
drift from what works; the only edits are the ports (the broker runs on free ports, not 8883
and 8080). Every fenced block of the README is either walked here or listed in NOT_WALKED
with the reason. Afterwards ``git status`` must show nothing the walk wrote: neither the keys
nor ``device.py`` nor the fleet's ``devices.csv``.

Slow: pip installs the project into the copy (about a minute with pip's cache warm).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.certgen import issue, revocation_list
from tests.e2e.harness import WAIT, mqtt_client
from tests.e2e.interop import Process, checked, require_tool

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
BOOTSTRAP_WAIT = 900.0  # seconds: scripts/run installs the project with pip first
BACKEND_PASSWORD = "backend-password-1"
GATEWAY_TOKEN = "gateway-token-0123456789"

# Blocks are named by how their first line starts.
RUN, TEST = "./scripts/run", "./scripts/test"
FIRST_DEVICE = "nanoiot keygen client --server-cert data/certs/mqttserver.pub.pem"
PAHO = "import ssl"
REVOKE = "nanoiot credentials revoke my-device"
KEYGEN = "cd conf"
PROVISIONING = "nanoiot device add thermostat-1"
REST = "conf/client.keygen.sh --server-cert"
WALKED = {RUN, FIRST_DEVICE, PAHO, REVOKE, KEYGEN, PROVISIONING, REST}
NOT_WALKED = {
    # The product documentation's line, shown to explain why it fails; run as written in
    # tests/e2e/test_product_text.py.
    'client.tls_set(ca_certs="mqttserver.pub.pem"': "fails by design",
    # Docker Compose: no engine on these machines; tests/deploy checks the files.
    "TOKEN=\"$(sed -n 's/^NANOIOT_ADMIN_TOKEN=//p' .env)\"": "needs Docker",
    # The Paho MQTT 5 suite: a clone of another repository and socat; run by hand, its result
    # is recorded beside the block.
    "cat > nanoiot.yaml <<'EOF'": "needs the Paho testing repository",
}


@dataclass(frozen=True)
class Block:
    language: str
    code: str


def readme_blocks() -> list[Block]:
    """Every fenced block of README.md, indented ones (in lists) dedented."""
    blocks: list[Block] = []
    lines = (REPO / "README.md").read_text().splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        index += 1
        if opened is None:
            continue
        indent, language, body = len(opened.group(1)), opened.group(2), []
        while not FENCE.match(lines[index]):
            body.append(lines[index][indent:])
            index += 1
        index += 1
        blocks.append(Block(language, "\n".join(body) + "\n"))
    return blocks


def block(starts: str) -> str:
    [found] = [b.code for b in readme_blocks() if b.code.lstrip().startswith(starts)]
    return found


def test_every_readme_block_is_walked_or_says_why_not() -> None:
    names = [b.code.lstrip() for b in readme_blocks()]
    known = WALKED | set(NOT_WALKED) | {RUN}
    for code in names:
        assert any(code.startswith(name) for name in known), f"README block not walked:\n{code}"
    for name in WALKED | set(NOT_WALKED):
        assert sum(code.startswith(name) for code in names) == 1, name
    assert TEST in block(RUN)


@dataclass
class Walk:
    clone: Path
    home: Path
    env: dict[str, str]
    mqtt_port: int = 0
    http_address: str = ""

    def localized(self, code: str, *, ports: tuple[str, ...]) -> str:
        """The block with the broker's real ports (it runs on free ones); each default the
        caller names must be in the block, so the README cannot lose them unnoticed."""
        swaps = {
            "-p 8883": f"-p {self.mqtt_port}",
            '"localhost", 8883': f'"localhost", {self.mqtt_port}',
            "127.0.0.1:8080": self.http_address,
        }
        for default in ports:
            assert default in code, f"{default!r} not in the README block:\n{code}"
            code = code.replace(default, swaps[default])
        return code

    def bash(self, code: str, cwd: Path | None = None) -> str:
        return checked(
            ["bash", "-euo", "pipefail", "-c", code], cwd=cwd or self.clone, env=self.env
        )

    def device(self, certfile: str, *extra: str) -> list[str]:
        """mosquitto_pub (or _sub) arguments for a device of this walk."""
        return [
            "--cafile", "data/certs/mqttserver.pub.pem", "--cert", certfile, "--key", certfile,
            "-h", "localhost", "-p", str(self.mqtt_port), *extra,
        ]  # fmt: skip


def fresh_clone(folder: Path) -> Path:
    """What a clone of this checkout holds (committed or not), as a new repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    git = ["git", "-c", "user.name=walk", "-c", "user.email=walk@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "fresh clone"]):
        subprocess.run([*git, *args], cwd=folder, check=True, capture_output=True)
    return folder


def new_user_env(home: Path) -> dict[str, str]:
    """A login shell's environment: ~/.local/bin and Python on PATH, no NanoIoT anywhere; the
    broker on free ports; pip's cache shared (only to save the download)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NANOIOT_", "MQTT_SSL_")) and key not in ("VIRTUAL_ENV", "CI")
    }
    python_bin = Path(sys.base_prefix) / "bin"
    env.update(
        HOME=str(home),
        PATH=f"{home}/.local/bin:{python_bin}:/usr/bin:/bin",
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
        MQTT_SSL_BIND_ADDRESS="127.0.0.1",
        MQTT_SSL_BIND_PORT="0",
        NANOIOT_HTTP_PORT="0",
        BACKEND_PASSWORD=BACKEND_PASSWORD,
        GATEWAY_TOKEN=GATEWAY_TOKEN,
    )
    return env


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout (the walk starts from a clone of it)")
    require_tool("mosquitto_pub", "mosquitto-clients")
    require_tool("jq", "jq")
    require_tool("curl", "curl")
    root = tmp_path_factory.mktemp("readme-walk")
    home = root / "home"
    home.mkdir()
    walk = Walk(fresh_clone(root / "nanoiot"), home, new_user_env(home))
    [command] = [line for line in block(RUN).splitlines() if line.startswith(RUN)]
    with Process(["bash", "-c", command], cwd=walk.clone, env=walk.env) as server:
        ready = server.wait_for("ready: mqtts://", timeout=BOOTSTRAP_WAIT)
        walk.mqtt_port = int(ready.rsplit(":", 1)[1])
        walk.http_address = re.findall(r"http://(\S+)/ui", server.text)[0]
        yield walk
        server.popen.send_signal(signal.SIGTERM)
        assert server.finish(WAIT) == 0, server.text


@pytest.mark.slow
def test_walk_the_readme_from_a_fresh_clone(walk: Walk) -> None:
    clone, database = walk.clone, walk.clone / "data" / "nanoiot.db"
    link = walk.home / ".local" / "bin" / "nanoiot"
    assert link.resolve() == clone / ".venv" / "bin" / "nanoiot"  # scripts/run put it on PATH

    # Two commands: the first device, with mosquitto_pub, then paho.
    first = walk.bash(walk.localized(block(FIRST_DEVICE), ports=("-p 8883",)))
    assert "provisioned: created device 'my-device'" in first
    assert f"database: SQLite {database}" in first
    (clone / "device.py").write_text(walk.localized(block(PAHO), ports=('"localhost", 8883',)))
    checked([clone / ".venv" / "bin" / "python", "device.py"], cwd=clone, env=walk.env)

    # Revocation of a connected device: it is disconnected, and refused from then on.
    device = mqtt_client(
        walk.mqtt_port, clone / "data/certs/mqttserver.pub.pem", clone / "mqttclient.nopass.pem"
    )
    try:
        assert device.wait_connack() == 0
        walk.bash(block(REVOKE))
        assert device.disconnected.wait(WAIT)
    finally:
        device.close()
    refused = subprocess.run(
        ["mosquitto_pub", *walk.device("mqttclient.nopass.pem", "-t", "v1/x", "-m", "no")],
        cwd=clone, env=walk.env, capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert refused.returncode != 0

    # Keys in conf/, then provisioning there with the bare nanoiot.
    walk.bash(block(KEYGEN))
    conf = clone / "conf"
    for written in ("mqttserver.pub.pem", "mqttserver.key.pem", "mqttclient.nopass.pem"):
        assert (conf / written).exists(), written
    _fleet_files(conf)
    provisioned = walk.bash(block(PROVISIONING), cwd=conf)
    for said in (
        "registered X.509 credential for 'thermostat-1'",
        "ACCEPTED as device 'thermostat-1'",
        "revoked sha256:",
        "imported 1 device(s), 0 row(s) failed",
        f"database: SQLite {database}",
    ):
        assert said in provisioned, said
    assert not (conf / "data").exists()  # the broker's database, not one beside conf/

    # The REST API, for a new device; then that device connects.
    answer = walk.bash(walk.localized(block(REST), ports=("127.0.0.1:8080",)))
    assert '"credentialsType":"X509_CERTIFICATE"' in answer, answer
    checked(
        ["mosquitto_pub", *walk.device("thermostat-2.nopass.pem", "-t", "v1/devices/me/telemetry",
                                       "-m", "{}", "-q", "1")],
        cwd=clone, env=walk.env,
    )  # fmt: skip

    listed = walk.bash("nanoiot device list --json | jq -r '.[].name' | sort")
    assert listed.split() == sorted(
        ["my-device", "thermostat-1", "gateway-3", "backend", "imported-1", "thermostat-2"]
    )
    status = walk.bash("git status --porcelain --untracked-files=all")
    assert status == "", status


def _fleet_files(conf: Path) -> None:
    """What the provisioning block reads that a user brings: a device list, a CA and its CRL."""
    (conf / "devices.csv").write_text("name,token\nimported-1,imported-token-0001\n")
    ca = issue("Walk Fleet CA", ca=True)
    (conf / "nanoiot-device-ca.pem").write_text(ca.cert_pem)
    revoked = issue("device-lost-1", issuer=ca)
    crl = revocation_list(ca, revoked.cert.serial_number)
    (conf / "fleet.crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
