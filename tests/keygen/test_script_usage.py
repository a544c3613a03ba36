"""The scripts' behaviour around the happy path: bad input, earlier output, where they find
the properties and ``nanoiot``. Every error is one ``error:`` line on stderr and exit 1."""

import os
import pty
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.keygen.conftest import REPO, VENV_BIN, Run, runner, script_env, ship


def set_property(props: Path, line: str) -> None:
    """Replace the line defining the same key, or append it."""
    key = line.split("=", 1)[0]
    lines = [old for old in props.read_text().splitlines() if not old.startswith(f"{key}=")]
    props.write_text("\n".join([*lines, line]) + "\n")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("KEY_ALGORITHM=DSA", "KEY_ALGORITHM 'DSA' is not supported (use EC or RSA)"),
        ('CLIENT_CN=""', "CLIENT_CN is empty"),
        ("KEY_SIZE=1024", "KEY_SIZE '1024' is not valid for EC (256, 384)"),
        ("CLIENTCN=sensor-1", "unknown property 'CLIENTCN' (did you mean CLIENT_CN?)"),
        ("TWO_LETTER_COUNTRY_CODE=USA", "TWO_LETTER_COUNTRY_CODE 'USA' must be two letters"),
        ("SUBJECT_ALTERNATIVE_NAMES=ip:localhost", "'ip:localhost': not an IP address"),
        ("CLIENT_KEYSTORE_PASSWORD=abc", "CLIENT_KEYSTORE_PASSWORD must be at least 6"),
        ("VALIDITY_DAYS=soon", "VALIDITY_DAYS 'soon' must be a whole number of days"),
    ],
)
def test_bad_property_values_give_one_clear_error_line(
    shipped: Path, run: Run, line: str, message: str
) -> None:
    set_property(shipped / "keygen.properties", line)
    error = one_error_line(run("client.keygen.sh", ok=False))
    assert message in error
    assert not (shipped / "mqttclient.pub.pem").exists()


def test_empty_cn_on_the_command_line_is_refused(run: Run) -> None:
    run("server.keygen.sh")
    assert "CLIENT_CN is empty" in one_error_line(run("client.keygen.sh", "--cn", "", ok=False))


def test_missing_properties_file_is_named(run: Run) -> None:
    error = one_error_line(run("client.keygen.sh", "-p", "nowhere.properties", ok=False))
    assert error == "error: cannot read properties file nowhere.properties"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_properties_file_is_named(shipped: Path, run: Run) -> None:
    (shipped / "keygen.properties").chmod(0)
    assert "cannot read properties file" in one_error_line(run("server.keygen.sh", ok=False))


def test_python_side_names_an_unreadable_properties_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "nanoiot"), "keygen", "server", "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert one_error_line(result).startswith(f"error: cannot read properties file {tmp_path}")


def test_a_failing_command_in_the_properties_file_is_reported(shipped: Path, run: Run) -> None:
    set_property(shipped / "keygen.properties", "ORGANIZATION=$(no-such-command-here)")
    result = run("server.keygen.sh", ok=False)
    assert result.returncode != 0
    assert "keygen.properties could not be sourced by bash" in result.stderr


def test_product_text_properties_with_unquoted_city_work(shipped: Path, run: Run) -> None:
    # Exactly as the product text prints it, including `CITY=San Francisco` unquoted.
    product_text = (REPO / "tests/keygen/data/product-text.properties").read_text()
    (shipped / "keygen.properties").write_text(product_text)
    run("server.keygen.sh")
    run("client.keygen.sh")
    subject = subprocess.run(
        ["openssl", "x509", "-in", str(shipped / "mqttclient.pub.pem"), "-noout", "-subject"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "L = San Francisco" in subject


def test_client_without_server_certificate_says_what_to_run(run: Run) -> None:
    error = one_error_line(run("client.keygen.sh", ok=False))
    assert "mqttserver.pub.pem not found: run server.keygen.sh first" in error


def test_earlier_output_is_kept_without_a_terminal_unless_forced(shipped: Path, run: Run) -> None:
    run("server.keygen.sh")
    run("client.keygen.sh")
    before = (shipped / "mqttclient.pub.pem").read_bytes()
    error = one_error_line(run("client.keygen.sh", ok=False))
    assert "already exist; pass --force to overwrite" in error
    assert (shipped / "mqttclient.pub.pem").read_bytes() == before
    run("client.keygen.sh", "--force")
    assert (shipped / "mqttclient.pub.pem").read_bytes() != before


@pytest.mark.parametrize(("answer", "replaced"), [("n", False), ("y", True)])
def test_at_a_terminal_the_script_asks_before_overwriting(
    shipped: Path, run: Run, answer: str, replaced: bool
) -> None:
    run("server.keygen.sh")
    run("client.keygen.sh")
    before = (shipped / "mqttclient.pub.pem").read_bytes()
    controller, terminal = pty.openpty()
    try:
        os.write(controller, f"{answer}\n".encode())  # typed ahead; the tty buffers it
        result = run("client.keygen.sh", ok=False, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert "Overwrite" in result.stdout
    assert ((shipped / "mqttclient.pub.pem").read_bytes() != before) is replaced
    assert result.returncode == (0 if replaced else 1)


def test_output_directory_and_device_name_options(shipped: Path, run: Run) -> None:
    run("server.keygen.sh", "-d", "out")
    run("client.keygen.sh", "--dir", "out", "--cn", "sensor-7", "--prefix", "sensor-7")
    cert = (shipped / "out" / "sensor-7.pub.pem").read_text()
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject"],
        input=cert,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert subject.startswith("subject=CN = sensor-7,")


def test_server_copy_installs_into_server_keystore_dir(shipped: Path, run: Run) -> None:
    target = shipped / "etc-nanoiot"
    set_property(shipped / "keygen.properties", f'SERVER_KEYSTORE_DIR="{target}/"')
    result = run("server.keygen.sh", "--copy")
    assert sorted(path.name for path in target.iterdir()) == [
        "mqttserver.jks",
        "mqttserver.key.pem",
        "mqttserver.pub.pem",
    ]
    assert (target / "mqttserver.key.pem").stat().st_mode & 0o077 == 0
    assert f"MQTT_SSL_KEY_STORE={target.resolve() / 'mqttserver.jks'}" in result.stdout


def test_rsa_keys_on_request(shipped: Path, run: Run) -> None:
    set_property(shipped / "keygen.properties", "KEY_ALGORITHM=RSA")
    set_property(shipped / "keygen.properties", "KEY_SIZE=3072")
    run("server.keygen.sh")
    out = subprocess.run(
        ["openssl", "x509", "-in", str(shipped / "mqttserver.pub.pem"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Public-Key: (3072 bit)" in out
    assert re.search(r"Key Usage: critical\s+Digital Signature, Key Encipherment", out)


def test_help_needs_no_properties(run: Run) -> None:
    for script, option in (("server.keygen.sh", "--copy"), ("client.keygen.sh", "--provision")):
        result = run(script, "-h", "-p", "nowhere.properties")
        assert option in result.stdout


def test_installed_scripts_use_the_packaged_properties_outside_the_repo(tmp_path: Path) -> None:
    """As installed by pip (script-files): in a bin/ beside `nanoiot`, run from elsewhere."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for script in ("server.keygen.sh", "client.keygen.sh"):
        shutil.copy2(REPO / "conf" / script, bin_dir / script)
    (bin_dir / "nanoiot").symlink_to(VENV_BIN / "nanoiot")
    work = tmp_path / "work"
    work.mkdir()
    env = script_env(tmp_path, path="/usr/bin:/bin")  # no virtualenv on PATH
    for script in ("server.keygen.sh", "client.keygen.sh"):
        result = subprocess.run(
            [str(bin_dir / script)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert (work / "mqttclient.jks").exists()


def test_without_nanoiot_command_the_package_is_run_by_python3(tmp_path: Path) -> None:
    folder = ship(tmp_path / "shipped")
    bin_dir = tmp_path / "python-only"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"  # a symlink would lose the virtualenv (no pyvenv.cfg there)
    python3.write_text(f'#!/bin/sh\nexec "{VENV_BIN / "python"}" "$@"\n')
    python3.chmod(0o755)
    run = runner(folder, script_env(tmp_path, path=f"{bin_dir}:/usr/bin:/bin"))
    run("server.keygen.sh")
    assert (folder / "mqttserver.jks").exists()


def test_without_nanoiot_at_all_the_script_says_so(tmp_path: Path) -> None:
    folder = ship(tmp_path / "shipped")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    for tool in ("bash", "dirname", "readlink", "env"):
        found = shutil.which(tool)
        assert found is not None
        (empty / tool).symlink_to(found)
    run = runner(folder, script_env(tmp_path, path=str(empty)))
    error = one_error_line(run("server.keygen.sh", ok=False))
    assert "the nanoiot command is not installed" in error


def test_scripts_in_a_checkout_use_its_virtualenv(tmp_path: Path) -> None:
    """The README's `cd conf && ./server.keygen.sh` after scripts/run: nothing on PATH, the
    project's .venv beside conf/ has nanoiot."""
    project = tmp_path / "project"
    folder = ship(project / "conf")
    venv_bin = project / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "nanoiot").symlink_to(VENV_BIN / "nanoiot")
    run = runner(folder, script_env(tmp_path, path="/usr/bin:/bin"))
    run("server.keygen.sh")
    run("client.keygen.sh")
    assert (folder / "mqttserver.pub.pem").exists()
    assert (folder / "mqttclient.nopass.pem").exists()
