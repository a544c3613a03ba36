"""Development server credentials, so `nanoiot serve` works on a fresh machine.

When no server certificate is configured, the broker makes one in ``<data dir>/certs`` with the
same code as ``server.keygen.sh`` (EC P-256, SANs for this host, localhost and 127.0.0.1), or
reuses the one it made before: clients that trust ``mqttserver.pub.pem`` keep working across
restarts. Production deployments configure MQTT_SSL_PEM_* or MQTT_SSL_KEY_STORE instead.
"""

import datetime as dt
import logging
import shutil
import sys
from pathlib import Path

from nanoiot.keygen.files import write_files
from nanoiot.keygen.outputs import ServerPaths, server_outputs
from nanoiot.keygen.properties import build_properties
from nanoiot.settings import CredentialsType, Settings
from nanoiot.text import host_port

log = logging.getLogger(__name__)


def needs_development_credentials(settings: Settings) -> bool:
    if settings.mqtt_ssl_credentials_type is CredentialsType.KEYSTORE:
        return settings.mqtt_ssl_key_store is None
    return settings.mqtt_ssl_pem_cert is None and settings.mqtt_ssl_pem_key is None


def development_paths(settings: Settings) -> ServerPaths:
    props = build_properties({}, "development defaults")
    return ServerPaths.of(props, settings.data_dir / "certs")


def with_development_credentials(settings: Settings) -> Settings:
    """``settings`` pointing at development server credentials, made now if missing."""
    paths = development_paths(settings)
    if not (paths.cert_pem.exists() and paths.key_pem.exists()):
        props = build_properties({}, "development defaults")
        paths.cert_pem.parent.mkdir(parents=True, exist_ok=True)
        write_files(server_outputs(props, paths, with_ca=False, now=dt.datetime.now(dt.UTC)))
        log.warning("generated development server credentials in %s", paths.cert_pem.parent)
    return settings.model_copy(
        update={
            "mqtt_ssl_credentials_type": CredentialsType.PEM,
            "mqtt_ssl_pem_cert": paths.cert_pem,
            "mqtt_ssl_pem_key": paths.key_pem,
            "mqtt_ssl_pem_key_password": None,
        }
    )


def cli_command() -> str:
    """How to call this installation's ``nanoiot`` from the current directory: the bare name
    when it is on PATH, else its path (``scripts/run`` uses ``.venv/bin/nanoiot``)."""
    installed = Path(sys.executable).with_name("nanoiot")
    on_path = shutil.which("nanoiot")
    if on_path is not None and Path(on_path).resolve() == installed.resolve():
        return "nanoiot"
    try:
        return str(installed.relative_to(Path.cwd()))
    except ValueError:
        return str(installed)


def first_device_instructions(settings: Settings, server_cert: Path, port: int) -> str:
    """What a newcomer runs next to connect a first device."""
    host = "localhost"
    nanoiot = cli_command()
    # The data folder is absolute (nanoiot.locations); inside the working folder, the short
    # relative path is easier to read and copy.
    if server_cert.is_absolute() and server_cert.is_relative_to(Path.cwd()):
        server_cert = server_cert.relative_to(Path.cwd())
    return "\n".join(
        [
            "NanoIoT is listening for MQTT over TLS on "
            f"{host_port(settings.mqtt_ssl_bind_address, port)}.",
            f"Clients trust the server certificate {server_cert}",
            "",
            "Connect a first device (in another terminal, same directory and settings):",
            f"  {nanoiot} keygen client --server-cert {server_cert} --cn my-device --provision",
            f"  mosquitto_sub --cafile {server_cert} --cert mqttclient.nopass.pem "
            f"--key mqttclient.nopass.pem -h {host} -p {port} -t 'v1/devices/me/#' -v &",
            f"  mosquitto_pub --cafile {server_cert} --cert mqttclient.nopass.pem "
            f"--key mqttclient.nopass.pem -h {host} -p {port} "
            "-t v1/devices/me/telemetry -m '{\"temperature\": 21.5}'",
            "",
            f"Revoke it again with: {nanoiot} credentials revoke my-device",
        ]
    )
