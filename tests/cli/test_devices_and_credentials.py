"""The CLI as a new user meets it: real subprocesses, a real SQLite file, real certificates."""

import json
import subprocess
from pathlib import Path

import pytest

from auth.certificate import parse_credential
from tests.certgen import issue
from tests.cli.conftest import Cli


def _openssl_certificate(tmp_path: Path, cn: str) -> Path:
    """A self-signed device certificate made by `openssl req -x509`, as the issue asks."""
    cert, key = tmp_path / f"{cn}.pem", tmp_path / f"{cn}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN={cn}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


def test_add_device_and_openssl_certificate_then_list_shows_fingerprint(
    nanoiot: Cli, tmp_path: Path
) -> None:
    cert = _openssl_certificate(tmp_path, "sensor-1")
    fingerprint = parse_credential(cert.read_bytes()).spki_sha256

    nanoiot("device", "add", "sensor-1", "--type", "thermometer", "--label", "roof")
    added = nanoiot("credentials", "add-x509", "sensor-1", str(cert))
    assert fingerprint in added.stdout

    listed = nanoiot("credentials", "list", "sensor-1")
    assert fingerprint in listed.stdout
    [row] = json.loads(nanoiot("credentials", "list", "sensor-1", "--json").stdout)
    assert row["spki_sha256"] == fingerprint
    assert row["status"] == "active"
    assert row["type"] == "X509_CERTIFICATE"


def test_a_file_that_is_not_pem_gives_one_clear_line(nanoiot: Cli, tmp_path: Path) -> None:
    nanoiot("device", "add", "d1")
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a certificate\n")
    result = nanoiot("credentials", "add-x509", "d1", str(bogus), ok=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {bogus}: not a certificate")
    assert "Traceback" not in result.stderr


def test_private_key_is_refused_and_not_echoed(nanoiot: Cli, tmp_path: Path) -> None:
    nanoiot("device", "add", "d1")
    device = issue("d1")
    nopass = tmp_path / "mqttclient.nopass.pem"
    nopass.write_text(device.key_pem + device.cert_pem)
    result = nanoiot("credentials", "add-x509", "d1", str(nopass), ok=False)
    assert result.returncode == 1
    assert "private key" in result.stderr
    assert device.key_pem.splitlines()[1] not in result.stderr + result.stdout


def test_duplicate_key_names_the_other_device(nanoiot: Cli, tmp_path: Path) -> None:
    device = issue("shared")
    pem = tmp_path / "shared.pub.pem"
    pem.write_text(device.cert_pem)
    nanoiot("device", "add", "first")
    nanoiot("device", "add", "second")
    nanoiot("credentials", "add-x509", "first", str(pem))
    result = nanoiot("credentials", "add-x509", "second", str(pem), ok=False)
    assert result.returncode == 1
    assert "Device credentials are already assigned to another device!" in result.stderr
    assert "first" in result.stderr


def test_unknown_device_and_duplicate_device(nanoiot: Cli) -> None:
    missing = nanoiot("device", "show", "ghost", ok=False)
    assert missing.returncode == 1
    assert "ghost" in missing.stderr
    nanoiot("device", "add", "d1")
    again = nanoiot("device", "add", "d1", ok=False)
    assert again.returncode == 1
    assert "d1" in again.stderr
    bad = nanoiot("device", "add", "a/b", ok=False)
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr


def test_user_text_with_brackets_is_printed_as_given(nanoiot: Cli) -> None:
    nanoiot("device", "add", "d1", "--label", "rack [a1] slot [b]")
    assert "rack [a1] slot [b]" in nanoiot("device", "list").stdout


def test_device_lifecycle(nanoiot: Cli) -> None:
    nanoiot("device", "add", "d1", "--label", "lab")
    nanoiot("device", "add", "d2")
    names = [d["name"] for d in json.loads(nanoiot("device", "list", "--json").stdout)]
    assert names == ["d1", "d2"]
    nanoiot("device", "disable", "d1")
    shown = json.loads(nanoiot("device", "show", "d1", "--json").stdout)
    assert shown["enabled"] is False
    assert shown["label"] == "lab"
    assert shown["credentials"] == []
    nanoiot("device", "enable", "d1")
    assert json.loads(nanoiot("device", "show", "d1", "--json").stdout)["enabled"] is True
    nanoiot("device", "delete", "d1")
    names = [d["name"] for d in json.loads(nanoiot("device", "list", "--json").stdout)]
    assert names == ["d2"]


def test_tokens_basic_and_revocation(nanoiot: Cli, tmp_path: Path) -> None:
    nanoiot("device", "add", "d1")
    generated = nanoiot("credentials", "add-token", "d1").stdout.strip().split()[-1]
    assert len(generated) >= 20
    nanoiot("credentials", "add-token", "d1", "--token-stdin", stdin="my-own-token\n")
    nanoiot("credentials", "add-basic", "d1", "--username", "u1", "--password-stdin", stdin="pw\n")
    no_stdin = nanoiot("credentials", "add-basic", "d1", "--username", "u2", ok=False)
    assert "--password-stdin" in no_stdin.stderr

    first, second = issue("d1"), issue("d1")
    for n, device in enumerate((first, second)):
        (tmp_path / f"{n}.pem").write_text(device.cert_pem)
        nanoiot("credentials", "add-x509", "d1", str(tmp_path / f"{n}.pem"))
    one = parse_credential(first.cert_pem).spki_sha256
    out = nanoiot("credentials", "revoke", "d1", "--fingerprint", f"sha256:{one.upper()}").stdout
    assert one in out
    rows = json.loads(nanoiot("credentials", "list", "d1", "--json").stdout)
    status = {r["spki_sha256"]: r["status"] for r in rows if r["spki_sha256"]}
    assert status == {one: "revoked", parse_credential(second.cert_pem).spki_sha256: "active"}
    nanoiot("credentials", "revoke", "d1")
    rows = json.loads(nanoiot("credentials", "list", "d1", "--json").stdout)
    assert {r["status"] for r in rows if r["spki_sha256"]} == {"revoked"}
    # Tokens are shown when added only: the store keeps their hashes.
    assert [r["token"] for r in rows if r["type"] == "ACCESS_TOKEN"] == [None, None]
    assert all("password" not in key for r in rows for key in r)


def test_import_reports_bad_rows_and_imports_the_rest(nanoiot: Cli, tmp_path: Path) -> None:
    good, other = issue("good"), issue("x")
    (tmp_path / "good.pem").write_text(good.cert_pem)
    rows = [
        {"name": "good", "pem_file": "good.pem", "label": "from file"},
        {"name": "tok", "token": "tok-123"},
        {"name": "bad-pem", "pem": "not a pem"},
        {"name": "both", "pem": other.cert_pem, "token": "t2"},
        {"name": "dup-key", "pem": good.cert_pem},
    ]
    source = tmp_path / "devices.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n")
    result = nanoiot("device", "import", str(source), ok=False)
    assert result.returncode == 1
    assert "imported 2 device(s), 4 row(s) failed" in result.stdout
    assert "row 3: not PEM" in result.stdout
    assert "row 4: 'both': give exactly one" in result.stdout
    assert "row 5: Device credentials are already assigned" in result.stdout
    assert "row 6: not valid JSON" in result.stdout
    names = {d["name"] for d in json.loads(nanoiot("device", "list", "--json").stdout)}
    # Nothing half-imported: the failed rows left no device behind.
    assert names == {"good", "tok"}


def test_csv_import(nanoiot: Cli, tmp_path: Path) -> None:
    device = issue("c1")
    (tmp_path / "c1.pem").write_text(device.cert_pem)
    source = tmp_path / "devices.csv"
    source.write_text("name,type,pem_file,token\nc1,meter,c1.pem,\nc2,,,tok-c2\n")
    result = nanoiot("device", "import", str(source))
    assert "imported 2 device(s), 0 row(s) failed" in result.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("device,cert\nx,y\n")
    failed = nanoiot("device", "import", str(bad), ok=False)
    assert failed.returncode == 1
    assert "CSV header must name 'name'" in failed.stderr


@pytest.mark.postgres
def test_cli_on_postgresql(nanoiot: Cli, cli_env: dict[str, str], postgres_url: str) -> None:
    cli_env["NANOIOT_DATABASE_URL"] = postgres_url
    nanoiot("db", "upgrade")
    nanoiot("device", "add", "pg-device")
    listed = json.loads(nanoiot("device", "list", "--json").stdout)
    assert [d["name"] for d in listed] == ["pg-device"]


def test_every_command_that_writes_names_its_database_and_reads_stay_quiet(
    nanoiot: Cli, tmp_path: Path
) -> None:
    said = f"database: SQLite {tmp_path / 'data' / 'nanoiot.db'}"
    cert = tmp_path / "d1.pem"
    cert.write_text(issue("d1").cert_pem)
    writes = [
        ("device", "add", "d1"),
        ("credentials", "add-x509", "d1", str(cert)),
        ("credentials", "add-token", "d1"),
        ("credentials", "revoke", "d1"),
        ("device", "disable", "d1"),
        ("device", "enable", "d1"),
        ("device", "delete", "d1"),
        ("db", "upgrade"),
    ]
    for command in writes:
        assert nanoiot(*command).stderr.splitlines() == [said], command
    for command in [("device", "list"), ("device", "list", "--json")]:
        assert nanoiot(*command).stderr == "", command


def test_fingerprints_stay_whole_in_80_columns(
    nanoiot: Cli, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The form the log and the web UI use, on one line, at a terminal's default width."""
    cli_env["COLUMNS"] = "80"
    cert = tmp_path / "d1.pem"
    cert.write_text(issue("a-device-with-a-long-name").cert_pem)
    whole = f"sha256:{parse_credential(cert.read_bytes()).spki_sha256}"
    nanoiot("device", "add", "d1")
    for command in [
        ("credentials", "add-x509", "d1", str(cert)),
        ("credentials", "list", "d1"),
        ("device", "show", "d1"),
        ("credentials", "revoke", "d1"),
    ]:
        lines = nanoiot(*command).stdout.splitlines()
        assert any(whole in line for line in lines), (command, lines)
