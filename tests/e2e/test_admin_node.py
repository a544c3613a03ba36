"""The admin HTTP server inside a running node: health, metrics, the admin token."""

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from admin.token import TOKEN_FILE
from nanoiot.errors import ConfigError
from nanoiot.node import Node
from tests.certgen import issue
from tests.e2e.harness import BrokerThread, broker_settings, device_client

REPO = Path(__file__).resolve().parents[2]


def documented_healthz() -> object:
    """The answer docs/deploy.md shows for a healthy node, on the line after its curl."""
    lines = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8").splitlines()
    shown = lines[lines.index("curl -s http://127.0.0.1:8080/healthz") + 1]
    return json.loads(shown.removeprefix("# "))


def test_healthz_needs_no_token_and_reports_broker_and_database(broker: BrokerThread) -> None:
    response = httpx.get(f"{broker.http_url}/healthz")
    assert response.status_code == 200
    healthy = {"status": "ok", "broker": "listening", "database": "ok", "sessions": "ok"}
    assert response.json() == healthy
    assert documented_healthz() == healthy


def test_healthz_is_503_once_the_broker_stops_listening(broker: BrokerThread) -> None:
    broker.running.listener.close()
    response = httpx.get(f"{broker.http_url}/healthz")
    assert response.status_code == 503
    assert response.json()["broker"] == "not listening"


def test_metrics_count_connects_refusals_and_messages(broker: BrokerThread, tmp_path: Path) -> None:
    assert httpx.get(f"{broker.http_url}/metrics").status_code == 401
    client, _ = device_client(broker, tmp_path, "meter")
    try:
        assert client.wait_connack() == 0
        client.subscribe("v1/devices/me/attributes")
        client.publish("v1/devices/me/attributes", b"{}")
        client.next_message()
        stranger, _ = device_client(broker, tmp_path, "stranger", issued=issue("stranger"))
        assert stranger.wait_connack() == 5
        stranger.close()
        text = broker.metrics()
    finally:
        client.close()
    assert "nanoiot_connected_devices 1.0" in text
    assert "nanoiot_connects_accepted_total 1.0" in text
    assert 'nanoiot_connects_refused_total{reason="unknown_key"} 1.0' in text
    assert "nanoiot_messages_received_total 1.0" in text
    assert "nanoiot_messages_sent_total 1.0" in text
    assert "nanoiot_auth_lookup_seconds_count 2.0" in text


def test_generated_admin_token_is_private_and_reused(tmp_path: Path) -> None:
    settings = broker_settings(tmp_path / "data")
    first = BrokerThread(settings)
    try:
        assert first.node.admin_token_created
        token_file = tmp_path / "data" / TOKEN_FILE
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert token_file.read_text().strip() == first.admin_token
    finally:
        first.stop()
    second = BrokerThread(settings)
    try:
        assert not second.node.admin_token_created
        assert second.admin_token == first.admin_token
    finally:
        second.stop()


def test_configured_admin_token_is_used_and_no_file_is_written(tmp_path: Path) -> None:
    token = "configured-token-0123456789"
    running = BrokerThread(broker_settings(tmp_path / "data", admin_token=token))
    try:
        headers = {"X-Authorization": f"Bearer {token}"}
        assert httpx.get(f"{running.http_url}/metrics", headers=headers).status_code == 200
        assert not (tmp_path / "data" / TOKEN_FILE).exists()
    finally:
        running.stop()


async def test_a_short_admin_token_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        await Node.start(broker_settings(tmp_path / "data", admin_token="short"))
    assert not (tmp_path / "data").exists()
