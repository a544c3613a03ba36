"""What every benchmark report says about where it ran, and a process's CPU time from /proc.

Figures from two machines are never compared, and neither are ratios: the same broker moved
by 2x between an AMD EPYC and an Intel Xeon host. So every report opens its machine section
with a ``host:`` line (CPU model, cores, kernel) to tell such results apart, and a ratio is
only ever taken between figures of one run.
"""

import os
import platform
import ssl
import subprocess
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` knows, else 'unknown')."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host() -> str:
    """The machine in one line: results with different lines are not comparable."""
    return f"{cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}"


def machine_lines(*tls: str, dirty_note: str = "with uncommitted changes") -> list[str]:
    """The machine section of a report: host, load, Python, OpenSSL, ``tls`` (what each
    side links, e.g. 'broker: pyOpenSSL over ...'), and the git commit."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"- host: {host()}",
        f"- load average at the end {load} (a shared machine inflates wall-clock figures)",
        f"- Python {platform.python_version()} ({platform.platform()})",
        f"- OpenSSL: stdlib ssl over {ssl.OPENSSL_VERSION}",
        *(f"- {line}" for line in tls),
        f"- git commit {git_commit(dirty_note)}",
    ]


def git_commit(dirty_note: str = "with uncommitted changes") -> str:
    """The short commit of HEAD, plus ``(dirty_note)`` when the work tree has changes."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        except OSError:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return f"{commit} ({dirty_note})" if git("status", "--porcelain") else commit


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads (proc(5): utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
