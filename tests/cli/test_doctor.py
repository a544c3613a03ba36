"""``nanoiot doctor`` on pinned public keys, and the real console script.

Each scenario sets up the store, runs ``doctor`` and lets the broker decide the same
certificate (``tests.cli.doctor_world``); the devices of a trusted CA are in
``test_doctor_ca``. The tests at the end run the real console script.
"""

from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID

from auth.certificate import parse_credential
from tests.certgen import issue
from tests.cli.conftest import Cli
from tests.cli.doctor_world import DAY, NOW, World

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
