"""``nanoiot ca`` as an operator meets it: the real console script, a real SQLite file."""

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509

from auth.certificate import parse_credential
from tests.certgen import crl_of, issue
from tests.cli.conftest import Cli
from tests.cli.error_lines import one_error_line


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_add_list_crl_clear_delete(nanoiot: Cli, tmp_path: Path) -> None:
    ca = issue("Fleet CA", ca=True)
    pem = write(tmp_path, "fleet-ca.pem", ca.cert_pem)
    fingerprint = parse_credential(ca.cert_pem).spki_sha256

    added = nanoiot("ca", "add", "fleet", str(pem), "--cn-regex", r"device-([a-z0-9-]+)",
                    "--create-devices").stdout  # fmt: skip
    assert f"sha256:{fingerprint}" in added
    assert "CN=Fleet CA" in added
    assert "device-([a-z0-9-]+)" in added  # printed as given: brackets are not rich markup

    table = nanoiot("ca", "list").stdout
    assert all(cell in table for cell in ("fleet", "CN=Fleet CA", "none"))

    der = crl_of(ca, 11, 12, 13)
    crl = write(tmp_path, "fleet.crl", der)  # DER on input, PEM stored
    assert "3 revoked serial(s)" in nanoiot("ca", "crl", "fleet", str(crl)).stdout
    [row] = json.loads(nanoiot("ca", "list", "--json").stdout)
    assert row["name"] == "fleet"
    assert row["spki_sha256"] == fingerprint
    assert row["cn_regex"] == "device-([a-z0-9-]+)"
    assert row["create_devices"] is True
    assert row["crl"]["entries"] == 3
    # The CRL's own: a time taken when this module was loaded is a day behind it past midnight.
    next_update = x509.load_der_x509_crl(der).next_update_utc
    assert dt.datetime.fromisoformat(row["crl"]["next_update"]) == next_update
    assert "3 revoked, next update" in nanoiot("ca", "list").stdout

    assert "cleared" in nanoiot("ca", "crl", "fleet", "--clear").stdout
    [row] = json.loads(nanoiot("ca", "list", "--json").stdout)
    assert row["crl"] is None

    deleted = nanoiot("ca", "delete", "fleet").stdout
    assert "trusted CA 'fleet' deleted" in deleted
    assert "devices whose certificates it issued are refused from now on" in deleted
    assert "disconnected within a second" in deleted
    assert json.loads(nanoiot("ca", "list", "--json").stdout) == []


def test_refusals_of_add_are_one_line_each(nanoiot: Cli, tmp_path: Path) -> None:
    ca = issue("Fleet CA", ca=True)
    pem = write(tmp_path, "ca.pem", ca.cert_pem)
    leaf = write(tmp_path, "leaf.pub.pem", issue("sensor-1", issuer=ca).cert_pem)
    bare_key = write(tmp_path, "key.pub.pem", ca.public_key_pem)
    nanoiot("ca", "add", "fleet", str(pem))

    other = write(tmp_path, "other.pem", issue("Other CA", ca=True).cert_pem)
    cases = [
        (("x", str(leaf)), f"{leaf}: 'CN=sensor-1' is not a CA certificate"),
        (("x", str(bare_key)), f"{bare_key}: a trusted CA must be a certificate"),
        (("x", str(tmp_path / "missing.pem")), f"cannot read {tmp_path / 'missing.pem'}"),
        (("x", str(pem), "--cn-regex", "device-("), "--cn-regex 'device-(' is not a valid"),
        (("fleet", str(other)), "a trusted CA named 'fleet' already exists"),
        (("again", str(pem)), "this CA's key is already trusted (as 'fleet')"),
    ]
    for args, message in cases:
        one_error_line(nanoiot("ca", "add", *args, ok=False), message)
    assert len(json.loads(nanoiot("ca", "list", "--json").stdout)) == 1


def test_refusals_of_crl_and_delete_are_one_line_each(nanoiot: Cli, tmp_path: Path) -> None:
    ca, other = issue("Fleet CA", ca=True), issue("Other CA", ca=True)
    nanoiot("ca", "add", "fleet", str(write(tmp_path, "ca.pem", ca.cert_pem)))
    of_other = write(tmp_path, "other.crl", crl_of(other, 1))
    forged = write(tmp_path, "forged.crl", crl_of(ca, 1, signer=other))  # right name, wrong key
    not_crl = write(tmp_path, "ca-again.pem", ca.cert_pem)
    good = write(tmp_path, "good.crl", crl_of(ca, 1))

    not_signed = "the CRL is not signed by CA 'CN=Fleet CA'"
    cases = [
        (("crl", "fleet", str(of_other)), f"{of_other}: {not_signed}"),
        (("crl", "fleet", str(forged)), f"{forged}: {not_signed}"),
        (("crl", "fleet", str(not_crl)), f"{not_crl}: not a CRL"),
        (("crl", "fleet", str(tmp_path / "nope.crl")), "cannot read"),
        (("crl", "nope", str(good)), "no trusted CA named 'nope' (trusted CAs: 'fleet')"),
        (("crl", "fleet"), "give either a CRL file or --clear"),
        (("crl", "fleet", str(good), "--clear"), "give either a CRL file or --clear"),
        (("delete", "nope"), "no trusted CA named 'nope'"),
    ]
    for args, message in cases:
        one_error_line(nanoiot("ca", *args, ok=False), message)
    [row] = json.loads(nanoiot("ca", "list", "--json").stdout)
    assert row["crl"] is None  # nothing was stored by the refused uploads


@pytest.mark.parametrize("form", ["pem", "der"])
def test_ca_file_in_pem_or_der(nanoiot: Cli, tmp_path: Path, form: str) -> None:
    ca = issue("Fleet CA", ca=True)
    content = ca.cert_pem if form == "pem" else ca.cert_der
    nanoiot("ca", "add", "fleet", str(write(tmp_path, f"ca.{form}", content)))
    [row] = json.loads(nanoiot("ca", "list", "--json").stdout)
    assert row["subject"] == "CN=Fleet CA"
