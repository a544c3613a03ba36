"""``nanoiot serve`` and ``nanoiot api`` as real processes: what they print, how they stop."""

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.cli.conftest import NANOIOT
from tests.serve_process import WAIT

_READY = re.compile(r"ready: (\S+)")
_HTTP = re.compile(r"(http://[\d.]+:\d+)/ui")
_IDLE_WINDOW = 5.0  # seconds
_IDLE_BUDGET = 0.004  # CPU seconds per second that an idle node may use
_STEP = 0.25  # seconds: the change feed's poll interval


@contextmanager
def running(
    cli_env: dict[str, str], cwd: Path, command: str
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start ``nanoiot <command>`` on free ports; yield it once it prints ``ready:``."""
    env = {
        **cli_env,
        "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
        "MQTT_SSL_BIND_PORT": "0",
        "NANOIOT_HTTP_PORT": "0",
    }
    process = subprocess.Popen(
        [NANOIOT, command], env=env, cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # blocks until the process prints or exits
            lines.append(line)
            if _READY.search(line):
                break
        else:
            raise AssertionError(f"nanoiot {command} exited early: {''.join(lines)}")
        yield process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            if process.stdout is not None:
                process.stdout.close()


def _http_url(lines: list[str]) -> str:
    for line in lines:
        if match := _HTTP.search(line):
            return match.group(1)
    raise AssertionError(f"no HTTP address printed: {''.join(lines)}")


def test_serve_prints_a_generated_admin_token_once(cli_env: dict[str, str], tmp_path: Path) -> None:
    with running(cli_env, tmp_path, "serve") as (process, lines):
        text = "".join(lines)
        token = re.search(r"Admin token \(shown once.*\n\s+(\S+)", text)
        assert token is not None, text
        url = _http_url(lines)
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        assert httpx.get(f"{url}/metrics", headers=headers).status_code == 200
        assert httpx.get(f"{url}/healthz").json()["broker"] == "listening"
    assert process.returncode == 0
    with running(cli_env, tmp_path, "serve") as (_, lines):
        assert "Admin token" not in "".join(lines)


def test_api_alone_serves_the_store(cli_env: dict[str, str], tmp_path: Path) -> None:
    with running(cli_env, tmp_path, "api") as (process, lines):
        url = _http_url(lines)
        health = httpx.get(f"{url}/healthz").json()
        assert health == {
            "status": "ok",
            "broker": "not in this process",
            "database": "ok",
            "sessions": "ok",
        }
    assert process.returncode == 0


def _cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time used so far by each thread of process ``pid``, in seconds. Read from the
    scheduler's nanosecond counts: /proc/PID/stat's utime + stime are whole 10 ms clock
    ticks, each rounded down, so a difference of two is off by up to 20 ms, the whole of
    what an idle window may use."""
    used: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            used[task.name] = int((task / "schedstat").read_text().split()[0]) / 1e9
    return used


def _used(before: dict[str, float], after: dict[str, float]) -> float | None:
    """CPU seconds used between the two readings; None if a thread ended between them
    (what it used is nowhere to read any more)."""
    if set(before) - set(after):
        return None
    return sum(after.values()) - sum(before.get(thread, 0.0) for thread in after)


def _settled(pid: int) -> None:
    """Until the start's last tasks (the first change-feed look, the first $SYS) are done:
    a quarter of a second within the idle budget, at most WAIT seconds of looking (a
    node that never settles then fails the measurement that follows)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        before = _cpu_seconds(pid)
        time.sleep(_STEP)
        used = _used(before, _cpu_seconds(pid))
        if used is not None and used < _IDLE_BUDGET * _STEP:
            return


def test_an_idle_serve_costs_next_to_no_cpu(cli_env: dict[str, str], tmp_path: Path) -> None:
    # Nothing connected, nobody asking: no polling loop may keep the process busy (the
    # change feed was four ORM queries a second, uvicorn's tick ten wake-ups a second).
    with running(cli_env, tmp_path, "serve") as (process, _lines):
        _settled(process.pid)
        before = _cpu_seconds(process.pid)
        time.sleep(_IDLE_WINDOW)
        used = _used(before, _cpu_seconds(process.pid))
    assert used is not None, "a thread of the idle node ended"
    assert used < _IDLE_BUDGET * _IDLE_WINDOW, (
        f"{used * 1000:.1f} ms of CPU in {_IDLE_WINDOW} s idle"
    )


def test_loading_the_cli_does_not_load_rich() -> None:
    # `nanoiot serve` loads every command to parse its arguments but prints through rich
    # never: rich (some 3 MiB of a broker's memory) comes with the first table or progress bar.
    program = "import sys, nanoiot.cli; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert "'rich'" not in loaded.stdout
