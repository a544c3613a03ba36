"""``client.keygen.sh --provision``: the new certificate is registered for its device."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.keygen.conftest import CONF, VENV_BIN, Run, runner, script_env, ship

pytest.importorskip("storage.sql", reason="the SQL credential store is not there yet")


def nanoiot(folder: Path, *args: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "nanoiot"), *args],
        cwd=folder,
        env=script_env(folder),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_provision_creates_the_device_with_its_certificate(shipped: Path, run: Run) -> None:
    run("server.keygen.sh")
    result = run("client.keygen.sh", "--cn", "sensor-9", "--provision")
    assert "provisioned: created device 'sensor-9'" in result.stdout
    listing = nanoiot(shipped, "credentials", "list", "sensor-9")
    fingerprint = result.stdout.split("sha256:")[1].split(")")[0]
    assert fingerprint in listing


def test_provision_adds_a_renewed_certificate_to_the_existing_device(
    shipped: Path, run: Run
) -> None:
    run("server.keygen.sh")
    run("client.keygen.sh", "--cn", "sensor-9", "--provision")
    renewed = run("client.keygen.sh", "--cn", "sensor-9", "--provision", "--force")
    assert "provisioned: added the certificate to device 'sensor-9'" in renewed.stdout


def test_a_store_error_is_one_line_and_the_files_stay(shipped: Path, run: Run) -> None:
    run("server.keygen.sh")
    run("client.keygen.sh", "--cn", "sensor-9", "--provision")
    # A store that cannot be opened: the data directory is a file now.
    (shipped / "data").rename(shipped / "data-moved")
    (shipped / "data").write_text("not a directory")
    result = run("client.keygen.sh", "--cn", "sensor-10", "--provision", "--force", ok=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: files written, but not provisioned:")
    assert len(result.stderr.splitlines()) == 1
    written = x509.load_pem_x509_certificate((shipped / "mqttclient.pub.pem").read_bytes())
    [cn] = written.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert cn.value == "sensor-10"


def test_provision_run_in_conf_uses_the_project_database(tmp_path: Path) -> None:
    """The README's walk: keys are made in conf/, where the shipped nanoiot.yaml sits. The
    device must land in the project's data/ (the broker's), not in a new conf/data/."""
    project = tmp_path / "project"
    conf = ship(project / "conf")
    shutil.copy2(CONF / "nanoiot.yaml", conf / "nanoiot.yaml")
    env = script_env(tmp_path)
    del env["NANOIOT_DATA_DIR"]  # only the settings file says where the data is
    run = runner(conf, env)
    run("server.keygen.sh")
    result = run("client.keygen.sh", "--cn", "sensor-conf", "--provision")
    database = project / "data" / "nanoiot.db"
    assert result.stderr.splitlines()[-1] == f"database: SQLite {database}"
    assert database.exists()
    assert not (conf / "data").exists()
    listed = subprocess.run(
        [str(VENV_BIN / "nanoiot"), "device", "list", "--json"],
        cwd=project, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert [device["name"] for device in json.loads(listed.stdout)] == ["sensor-conf"]
