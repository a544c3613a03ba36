"""What the ``nanoiot doctor`` tests share: one store seen by doctor and by the broker's own
``Authenticator``, and the verdict of both on the same certificate (doctor must say exactly
what the broker does). Doctor runs in-process through typer's runner, so the many scenarios
stay fast.
"""

import asyncio
import datetime as dt
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from unittest import mock

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from auth.certificate import parse_credential
from auth.decision import Decision
from broker.authn import Authenticator, ConnectRequest
from nanoiot.cli import app
from nanoiot.cli.common import open_store
from nanoiot.settings import Settings
from storage.interface import CredentialStore
from storage.records import Device
from tests.certgen import Issued

T = TypeVar("T")
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


class World:
    """One store (a SQLite file) seen by doctor and by the broker's authenticator."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.env = {"NANOIOT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
        self.settings = Settings.model_validate({"data_dir": tmp_path / "data"})

    def store(self, action: Callable[[CredentialStore], Awaitable[T]]) -> T:
        async def go() -> T:
            async with open_store(self.settings) as store:
                return await action(store)

        return asyncio.run(go())

    def device(self, name: str, cert: Issued | None = None, *, enabled: bool = True) -> Device:
        async def add(store: CredentialStore) -> Device:
            device = await store.create_device(name)
            if cert is not None:
                await store.add_x509_credential(device.id, parse_credential(cert.cert_pem))
            if not enabled:
                device = await store.set_device_enabled(device.id, False)
            return device

        return self.store(add)

    def trust(
        self,
        name: str,
        ca: Issued,
        *,
        crl: bytes | None = None,
        cn_regex: str | None = None,
        create_devices: bool = False,
    ) -> None:
        async def add(store: CredentialStore) -> None:
            added = await store.add_trusted_ca(
                name, parse_credential(ca.cert_pem), cn_regex=cn_regex,
                create_devices=create_devices,
            )  # fmt: skip
            if crl is not None:
                pem = x509.load_der_x509_crl(crl).public_bytes(Encoding.PEM).decode()
                await store.set_ca_crl(added.id, pem)

        self.store(add)

    def cli(self, *args: str) -> str:
        with mock.patch.dict(os.environ, self.env):
            result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    def doctor(
        self, *chain: Issued, args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> "Verdict":
        """Run doctor on a .nopass.pem of ``chain``, then the broker on the same certificate."""
        path = self.dir / f"{chain[0].cert.serial_number:x}.nopass.pem"
        path.write_text(chain[0].key_pem + "".join(c.cert_pem for c in chain))
        env = {**self.env, **(env or {})}
        with mock.patch.dict(os.environ, env):
            result = CliRunner().invoke(app, ["doctor", "--cert", str(path), *args])
        assert result.exception is None or isinstance(result.exception, SystemExit), result
        check = env.get("MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT") != "true"
        broker = self.store(lambda store: _broker_decides(store, chain, check))
        return Verdict(result.exit_code, result.output, broker, path)


async def _broker_decides(
    store: CredentialStore, chain: tuple[Issued, ...], check_validity: bool
) -> Decision:
    certificates = tuple(c.cert for c in chain)
    request = ConnectRequest(certificates[0], certificates, None, None, "", "127.0.0.1")
    return await Authenticator(store, check_validity=check_validity).authenticate(request)


class Verdict:
    def __init__(self, code: int, output: str, broker: Decision, path: Path) -> None:
        self.code, self.output, self.broker, self.path = code, output, broker, path
        lines = output.splitlines()
        self.verdict = next(line for line in lines if line.startswith(("ACCEPTED", "REFUSED")))
        self.step = next((line for line in lines if line.startswith("next step: ")), "")

    def accepted(self, line: str) -> "Verdict":
        assert self.code == 0, self.output
        assert self.verdict == line
        assert self.broker.allowed, self.broker
        return self

    def refused(self, detail: str, step: str) -> "Verdict":
        assert self.code == 1, self.output
        assert self.verdict.startswith(f"REFUSED: {detail}"), self.output
        assert step in self.step, self.output
        assert not self.broker.allowed
        assert self.verdict == f"REFUSED: {self.broker.detail}"  # the broker's own words
        return self
