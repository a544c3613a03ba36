"""What an operator sees when a ``nanoiot`` command refuses: exit status 1 and one line on
stderr, ``error: ...``, never a traceback."""

import subprocess


def one_error_line(result: subprocess.CompletedProcess[str], starts: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
