"""auth/ is the pure core: importing it must not load I/O-layer dependencies."""

import subprocess
import sys

FORBIDDEN = ("amqtt", "sqlalchemy", "asyncpg", "aiosqlite", "alembic", "typer", "yaml", "pydantic")


def test_importing_auth_loads_no_io_layer_dependency() -> None:
    code = (
        "import sys, importlib, pkgutil, auth\n"
        "for m in pkgutil.iter_modules(auth.__path__):\n"
        "    importlib.import_module('auth.' + m.name)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    leaked = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert leaked == []
    # And the check itself can fail: the modules we look for are real packages.
    assert "cryptography" in {m.split(".")[0] for m in loaded}
