"""Where NanoIoT finds its settings file and data, the same from whatever folder it runs in.

A command run in ``conf/`` (where the README sends people to make keys) must use the same
database as the broker started from the project folder. So:

- The settings file is the one named by ``--config`` / ``NANOIOT_CONFIG``, else the nearest
  ``conf/nanoiot.yaml`` in the current folder or any folder above it (as git finds ``.git``).
- Relative paths written in a settings file are relative to the folder holding that file
  (the shipped ``conf/nanoiot.yaml`` says ``data_dir: ../data``: the project's ``data/``).
  Paths from environment variables are relative to the current folder, as in any shell.
- With no settings file and no ``NANOIOT_DATA_DIR``, data lives in a per-user folder:
  ``$XDG_DATA_HOME/nanoiot`` (``~/.local/share/nanoiot``), never in whatever folder the
  command happened to run in.

No I/O beyond looking at the file system.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = ["PATH_SETTINGS", "find_settings_file", "relative_to_file", "user_data_dir"]

SETTINGS_FILE: Final = Path("conf") / "nanoiot.yaml"
# The settings that name files or folders.
PATH_SETTINGS: Final = (
    "data_dir", "mqtt_ssl_pem_cert", "mqtt_ssl_pem_key", "mqtt_ssl_key_store",
    "nats_creds_file", "nats_tls_ca", "nats_tls_cert", "nats_tls_key",
)  # fmt: skip


def find_settings_file(start: Path) -> Path | None:
    """The nearest ``conf/nanoiot.yaml`` at or above ``start`` (absolute), or None."""
    start = start.absolute()
    for folder in (start, *start.parents):
        candidate = folder / SETTINGS_FILE
        if candidate.is_file():
            return candidate
    return None


def relative_to_file(values: Mapping[str, Any], settings_file: Path) -> dict[str, Any]:
    """``values`` read from ``settings_file``, with relative paths made relative to its folder."""
    base = settings_file.absolute().parent
    resolved = dict(values)
    for key in PATH_SETTINGS:
        value = resolved.get(key)
        if isinstance(value, str | Path):
            path = Path(value).expanduser()
            resolved[key] = path if path.is_absolute() else (base / path).resolve()
    return resolved


def user_data_dir(environ: Mapping[str, str]) -> Path:
    """The per-user data folder (XDG Base Directory: ``$XDG_DATA_HOME``, else
    ``~/.local/share``), for runs without a settings file or ``NANOIOT_DATA_DIR``."""
    base = environ.get("XDG_DATA_HOME")
    if base and Path(base).is_absolute():
        return Path(base) / "nanoiot"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "share" / "nanoiot"
