"""``nanoiot doctor``: every verdict, with real certificates, checked against the broker itself.

Each scenario sets up the store, runs ``doctor`` (in-process through typer's runner, so the
many scenarios stay fast), then lets the broker's own ``Authenticator`` decide the same
certificate on the same store: doctor must say exactly what the broker does. A few tests at
the end run the real console script.
"""

import asyncio
import datetime as dt
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from auth.certificate import parse_credential
from auth.decision import Decision
from broker.authn import Authenticator, ConnectRequest
from nanoiot.cli import app
from nanoiot.cli.common import open_store
from nanoiot.errors import ValidationError
from nanoiot.settings import Settings
from storage.interface import CredentialStore
from storage.records import Device
from tests.certgen import Issued, issue
from tests.cli.conftest import Cli
from tests.cli.test_ca import crl_of

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


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


CA = issue("Fleet CA", ca=True)


# --- pinned public keys -----------------------------------------------------------------------


def test_pinned_device_is_accepted_and_the_key_is_never_shown(world: World) -> None:
    cert = issue("sensor-1")
    world.device("sensor-1", cert)
    verdict = world.doctor(cert).accepted("ACCEPTED as device 'sensor-1' (pinned public key)")
    assert parse_credential(cert.cert_pem).spki_sha256 in verdict.output
    assert "CN=sensor-1" in verdict.output
    assert "EC P-256" in verdict.output
    assert "PRIVATE" not in verdict.output
    assert all(line not in verdict.output for line in cert.key_pem.splitlines()[1:-1])


def test_unknown_self_signed_certificate_says_how_to_register(world: World) -> None:
    verdict = world.doctor(issue("sensor-2"))
    verdict.refused(
        "unknown certificate key sha256:",
        f"register it: nanoiot device add sensor-2 && "
        f"nanoiot credentials add-x509 sensor-2 {verdict.path}",
    )


def test_expired_and_not_yet_valid(world: World) -> None:
    old = issue("old", not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    early = issue("early", not_before=NOW + DAY, not_after=NOW + 9 * DAY)
    world.device("old", old)
    world.device("early", early)
    world.doctor(old).refused(
        f"certificate expired on {old.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
        "issue a new one, with client.keygen.sh --cn old --prefix old, and register it",
    )
    world.doctor(early).refused("certificate not valid before", "check the clock")
    skip = {"MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT": "true"}
    lenient = world.doctor(old, env=skip).accepted("ACCEPTED as device 'old' (pinned public key)")
    assert "accepted only because MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT" in lenient.output


def test_disabled_device_and_revoked_credential(world: World) -> None:
    off, gone = issue("off"), issue("gone")
    world.device("off", off, enabled=False)
    world.doctor(off).refused("device 'off' is disabled", "nanoiot device enable off")
    device = world.device("gone", gone)
    world.store(lambda store: store.revoke_x509(device.id))
    world.doctor(gone).refused(
        "credential of device 'gone' was revoked",
        "revoked credentials cannot be re-enabled: issue a new key",
    )


def test_server_certificate_given_instead_of_the_device_certificate(world: World) -> None:
    server = issue("broker.example", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    hint = "server certificate given instead of a device certificate?"
    world.doctor(server).refused("unknown certificate key", hint)
    world.device("mixed-up", server)  # registered by mistake: the EKU rule refuses it
    world.doctor(server).refused("certificate is not for client authentication", hint)


# --- devices of a trusted CA ------------------------------------------------------------------


def test_ca_issued_leaf_would_create_its_device(world: World) -> None:
    world.trust("fleet", CA, cn_regex=r"device-(.+)", create_devices=True)
    leaf = issue("device-sensor-9", issuer=CA)
    world.doctor(leaf).accepted(
        "ACCEPTED: issued by trusted CA 'fleet'; "
        "device 'sensor-9' would be created at first connect"
    )
    # doctor wrote nothing; the broker's decision (made after it) did create the device
    created = world.store(lambda store: store.get_device_by_name("sensor-9"))
    assert created.enabled


def test_ca_issued_leaf_of_an_existing_device(world: World) -> None:
    world.trust("fleet", CA)
    world.device("sensor-3")
    world.doctor(issue("sensor-3", issuer=CA)).refused(
        "device 'sensor-3' was not created by CA 'fleet' nor bound to it",
        "nanoiot device bind sensor-3 fleet",
    )
    assert "bound to CA 'fleet'" in world.cli("device", "bind", "sensor-3", "fleet")
    world.doctor(issue("sensor-3", issuer=CA)).accepted(
        "ACCEPTED: issued by trusted CA 'fleet'; as device 'sensor-3' "
        "(the certificate is added to its credentials at first connect)"
    )
    assert "bound to CA 'fleet'" in world.cli("device", "add", "sensor-4", "--ca", "fleet")
    world.doctor(issue("sensor-4", issuer=CA)).accepted(
        "ACCEPTED: issued by trusted CA 'fleet'; as device 'sensor-4' "
        "(the certificate is added to its credentials at first connect)"
    )


def test_a_trusted_ca_cannot_take_over_a_pinned_device(world: World) -> None:
    """A leaf of any trusted CA naming a device through the CN rule used to be attached to
    it, whatever the device's own credentials (the takeover of a pinned device)."""
    world.trust("fleet", CA, cn_regex=r"device-(.+)", create_devices=True)
    world.device("boiler", issue("boiler"))  # its own self-signed certificate, pinned
    world.doctor(issue("device-boiler", issuer=CA)).refused(
        "device 'boiler' has X.509 credentials from a certificate an operator registered",
        "keeps to the certificates registered for it",
    )
    # Binding does not help: the pinned certificate keeps the device to itself.
    world.cli("device", "bind", "boiler", "fleet")
    world.doctor(issue("device-boiler", issuer=CA)).refused(
        "device 'boiler' has X.509 credentials from a certificate an operator registered", ""
    )
    # A device another CA created is that CA's alone.
    other = issue("Other CA", ca=True)
    world.trust("other", other, cn_regex=r"device-(.+)", create_devices=True)
    first = issue("device-pump", issuer=other)
    broker = world.doctor(first).broker  # the broker stores the leaf and creates 'pump'
    assert broker.allowed, broker
    world.doctor(issue("device-pump", issuer=CA)).refused(
        "device 'pump' has X.509 credentials from another CA", ""
    )


def test_ca_that_does_not_create_devices(world: World) -> None:
    world.trust("fleet", CA)
    world.doctor(issue("sensor-4", issuer=CA)).refused(
        "no device 'sensor-4' and CA 'fleet' does not create devices",
        "create the device first: nanoiot device add sensor-4",
    )


def test_cn_outside_the_rule_and_cn_that_is_no_device_name(world: World) -> None:
    world.trust("fleet", CA, cn_regex=r"device-(.+)", create_devices=True)
    world.doctor(issue("thermostat-1", issuer=CA)).refused(
        "CN 'thermostat-1' does not match the rule of CA 'fleet'", "--cn-regex"
    )
    # The rule accepts the CN, but '+' cannot be in an MQTT device name: refused, not a crash.
    world.doctor(issue("device-a+b", issuer=CA)).refused(
        "CA 'fleet': invalid device name 'a+b'", "--cn-regex"
    )


def test_untrusted_issuer_even_when_expired(world: World) -> None:
    world.trust("fleet", CA)
    stranger_ca = issue("Stranger CA", ca=True)
    step = "or trust its issuer 'CN=Stranger CA': nanoiot ca add"
    world.doctor(issue("x", issuer=stranger_ca)).refused("unknown certificate key and issuer", step)
    # An expired stranger is a stranger first: "expired" would send the operator astray.
    expired = issue("y", issuer=stranger_ca, not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    world.doctor(expired).refused("unknown certificate key and issuer", step)


def test_expired_leaf_of_a_trusted_ca(world: World) -> None:
    world.trust("fleet", CA, create_devices=True)
    leaf = issue("sensor-5", issuer=CA, not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    world.doctor(leaf).refused(
        "certificate expired on", "issue a new one, with client.keygen.sh --ca --cn sensor-5"
    )


def test_crl_revokes_first_connect_and_pinned_leaf(world: World) -> None:
    first, pinned = issue("sensor-6", issuer=CA, serial=0x66), issue("sensor-7", issuer=CA)
    world.device("sensor-7", pinned)  # registered by key: the CA's CRL still applies
    world.trust("fleet", CA, create_devices=True, crl=crl_of(CA, 0x66, pinned.cert.serial_number))
    step = "its CA revoked it (CRL): issue a new key, with client.keygen.sh --ca"
    world.doctor(first).refused("certificate serial 66 is revoked by its CA", step)
    world.doctor(pinned).refused("certificate serial", step)


def test_leaf_stored_through_a_deleted_ca(world: World) -> None:
    world.trust("fleet", CA, create_devices=True)
    world.trust("other", issue("Other CA", ca=True))
    leaf, pinned = issue("sensor-6", issuer=CA), issue("sensor-7", issuer=CA)
    world.device("sensor-7", pinned)  # registered by key by the operator: needs no CA
    world.doctor(leaf).accepted(  # the broker stores the leaf with its CA
        "ACCEPTED: issued by trusted CA 'fleet'; "
        "device 'sensor-6' would be created at first connect"
    )

    async def delete_fleet(store: CredentialStore) -> str:
        [fleet] = [ca for ca in await store.list_trusted_cas() if ca.name == "fleet"]
        await store.delete_trusted_ca(fleet.id)
        return str(fleet.id)

    fleet_id = world.store(delete_fleet)
    world.doctor(leaf).refused(
        f"certificate was issued by CA '{fleet_id}' which is no longer trusted",
        "the CA that issued it was deleted or disabled",
    )
    kept = world.doctor(pinned)
    assert (kept.code, kept.broker.allowed) == (0, True), kept.output


def test_crl_of_a_rolled_over_ca_with_the_same_name(world: World) -> None:
    """Old and new CA share a DN; only the new one's CRL lists the serial. The CRL must be
    chosen by the issuing key, not the name (RFC 5280 §6.3.3 (f))."""
    old, new = issue("Fleet CA", ca=True), issue("Fleet CA", ca=True)
    first, pinned = issue("sensor-8", issuer=new, serial=8), issue("sensor-9", issuer=new)
    world.device("sensor-9", pinned)
    world.trust("a-new", new, create_devices=True, crl=crl_of(new, 8, pinned.cert.serial_number))
    world.trust("b-old", old, create_devices=True, crl=crl_of(old))  # listed after 'a-new'
    world.doctor(first).refused("certificate serial 8 is revoked", "its CA revoked it")
    world.doctor(pinned).refused("certificate serial", "its CA revoked it")


def test_intermediate_sent_in_the_file_is_used(world: World) -> None:
    world.trust("root", CA, create_devices=True)
    plant = issue("Plant CA", issuer=CA, ca=True)
    leaf = issue("sensor-10", issuer=plant)
    world.doctor(leaf, plant).accepted(
        "ACCEPTED: issued by trusted CA 'root'; "
        "device 'sensor-10' would be created at first connect"
    )
    world.doctor(issue("sensor-11", issuer=plant)).refused(
        "unknown certificate key and issuer 'CN=Plant CA'", "if an intermediate CA issued it"
    )


def test_ca_certificate_given_instead_of_a_device_certificate(world: World) -> None:
    world.trust("fleet", CA)
    world.doctor(issue("Other CA", ca=True)).refused(
        "unknown certificate key and issuer", "this is a CA certificate, not a device certificate"
    )
    # A CA certificate the trusted CA issued (an intermediate) is no device either.
    world.doctor(issue("sub CA", ca=True, issuer=CA)).refused(
        "a CA certificate issued by another CA (basicConstraints CA:TRUE) cannot be a device "
        "certificate",
        "this is a CA certificate",
    )


def test_weak_keys_are_refused_in_the_handshake_with_the_minimum(world: World) -> None:
    weak = issue("old-meter", key=rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the attack
    with pytest.raises(ValidationError, match=r"^RSA key of 1024 bits is too weak"):
        world.device("meter", weak)
    # Registered while the minimum was lower: refused in the handshake once it is raised.
    defaults = world.settings
    world.settings = Settings.model_validate(
        {"data_dir": world.dir / "data", "min_rsa_key_bits": 1024}
    )
    world.device("old-meter", weak)
    world.settings = defaults
    world.doctor(weak).refused(
        "RSA key of 1024 bits is too weak (at least 2048: min_rsa_key_bits)", "stronger key"
    )
    p192 = issue("tiny", key=ec.generate_private_key(ec.SECP192R1()), issuer=CA)
    world.trust("fleet", CA, create_devices=True)
    world.doctor(p192).refused("EC P-192 key (192 bits) is too weak", "stronger key")


def test_ca_with_an_unusable_crl_is_ignored_and_named(world: World) -> None:
    other = issue("Other CA", ca=True)
    world.trust("fleet", CA, create_devices=True, crl=crl_of(CA, signer=other))  # forged CRL
    verdict = world.doctor(issue("sensor-12", issuer=CA))
    verdict.refused("unknown certificate key sha256:", "register it")
    assert "note: trusted CA 'fleet' is ignored by the broker: its CRL is unusable" in (
        verdict.output
    )


def test_strict_client_id(world: World) -> None:
    cert = issue("sensor-13")
    world.device("sensor-13", cert)
    strict = {"NANOIOT_STRICT_CLIENT_ID": "true"}
    world.doctor(cert, args=("--client-id", "sensor-13"), env=strict).accepted(
        "ACCEPTED as device 'sensor-13' (pinned public key)"
    )
    verdict = world.doctor(cert, args=("--client-id", "other"), env=strict)
    assert verdict.code == 1
    assert verdict.verdict == "REFUSED: client id 'other' is not the device name 'sensor-13'"
    assert "connect with client id 'sensor-13' or an empty one" in verdict.step
    loose = world.doctor(cert, args=("--client-id", "other"))
    assert loose.code == 0


# --- the real console script --------------------------------------------------------------------


def test_console_script_exit_codes_and_nopass_key_never_echoed(
    nanoiot: Cli, tmp_path: Path
) -> None:
    cert = issue("sensor-20")
    World(tmp_path).device("sensor-20", cert)  # the same data dir as the `nanoiot` fixture
    nopass = tmp_path / "sensor-20.nopass.pem"
    nopass.write_text(cert.key_pem + cert.cert_pem)
    accepted = nanoiot("doctor", "--cert", str(nopass))
    assert "ACCEPTED as device 'sensor-20' (pinned public key)" in accepted.stdout
    for secret in cert.key_pem.splitlines()[1:-1]:
        assert secret not in accepted.stdout + accepted.stderr

    stranger = tmp_path / "stranger.pub.pem"
    stranger.write_text(issue("stranger").cert_pem)
    refused = nanoiot("doctor", "--cert", str(stranger), ok=False)
    assert refused.returncode == 1
    assert "REFUSED: unknown certificate key" in refused.stdout
    # What the device itself reads (MQTT 5 §3.2.2.2): 0x87 not authorized; 3.1.1: 5.
    assert "MQTT 5 CONNACK reason code 0x87" in refused.stdout
    assert "MQTT 3.1.1 return code 5" in refused.stdout
    assert "next step: register it: nanoiot device add stranger" in refused.stdout


def test_console_script_input_errors_are_one_line(nanoiot: Cli, tmp_path: Path) -> None:
    key_only = tmp_path / "device.key.pem"
    key = issue("k")
    key_only.write_text(key.key_pem)
    result = nanoiot("doctor", "--cert", str(key_only), ok=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {key_only}: no CERTIFICATE block in the file (it holds: PRIVATE KEY)\n"
    )
    assert key.key_pem.splitlines()[1] not in result.stdout + result.stderr
    missing = nanoiot("doctor", "--cert", str(tmp_path / "nope.pem"), ok=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: cannot read {tmp_path / 'nope.pem'}")
