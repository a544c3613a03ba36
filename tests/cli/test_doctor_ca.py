"""``nanoiot doctor`` on devices of a trusted CA: first connects, CRLs, chains, key sizes.

Each scenario sets up the store, runs ``doctor`` and lets the broker decide the same
certificate (``tests.cli.doctor_world``).
"""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nanoiot.errors import ValidationError
from nanoiot.settings import Settings
from storage.interface import CredentialStore
from tests.certgen import crl_of, issue
from tests.cli.doctor_world import DAY, NOW, World

CA = issue("Fleet CA", ca=True)


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
