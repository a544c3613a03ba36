"""Authentication of one MQTT connection: the store lookups around the pure decisions.

Called after the TLS handshake and the CONNECT packet, before any stored session is read or
changed: a CONNECT that fails authentication must not take over or wipe anyone's session
(amqtt 0.12.1 read and reset the session first). Order of checks, as in the reference
system: a client certificate decides alone (user name and password are then ignored); without
one, the user name is an access token, or with a password an MQTT_BASIC user name.
"""

import asyncio
import contextlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from auth.binding import ExistingDevice, attach_problem
from auth.certificate import ParsedCredential, load_certificate, parse_credential
from auth.chain import ChainMatch, TrustAnchor, load_crl, match_chain
from auth.cn_rule import cn_rule_problem
from auth.decision import (
    Decision,
    Holder,
    Reason,
    decide_basic,
    decide_certificate,
    decide_token,
    deny,
    no_credentials,
    store_unavailable,
)
from auth.fingerprint import spki_sha256
from auth.keys import DEFAULT_KEYS, KeyPolicy
from auth.kinds import CredentialType
from auth.pinning import decide_pinned
from broker.password_gate import PasswordGate
from nanoiot.errors import (
    ConflictError,
    NanoIoTError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from nanoiot.settings import Settings
from nanoiot.text import printable
from storage.interface import CredentialStore
from storage.records import CredentialMatch, Device, TrustedCA

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)  # one per connection
class ConnectRequest:
    """What a client presented: its TLS certificate chain and its CONNECT credentials."""

    certificate: x509.Certificate | None
    chain: tuple[x509.Certificate, ...]
    username: str | None
    password: str | None
    client_id: str
    remote: str


def holder_of(match: CredentialMatch) -> Holder:
    """The store's answer in the shape the pure decision takes."""
    return Holder(
        device_id=str(match.device.id),
        device_name=match.device.name,
        device_enabled=match.device.enabled,
        credential_id=str(match.credential.id),
        credential_status=match.credential.status,
        application=match.credential.application,
        issuer_ca_id=(
            str(match.credential.issuer_ca_id) if match.credential.issuer_ca_id else None
        ),
        pinned_pem=match.credential.pem,
    )


@dataclass(frozen=True)
class CertificatePolicy:
    """The settings that decide a client certificate."""

    check_validity: bool = True  # not MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT
    keys: KeyPolicy = DEFAULT_KEYS  # min_rsa_key_bits, min_ec_key_bits
    whole_certificate: bool = False  # pin_whole_certificate


def certificate_policy(settings: Settings) -> CertificatePolicy:
    return CertificatePolicy(
        check_validity=not settings.mqtt_ssl_skip_validity_check_for_client_cert,
        keys=KeyPolicy(settings.min_rsa_key_bits, settings.min_ec_key_bits),
        whole_certificate=settings.pin_whole_certificate,
    )


class Authenticator:
    """Decides connections; holds the trusted CAs, reloaded when the change feed says so."""

    def __init__(
        self,
        store: CredentialStore,
        *,
        check_validity: bool = True,
        policy: CertificatePolicy | None = None,
        passwords: PasswordGate | None = None,
    ) -> None:
        self._store = store
        self._policy = policy or CertificatePolicy(check_validity=check_validity)
        self._check_validity = self._policy.check_validity
        self.passwords = passwords or PasswordGate()
        self._anchors: tuple[TrustAnchor, ...] | None = None
        self._ca_names: dict[str, str] = {}  # every CA by id, disabled ones too
        self._unusable_rules: set[tuple[str, str]] = set()  # (CA id, rule) logged already

    @property
    def check_validity(self) -> bool:
        """Whether certificates are refused outside their validity period (not under
        ``mqtt_ssl_skip_validity_check_for_client_cert``)."""
        return self._check_validity

    def forget_trusted_cas(self) -> None:
        """Reload the trusted CAs and CRLs at the next use (a CA or CRL changed)."""
        self._anchors = None

    async def authenticate(self, request: ConnectRequest, within: float | None = None) -> Decision:
        """The decision on ``request``; its store lookups take ``within`` seconds at most
        (TimeoutError past it). An MQTT basic password's argon2 verification does not count:
        it is CPU work here, bounded by the password gate and the connect timeout, and on a
        busy machine it may take longer than that while the database answers at once."""
        try:
            if request.certificate is None and request.username and request.password is not None:
                return await self._by_password(request, within)
            async with asyncio.timeout(within):
                if request.certificate is not None:
                    return await self._by_certificate(request)
                if request.username:
                    match = await self._store.find_token(request.username)
                    return decide_token(holder_of(match) if match else None)
                return no_credentials()
        except StoreError as exc:
            # Unreachable or failing, the store cannot vouch for anyone: CONNACK 3 (MQTT
            # 3.1.1 §3.2.2.3), and the client may retry; never a crash of the listener.
            return store_unavailable(str(exc))

    async def decide_credential(self, credential_id: str, within: float | None = None) -> Decision:
        """The decision on a certless connection (access token, MQTT basic) admitted before,
        from the credential it was admitted with: what may have changed since, the
        credential's status and its device's, decided as at its connect. Its secret is not
        needed (nor kept anywhere but the store): it cannot change under the same id. The id
        comes from another member's will entry (NATS): one that is no UUID names nothing."""
        try:
            wanted = UUID(credential_id)
        except ValueError:
            return deny(
                Reason.UNKNOWN_TOKEN, f"credential id '{printable(credential_id)}' unreadable"
            )
        try:
            async with asyncio.timeout(within):
                credential = await self._store.get_credential(wanted)
                device = await self._store.get_device(credential.device_id)
        except NotFoundError:
            return deny(Reason.UNKNOWN_TOKEN, f"credential {wanted} no longer exists")
        except StoreError as exc:
            return store_unavailable(str(exc))
        holder = holder_of(CredentialMatch(device, credential))
        if credential.type is CredentialType.MQTT_BASIC:
            return decide_basic(holder, printable(credential.username or ""))
        return decide_token(holder)

    async def _by_password(self, request: ConnectRequest, within: float | None) -> Decision:
        """MQTT basic: the argon2 check runs within the password gate's bounds; only the
        lookup before it within ``within`` seconds."""
        username, password = request.username or "", request.password or ""
        match = await self.passwords.check(
            request.remote,
            lambda: self._store.check_basic(
                username, password, request.client_id, lookup_within=within
            ),
        )
        if isinstance(match, Decision):
            return match
        return decide_basic(holder_of(match) if match else None, printable(username))

    async def _by_certificate(self, request: ConnectRequest) -> Decision:
        certificate = request.certificate
        assert certificate is not None
        now = datetime.now(UTC)
        match = await self._store.find_x509(spki_sha256(certificate.public_key()))
        anchors = await self._trusted_cas()
        if match is not None or not anchors:
            # A pinned leaf obeys the CRL of a trusted CA that issued it (RFC 5280 §6.3); one
            # stored through a trusted CA also needs that CA still trusted and chaining.
            return decide_pinned(
                certificate, request.chain[1:], holder_of(match) if match else None, anchors,
                now=now, check_validity=self._check_validity, ca_names=self._ca_names,
                keys=self._policy.keys, whole_certificate=self._policy.whole_certificate,
            )  # fmt: skip
        chained = match_chain(
            certificate, request.chain[1:], anchors, now=now,
            check_validity=self._check_validity, keys=self._policy.keys,
        )  # fmt: skip
        if isinstance(chained, Decision):
            return chained
        return await self._ca_issued(certificate, chained, now)

    async def _ca_issued(
        self, certificate: x509.Certificate, chained: ChainMatch, now: datetime
    ) -> Decision:
        """A leaf of a trusted CA: the device named by its CN, created if the CA allows it.

        The leaf is stored as a credential of that device, so a renewed leaf is a rotation
        and each leaf can be revoked on its own.
        """
        parsed = parse_credential(certificate.public_bytes(Encoding.PEM))
        try:
            refusal = await self._store_leaf(parsed, chained)
        except ValidationError as exc:
            # The CA's rule accepted the CN, but the name it gives cannot be an MQTT device
            # name ('/', '+', '#', ...): a refusal for this leaf, not a broker error.
            return deny(Reason.NAME_NOT_ALLOWED, f"CA '{chained.anchor.name}': {exc}")
        if refusal is not None:
            return refusal
        match = await self._store.find_x509(parsed.spki_sha256)
        return decide_certificate(
            certificate, holder_of(match) if match else None, now=now,
            check_validity=self._check_validity, keys=self._policy.keys,
        )  # fmt: skip

    async def _store_leaf(self, parsed: ParsedCredential, chained: ChainMatch) -> Decision | None:
        """Store the leaf for its device; a refusal if there is no device and none may be made,
        or if the device is not this CA's to attach to (auth.binding).

        A device's first connects can race (a reconnect loop, two leaves of one device): a
        ConflictError means another connection stored the device or the leaf first, so we look
        again, and ``find_x509`` afterwards says whom the leaf now belongs to.
        """
        ca_id = UUID(chained.anchor.ca_id)  # the leaf stands only as long as this CA
        for _ in range(2):
            try:
                device = await self._store.get_device_by_name(chained.device_name)
            except NotFoundError:
                if not chained.anchor.create_devices:
                    return deny(
                        Reason.NAME_NOT_ALLOWED,
                        f"no device '{chained.device_name}' and CA '{chained.anchor.name}' "
                        "does not create devices",
                    )
                try:
                    await self._store.create_device_with_credential(
                        chained.device_name, type="default", x509=parsed, issuer_ca_id=ca_id
                    )
                except ConflictError:
                    continue  # stored meanwhile by another connection: look again
                log.info(
                    "created device '%s' for a leaf of CA '%s'",
                    chained.device_name, chained.anchor.name,
                )  # fmt: skip
                return None
            refusal = attach_problem(
                await existing_device(self._store, device, self._ca_names),
                chained.anchor.ca_id,
                chained.anchor.name,
            )  # fmt: skip
            if refusal is not None:
                return refusal
            with contextlib.suppress(ConflictError):
                await self._store.add_x509_credential(device.id, parsed, issuer_ca_id=ca_id)
            return None
        return None

    async def _trusted_cas(self) -> Sequence[TrustAnchor]:
        if self._anchors is None:
            cas = await self._store.list_trusted_cas()
            self._ca_names = {str(ca.id): ca.name for ca in cas}
            self._anchors = tuple(
                anchor for ca in cas if ca.enabled for anchor in _anchor(ca, self._unusable_rules)
            )  # fmt: skip
        return self._anchors


async def existing_device(
    store: CredentialStore, device: Device, known_cas: Collection[str]
) -> ExistingDevice:
    """What ``auth.binding`` needs to know about ``device``. Credentials of a CA that is no
    longer registered (``known_cas``: every CA's id, disabled ones too) are left out: they
    can never authenticate again, and the device is an operator's to bind anew."""
    credentials = await store.list_credentials(device.id)
    origins = (
        str(c.issuer_ca_id) if c.issuer_ca_id else None
        for c in credentials
        if c.type is CredentialType.X509_CERTIFICATE
        and (c.issuer_ca_id is None or str(c.issuer_ca_id) in known_cas)
    )
    bound = str(device.bound_ca_id) if device.bound_ca_id else None
    return ExistingDevice.of(device.name, bound, origins)


def _anchor(ca: TrustedCA, logged_rules: set[tuple[str, str]]) -> tuple[TrustAnchor, ...]:
    """The CA as a trust anchor; a CA whose stored CRL no longer verifies is left out (fail
    closed: better refuse its devices than accept revoked ones), with an error logged."""
    certificate = load_certificate(ca.pem)
    crl = None
    if ca.crl_pem:
        try:
            crl = load_crl(ca.crl_pem.encode(), certificate)
        except NanoIoTError as exc:
            log.error("trusted CA '%s' disabled: its CRL is unusable: %s", ca.name, exc)
            return ()
    # A rule stored before auth.cn_rule checked rules (Python syntax RE2 refuses): the anchor
    # stays, so its devices read this reason rather than "untrusted issuer"; logged once (the
    # CAs are loaded again after each change of any), not at each connect.
    rule_problem = cn_rule_problem(ca.cn_regex) if ca.cn_regex is not None else None
    if rule_problem is not None and (str(ca.id), ca.cn_regex or "") not in logged_rules:
        logged_rules.add((str(ca.id), ca.cn_regex or ""))
        log.error("trusted CA '%s': its devices are refused: %s", ca.name, rule_problem)
    return (
        TrustAnchor(
            ca_id=str(ca.id), name=ca.name, certificate=certificate, cn_regex=ca.cn_regex,
            create_devices=ca.create_devices, crl=crl,
        ),
    )  # fmt: skip
