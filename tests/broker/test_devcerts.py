import stat
from pathlib import Path

import pytest

from broker.devcerts import (
    first_device_instructions,
    needs_development_credentials,
    with_development_credentials,
)
from nanoiot.settings import Settings


def test_development_credentials_are_made_once_then_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert needs_development_credentials(settings)
    configured = with_development_credentials(settings)
    assert not needs_development_credentials(configured)
    cert, key = configured.mqtt_ssl_pem_cert, configured.mqtt_ssl_pem_key
    assert cert == tmp_path / "data" / "certs" / "mqttserver.pub.pem"
    assert key is not None
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = cert.read_bytes()
    again = with_development_credentials(settings)
    assert again.mqtt_ssl_pem_cert == cert
    assert cert.read_bytes() == first  # reused: clients that trust it keep working


def test_configured_credentials_are_left_alone(tmp_path: Path) -> None:
    pem = Settings(mqtt_ssl_pem_cert=tmp_path / "c.pem", mqtt_ssl_pem_key=tmp_path / "k.pem")
    assert not needs_development_credentials(pem)
    store = Settings(mqtt_ssl_credentials_type="KEYSTORE", mqtt_ssl_key_store=tmp_path / "s.jks")
    assert not needs_development_credentials(store)


def test_instructions_name_the_port_the_certificate_and_a_runnable_cli(tmp_path: Path) -> None:
    text = first_device_instructions(Settings(), Path("data/certs/mqttserver.pub.pem"), 18883)
    assert "-p 18883" in text
    assert "--cafile data/certs/mqttserver.pub.pem" in text
    assert "keygen client --server-cert data/certs/mqttserver.pub.pem" in text
    assert "nanoiot keygen client" in text  # bare name on PATH, or a path ending in nanoiot


def test_instructions_show_a_certificate_under_the_working_folder_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cert = tmp_path / "data" / "certs" / "mqttserver.pub.pem"
    text = first_device_instructions(Settings(), cert, 8883)
    assert "--cafile data/certs/mqttserver.pub.pem" in text
    elsewhere = first_device_instructions(Settings(), Path("/srv/certs/server.pem"), 8883)
    assert "--cafile /srv/certs/server.pem" in elsewhere
