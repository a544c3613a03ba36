"""broker.mqtt is the sans-I/O protocol core: importing it loads no I/O layer at all."""

import subprocess
import sys

# Not "socket": the standard library's email package, which cryptography imports for the
# certificate code in auth/ (the core uses auth.topics), loads it without ever opening one.
FORBIDDEN = (
    "asyncio", "ssl", "OpenSSL", "sqlalchemy", "asyncpg", "aiosqlite", "amqtt", "uvloop",
    "broker.transport", "broker.client", "storage",
)  # fmt: skip


def test_importing_the_protocol_core_loads_no_io() -> None:
    code = (
        "import sys, importlib, pkgutil, broker.mqtt\n"
        "for m in pkgutil.iter_modules(broker.mqtt.__path__):\n"
        "    importlib.import_module('broker.mqtt.' + m.name)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    leaked = sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert leaked == []
    # And the check itself can fail: the core's own modules were loaded.
    assert "broker.mqtt.connection" in loaded
