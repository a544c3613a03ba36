"""What an admitted client keeps of its connect request (broker.admission)."""

from cryptography import x509

from auth.acl import Acl
from auth.decision import Decision, Holder, Reason
from auth.kinds import CredentialStatus
from broker.admission import admit, kept_request
from broker.authn import ConnectRequest
from broker.mqtt.packets import Connect
from broker.peer import Peer
from tests.certgen import issue


def request(certificate: x509.Certificate | None, *chain: x509.Certificate) -> ConnectRequest:
    return ConnectRequest(certificate, chain, "user", "secret", "meter-1", "127.0.0.1")


def test_a_live_client_keeps_its_certificates_without_what_the_decision_read() -> None:
    """The decision reads extensions and names, which a parsed certificate keeps from then
    on; the client keeps copies parsed afresh, equal and in the same order."""
    ca = issue("Fleet CA", ca=True)
    intermediate = issue("Line CA", ca=True, issuer=ca)
    leaf = issue("meter", issuer=intermediate)
    sent = request(leaf.cert, leaf.cert, intermediate.cert)
    kept = kept_request(sent)
    assert kept.certificate == leaf.cert
    assert kept.certificate is not leaf.cert
    assert kept.chain == (leaf.cert, intermediate.cert)
    assert kept.chain[0] is kept.certificate  # one parsed leaf, as the TLS layer gave it
    assert all(mine is not theirs for mine, theirs in zip(kept.chain, sent.chain, strict=True))
    assert (kept.username, kept.password, kept.client_id, kept.remote) == (
        "user", "secret", "meter-1", "127.0.0.1",
    )  # fmt: skip
    without = request(None)
    assert kept_request(without) is without  # a password client: nothing to parse


def test_an_admitted_client_keeps_no_registered_pem() -> None:
    leaf = issue("meter")
    holder = Holder(
        "0b6b8a6e-8f7e-4c55-9b1a-0d6f1c2f9a10", "meter", True, "cred-1",
        CredentialStatus.ACTIVE, pinned_pem=leaf.cert_pem,
    )  # fmt: skip
    decision = Decision(True, Reason.ALLOWED, "device 'meter'", holder, "sha256")
    peer = admit(
        decision, Connect(4, "meter", True, 60), request(leaf.cert, leaf.cert),
        Acl([]).for_identity, strict_client_id=True,
    )  # fmt: skip
    assert isinstance(peer, Peer)
    assert peer.decision.holder is not None
    assert peer.decision.holder.pinned_pem is None
    assert peer.decision.holder.device_id == holder.device_id
    assert peer.request.certificate == leaf.cert
