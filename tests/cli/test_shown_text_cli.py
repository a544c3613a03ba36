"""The CLI refuses, in one line, the text the API refuses: names and labels that would show as
something else (bidirectional controls, zero-width characters: Unicode category Cf), and CN
rules RE2 cannot match in linear time. An import row holding such a name is a bad row."""

from pathlib import Path

import pytest

from tests.certgen import issue
from tests.cli.conftest import Cli
from tests.cli.error_lines import one_error_line

REFUSED = "must not contain invisible formatting characters"


@pytest.mark.parametrize(
    ("args", "starts"),
    [
        (("device", "add", "invoice\u202egpj.exe"), "invalid device name 'invoice\\u202egpj.exe'"),
        (("device", "add", "pump-1", "--label", "roof\u200b"), f"device label {REFUSED}"),
        (("device", "add", "pump-1", "--type", "meter\u2066"), f"device type {REFUSED}"),
        (("device", "add", "Ge\u0301rard"), "invalid device name 'Ge\\u0301rard'"),
    ],
    ids=["rlo-name", "zero-width-label", "isolate-type", "decomposed-name"],
)
def test_device_text_that_shows_as_another_is_one_line(
    nanoiot: Cli, args: tuple[str, ...], starts: str
) -> None:
    one_error_line(nanoiot(*args, ok=False), starts)
    assert nanoiot("device", "list", "--json").stdout.strip() == "[]"


def test_ca_names_and_rules_are_checked(nanoiot: Cli, tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text(issue("Fleet CA", ca=True).cert_pem)
    one_error_line(nanoiot("ca", "add", "fleet\u202e", str(pem), ok=False), f"CA name {REFUSED}")
    backreference = nanoiot("ca", "add", "fleet", str(pem), "--cn-regex", r"(\w)\1", ok=False)
    one_error_line(
        backreference,
        r"--cn-regex '(\w)\1' is not a valid regular expression for RE2 "
        r"(invalid escape sequence: \1)",
    )
    too_long = nanoiot("ca", "add", "fleet", str(pem), "--cn-regex", "x" * 300, ok=False)
    one_error_line(too_long, "--cn-regex '" + "x" * 60 + "...(+240 characters)' is 300")
    nanoiot("ca", "add", "fleet", str(pem), "--cn-regex", r"(a+)+b")  # harmless under RE2


def test_an_import_row_with_a_hidden_character_is_a_bad_row(nanoiot: Cli, tmp_path: Path) -> None:
    source = tmp_path / "devices.csv"
    source.write_text("name,token\ngood-1,tok-good-0001\nevil\u202e1,tok-evil-0001\n")
    result = nanoiot("device", "import", str(source), ok=False)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == "imported 1 device(s), 1 row(s) failed"
    assert REFUSED in result.stdout


def test_a_certificate_subject_prints_escaped_on_one_line(nanoiot: Cli, tmp_path: Path) -> None:
    pem = tmp_path / "leaf.pem"
    pem.write_text(issue("invoice\u202egpj.exe\nforged line").cert_pem)
    nanoiot("device", "add", "pump-9")
    added = nanoiot("credentials", "add-x509", "pump-9", str(pem)).stdout
    assert "  subject      CN=invoice\\u202egpj.exe\\nforged line\n" in added
    listed = nanoiot("credentials", "list", "pump-9").stdout
    assert "CN=invoice\\u202egpj.exe\\nforged line" in listed
    assert "\u202e" not in added + listed
