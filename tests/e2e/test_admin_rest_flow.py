"""The product text's "Alternatively, the same can be done through the REST API", with curl.

Keys come from the shipped keygen scripts; the device is created and given its certificate
through the admin API of a running node with curl, exactly as an operator would type it; then
paho connects with that certificate. Changes made through the API reach the live session at
once: replacing the credential or deleting the device disconnects it.
"""

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import BrokerThread, Client, mqtt_client
from tests.e2e.interop import DeviceKeys, make_keys, running_broker


@dataclass(frozen=True)
class Operator:
    """curl against the node's admin API, as in the documentation."""

    broker: BrokerThread
    folder: Path

    def curl(self, method: str, path: str, body: Any = None, token: bool = True) -> Any:
        args = ["curl", "-sS", "-X", method, "-w", "\n%{http_code}"]
        if token:
            args += ["-H", f"X-Authorization: Bearer {self.broker.admin_token}"]
        if body is not None:
            request = self.folder / "request.json"
            request.write_text(json.dumps(body))
            args += ["-H", "Content-Type: application/json", "--data", f"@{request}"]
        result = subprocess.run(
            [*args, f"{self.broker.http_url}{path}"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        text, _, status = result.stdout.rpartition("\n")
        return int(status), json.loads(text) if text else None

    def client(self, device: DeviceKeys) -> Client:
        return mqtt_client(self.broker.port, self.broker.server_cert, device.nopass)


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[tuple[Operator, DeviceKeys]]:
    keys = make_keys(tmp_path / "keys")
    device = keys.device("sensor-rest")
    with running_broker(keys, tmp_path / "data") as broker:
        yield Operator(broker, tmp_path), device


def provision(operator: Operator, device: DeviceKeys) -> str:
    status, created = operator.curl("POST", "/api/device", {"name": device.name})
    assert status == 200, created
    device_id: str = created["id"]["id"]
    body = {
        "deviceId": {"id": device_id, "entityType": "DEVICE"},
        "credentialsType": "X509_CERTIFICATE",
        "credentialsValue": device.pub.read_text(),
    }
    status, credentials = operator.curl("POST", "/api/device/credentials", body)
    assert status == 200, credentials
    assert credentials["credentialsType"] == "X509_CERTIFICATE"
    return device_id


def test_curl_provisioned_certificate_lets_the_device_in(
    operator: tuple[Operator, DeviceKeys],
) -> None:
    api, device = operator
    provision(api, device)
    client = api.client(device)
    try:
        assert client.wait_connack() == 0
    finally:
        client.close()


def test_without_the_token_curl_changes_nothing(operator: tuple[Operator, DeviceKeys]) -> None:
    api, device = operator
    status, body = api.curl("POST", "/api/device", {"name": device.name}, token=False)
    assert status == 401, body
    status, listing = api.curl("GET", "/api/tenant/devices?pageSize=10&page=0")
    assert (status, listing["totalElements"]) == (200, 0)


def make_change(api: Operator, change: str, device_id: str) -> tuple[int, Any]:
    if change == "delete device":
        return api.curl("DELETE", f"/api/device/{device_id}")  # type: ignore[no-any-return]
    if change == "disable device":
        return api.curl("POST", f"/api/v1/devices/{device_id}/disable")  # type: ignore[no-any-return]
    if change == "revoke credential":
        status, credentials = api.curl("GET", f"/api/device/{device_id}/credentials")
        assert status == 200, credentials
        credential_id = credentials["id"]["id"]
        return api.curl("POST", f"/api/v1/credentials/{credential_id}/revoke")  # type: ignore[no-any-return]
    body = {"deviceId": {"id": device_id}, "credentialsType": "ACCESS_TOKEN"}
    return api.curl("POST", "/api/device/credentials", body)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "change",
    ["switch to access token", "delete device", "revoke credential", "disable device"],
)
def test_api_change_disconnects_the_live_device(
    operator: tuple[Operator, DeviceKeys], change: str
) -> None:
    api, device = operator
    device_id = provision(api, device)
    client = api.client(device)
    try:
        assert client.wait_connack() == 0
        status, body = make_change(api, change, device_id)
        assert status == 200, body
        assert client.disconnected.wait(5)
        again = api.client(device)
        try:
            assert again.wait_connack() == 5
        finally:
            again.close()
    finally:
        client.close()
