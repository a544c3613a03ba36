"""The KEY=VALUE reader used without bash: syntax, quoting and the little expansion it does."""

import socket
from pathlib import Path

import pytest

from nanoiot.errors import KeygenError
from nanoiot.keygen.propfile import RawProperty, expand, parse_lines, read_properties

KEYS = frozenset({"A", "B", "CITY", "HOST", "CLIENT_CN"})


def values(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    path = tmp_path / "keygen.properties"
    path.write_text(text)
    return read_properties(path, KEYS, environ)


def test_comments_blank_lines_export_and_windows_line_ends(tmp_path: Path) -> None:
    text = "# comment\r\n\r\nexport A=1\r\n  B = 2\r\n".replace(" = ", "=")
    assert values(text, tmp_path) == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("CITY=San Francisco", "San Francisco"),  # the product text's unquoted form
        ("CITY=San Francisco # where", "San Francisco"),
        ('CITY="San Francisco"', "San Francisco"),
        ("CITY='$HOME stays'", "$HOME stays"),
        ('CITY="say \\"hi\\" \\$1"', 'say "hi" $1'),
        ('CITY="a#b"  # comment', "a#b"),
        ("CITY=", ""),
        ('CITY=""', ""),
    ],
)
def test_values_read_as_bash_would(tmp_path: Path, line: str, value: str) -> None:
    assert values(line + "\n", tmp_path)["CITY"] == value


def test_references_to_earlier_keys_and_hostname_expand(tmp_path: Path) -> None:
    text = 'HOST="$(hostname)"\nA="dns:$HOST,dns:${HOST}.lan"\nB=$A\n'
    host = socket.gethostname()
    got = values(text, tmp_path)
    assert got["A"] == f"dns:{host},dns:{host}.lan"
    assert got["B"] == got["A"]


def test_environment_variables_expand_like_in_bash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SITE", "plant-3")
    assert values('CLIENT_CN="$SITE-gw"\n', tmp_path)["CLIENT_CN"] == "plant-3-gw"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('A="$(whoami)"', "only $(hostname) is expanded here"),
        ("A=`hostname`", "only $(hostname) is expanded here"),
        ('A="$UNSET_FOR_SURE_42"', "$UNSET_FOR_SURE_42 is not set"),
        ('A="open', 'missing closing "'),
        ('A="x" y', "unexpected text after the closing quote"),
        ("echo hello", "expected KEY=VALUE"),
        ("CLIENT-CN=x", "expected KEY=VALUE"),
        ("CLIENTCN=x", "unknown property 'CLIENTCN' (did you mean CLIENT_CN?)"),
    ],
)
def test_errors_name_the_file_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(KeygenError) as caught:
        values(f"B=1\n{line}\n", tmp_path)
    text = str(caught.value)
    assert message in text
    assert f"{tmp_path / 'keygen.properties'}:2" in text


def test_values_bash_assigned_win_over_our_expansion(tmp_path: Path) -> None:
    # The wrappers pass what bash made of each line; keys not in the file stay unset.
    got = values('A="$(whoami)"\nB=2\n', tmp_path, environ={"A": "root", "CITY": "ignored"})
    assert got == {"A": "root", "B": "2"}


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.properties"
    path.write_bytes("CITY=Zürich\n".encode("latin-1"))
    with pytest.raises(KeygenError, match="is not UTF-8 text"):
        read_properties(path, KEYS)


def test_parse_lines_keeps_quote_kind_and_line_number() -> None:
    assert parse_lines("\nA='x'\n", "f") == [RawProperty("A", "x", "'", 2)]


def test_single_quoted_values_are_never_expanded() -> None:
    assert expand(RawProperty("A", "$(whoami)", "'", 1), {}, "f") == "$(whoami)"
