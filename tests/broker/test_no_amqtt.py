"""The broker runs on its own MQTT core: no module of the product loads amqtt (its client stays
a test peer, and bench/ compares against its broker)."""

import subprocess
import sys


def test_no_product_module_loads_amqtt() -> None:
    code = (
        "import sys, importlib, pkgutil\n"
        "for package in ('broker', 'storage', 'nanoiot', 'admin', 'auth'):\n"
        "    root = importlib.import_module(package)\n"
        "    for m in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        if '.migrations' not in m.name:\n"
        "            importlib.import_module(m.name)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert [m for m in loaded if m.split(".")[0] == "amqtt"] == []
    assert "broker.client" in loaded  # the walk reached the broker's modules
