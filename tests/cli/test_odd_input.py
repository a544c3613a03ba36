"""The CLI fed odd input by an operator: files that never end or are far too large, import
rows Python's own parsers cannot take. Each gets one line saying what is wrong, never a
traceback, and never takes the memory of the host.

The commands run as real subprocesses with their address space bounded (``ulimit -v``), so
reading a file without a bound ends in MemoryError here instead of swapping the machine.
"""

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import NANOIOT, Cli

_MEMORY_KIB = 1024 * 1024  # 1 GiB of address space: the CLI needs a few hundred MiB


def _bounded(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", f'ulimit -v {_MEMORY_KIB}; exec "$0" "$@"', NANOIOT, *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("credentials", "add-x509", "dev-1", "/dev/zero"),
            "64 KiB: too large to hold a certificate",
        ),
        (("ca", "add", "ca-1", "/dev/zero"), "64 KiB: too large to hold a certificate"),
        (("doctor", "--cert", "/dev/zero"), "64 KiB: too large to hold a certificate"),
        (("ca", "crl", "ca-1", "/dev/zero"), "16 MiB: too large to hold a CRL"),
    ],
)
def test_a_file_that_never_ends_is_one_line(
    nanoiot: Cli, cli_env: dict[str, str], tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    # Before: the whole file was read first: MemoryError and a traceback (or all the host's
    # memory, without the ulimit).
    nanoiot("device", "add", "dev-1")
    result = _bounded(cli_env, tmp_path, *args)
    assert result.returncode == 1
    assert result.stderr == f"error: /dev/zero is larger than {expected}\n"


def test_a_large_file_is_refused_before_it_is_parsed(nanoiot: Cli, tmp_path: Path) -> None:
    nanoiot("device", "add", "dev-1")
    large = tmp_path / "backup.tar"
    large.write_bytes(b"\x00" * (64 * 1024 + 1))
    result = nanoiot("credentials", "add-x509", "dev-1", str(large), ok=False)
    assert result.returncode == 1
    assert (
        result.stderr == f"error: {large} is larger than 64 KiB: too large to hold a certificate\n"
    )


def test_import_rows_python_cannot_parse_are_bad_rows(
    nanoiot: Cli, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Before: RecursionError and ValueError (int() takes at most 4300 digits) ended the
    # import with a traceback; a pem_file of /dev/zero was read whole.
    rows = [
        json.dumps({"name": "good-1", "token": "tok-good-0001"}),
        '{"name": ' + "[" * 100_000,
        '{"name": "n", "token": ' + "9" * 5000 + "}",
        json.dumps({"name": "zero", "pem_file": "/dev/zero"}),
        json.dumps({"name": "good-2", "token": "tok-good-0002"}),
    ]
    (tmp_path / "devices.jsonl").write_text("\n".join(rows) + "\n")
    result = _bounded(cli_env, tmp_path, "device", "import", "devices.jsonl")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [
        "imported 2 device(s), 3 row(s) failed",
        "  row 2: not valid JSON: more than 10,000 arrays and objects",
        "  row 3: not valid JSON: a number of 5,000 characters (at most 40 are read)",
        "  row 4: /dev/zero is larger than 64 KiB: not a certificate",
    ]


def test_import_rows_that_are_not_rfc_8259_json_are_bad_rows(nanoiot: Cli, tmp_path: Path) -> None:
    # Before: Python's json read all but the lone surrogate: devices with the tokens "nan",
    # "inf" and "-inf" were imported, and "b-2" (the last of two names).
    rows = [
        '{"name": "good-1", "token": "tok-good-0001"}',
        '{"name": "nan-1", "token": NaN}',
        '{"name": "b-1", "name": "b-2", "token": "tok-good-0002"}',
        '{"name": "inf-1", "token": 1e999}',
        '{"name": "neg-1", "token": -Infinity}',
        '{"name": "lone-\\ud800", "token": "tok-good-0003"}',
        '{"name": "good-2", "token": "tok-good-0004"}',
    ]
    (tmp_path / "devices.jsonl").write_text("\n".join(rows) + "\n")
    result = nanoiot("device", "import", str(tmp_path / "devices.jsonl"), ok=False)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "imported 2 device(s), 5 row(s) failed",
        "  row 2: not valid JSON: NaN is not a JSON number (RFC 8259 §6)",
        '  row 3: not valid JSON: the name "name" appears twice in one object',
        "  row 4: not valid JSON: the number 1e999 is out of range",
        "  row 5: not valid JSON: -Infinity is not a JSON number (RFC 8259 §6)",
        "  row 6: not valid JSON: a string holds a lone UTF-16 surrogate (RFC 8259 §8.2)",
    ]


def test_a_csv_field_past_the_csv_modules_limit_is_one_line(nanoiot: Cli, tmp_path: Path) -> None:
    # Before: csv.Error "field larger than field limit (131072)" with a traceback.
    text = "name,token\ngood-1,tok-good-0001\nhuge," + "x" * 200_000 + "\n"
    (tmp_path / "devices.csv").write_text(text)
    result = nanoiot("device", "import", "devices.csv", ok=False)
    assert result.returncode == 1
    assert result.stderr == (
        "error: devices.csv, line 3: not valid CSV: field larger than field limit (131072)\n"
    )


def test_an_import_file_that_never_ends_is_one_line(
    nanoiot: Cli, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Before: the whole file was read before the first row (read_text): MemoryError and a
    # traceback under the ulimit, the host's memory without it. Now each line stops at the
    # API's bound on one record (admin.v1_rows.MAX_RECORD).
    result = _bounded(cli_env, tmp_path, "device", "import", "/dev/zero")
    assert result.returncode == 1
    assert result.stderr == (
        "error: /dev/zero, line 1 is longer than 256 KiB: too long to hold a device "
        "(a certificate is a few KiB)\n"
    )
    long_line = tmp_path / "devices.csv"
    long_line.write_text("name,token\n" + "x" * (256 * 1024 + 1) + "\n")
    result = nanoiot("device", "import", str(long_line), ok=False)
    assert result.stderr.startswith(f"error: {long_line}, line 2 is longer than 256 KiB")
