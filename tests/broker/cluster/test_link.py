"""Joining the cluster's NATS: the machine's server (JetStream) and private nats-servers with
user/password, token and mutual TLS, on free ports."""

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.cluster import link
from broker.cluster.link import ClusterLink, node_name, redacted
from nanoiot.errors import ClusterError, ClusterUnavailableError, ConfigError
from nanoiot.settings import Settings
from tests.broker.tls_certs import client_cert, make_server_pki
from tests.cluster.proxy import nats_proxy
from tests.natsserver import private_nats

WAIT = 10.0


async def test_members_answer_pings_with_who_they_are(
    cluster_settings: Callable[..., Settings],
) -> None:
    first = await ClusterLink.connect(cluster_settings(), worker=1)
    second = await ClusterLink.connect(cluster_settings(), worker=2)
    try:
        await first.answer_pings(role="broker")
        await second.answer_pings(role="broker")
        answers = await second.ping_members(expect=2, within=WAIT)
        assert sorted(answer["member"] for answer in answers) == ["node-a-w1", "node-a-w2"]
        assert {answer["role"] for answer in answers} == {"broker"}
        # Only this cluster's members: another cluster name on the same NATS is another world.
        other = await ClusterLink.connect(cluster_settings(cluster_name=first.cluster + "x"))
        try:
            assert await other.ping_members(expect=1, within=0.3) == []
        finally:
            await other.close()
    finally:
        await first.close()
        await second.close()


async def test_publish_subscribe_and_request(cluster_settings: Callable[..., Settings]) -> None:
    node = await ClusterLink.connect(cluster_settings())
    try:
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def echo(payload: bytes, _reply: str | None) -> bytes:
            got.put_nowait(payload)
            if payload == b"boom":
                raise RuntimeError("a handler's bug is logged, the subscription lives on")
            return payload.upper()

        subject = node.subject("test", "echo")
        await node.subscribe(subject, echo)
        await node.publish(subject, b"boom")
        assert await asyncio.wait_for(got.get(), WAIT) == b"boom"
        assert await node.request(subject, b"hello") == b"HELLO"
        with pytest.raises(ClusterUnavailableError, match="no responders"):
            await node.request(node.subject("test", "nobody"), b"?")
    finally:
        await node.close()


async def test_a_member_on_another_connection_is_answered_once_subscribe_returned(
    cluster_settings: Callable[..., Settings],
) -> None:
    """Over a slow path to NATS (each line the member sends goes a quarter of a second after the
    one before), not told nobody listens: nats-py writes a flush's PING ahead of the SUB it has
    not written yet, and its PONG alone comes back before NATS has the SUB."""
    with nats_proxy() as proxy:
        member = await ClusterLink.connect(cluster_settings(nats_url=proxy.url))
        other = await ClusterLink.connect(cluster_settings(node_name="node-b"))
        try:

            async def answer(_payload: bytes, _reply: str | None) -> bytes:
                return b"here"

            proxy.pace(0.25)
            await member.subscribe(member.subject("test", "slow"), answer)
            assert await other.answers(member.subject("test", "slow")) is True
        finally:
            proxy.pace(0)
            await other.close()
            await member.close()


async def test_nothing_listening_is_unavailable_and_names_the_url(
    cluster_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link, "CONNECT_WITHIN", 1.5)
    settings = cluster_settings(nats_url="nats://someone:secret@127.0.0.1:9")
    with pytest.raises(ClusterUnavailableError) as refused:
        await ClusterLink.connect(settings)
    message = str(refused.value)
    assert message.startswith("cannot reach NATS nats://127.0.0.1:9 (nats_url): ")
    assert "secret" not in message


async def test_a_packet_larger_than_nats_carries_is_refused_at_start(
    cluster_settings: Callable[..., Settings],
) -> None:
    """A message that cannot cross would fail its publisher at every send, and a retained
    one would never reach the others (the shared NATS has the default 1 MiB max_payload)."""
    settings = cluster_settings(max_packet_size=1024 * 1024)
    with pytest.raises(ConfigError) as refused:
        await ClusterLink.connect(settings)
    assert str(refused.value) == (
        "max_packet_size 1048576 does not fit in one NATS message (NATS nats://127.0.0.1:4222 "
        "has max_payload 1048576, of which 1024 bytes frame it): lower max_packet_size, or "
        "raise max_payload on the NATS servers"
    )
    largest = cluster_settings(max_packet_size=1024 * 1023, max_shared_subscription_bytes=0)
    joined = await ClusterLink.connect(largest)
    await joined.close()


async def test_shared_subscription_names_past_what_nats_carries_are_refused_at_start(
    cluster_settings: Callable[..., Settings],
) -> None:
    """Each message routed to a member names its groups in the same NATS message: what they
    may name, with the largest packet, must fit (else a device holding shared subscriptions
    with long names on one node made every message to it too large to cross)."""
    settings = cluster_settings(max_packet_size=1024 * 768, max_shared_subscription_bytes=261_000)
    with pytest.raises(ConfigError) as refused:
        await ClusterLink.connect(settings)
    assert str(refused.value) == (
        "max_packet_size 786432 and max_shared_subscription_bytes 261000 do not fit in one NATS "
        "message (NATS nats://127.0.0.1:4222 has max_payload 1048576, of which 1024 bytes "
        "frame it; the groups' names take up to 261132 bytes): lower either, or raise "
        "max_payload on the NATS servers"
    )
    fits = cluster_settings(max_packet_size=1024 * 768, max_shared_subscription_bytes=260_900)
    joined = await ClusterLink.connect(fits)
    await joined.close()


async def test_user_and_password(cluster_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with private_nats("--user", "node", "--pass", "s3cret") as url:
        joined = await ClusterLink.connect(
            cluster_settings(nats_url=url, nats_user="node", nats_password="s3cret")
        )
        await joined.close()
        wrong = cluster_settings(nats_url=url, nats_user="node", nats_password="wrong")
        started = asyncio.get_running_loop().time()
        with pytest.raises(ClusterError, match="refused this node: Authorization Violation"):
            await ClusterLink.connect(wrong)
        # Refused credentials end the attempt at once, not after CONNECT_WITHIN.
        assert asyncio.get_running_loop().time() - started < link.CONNECT_WITHIN / 2


async def test_token(cluster_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with private_nats("--auth", "t0ken") as url:
        joined = await ClusterLink.connect(cluster_settings(nats_url=url, nats_token="t0ken"))
        await joined.close()
        with pytest.raises(ClusterError, match="refused this node"):
            await ClusterLink.connect(cluster_settings(nats_url=url))


async def test_mutual_tls(cluster_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A NATS server that verifies clients against its CA: our CA file and client pair."""
    pki = make_server_pki(tmp_path)
    node = client_cert(tmp_path, "node-a")
    tls_options = ["--tls", "--tlscert", str(pki.cert_file), "--tlskey", str(pki.key_file)]
    tls_options += ["--tlsverify", "--tlscacert", str(node.cert_file)]
    with private_nats(*tls_options) as url:
        url = url.replace("nats://", "tls://")
        good = cluster_settings(
            nats_url=url,
            nats_tls_ca=pki.ca_file,
            nats_tls_cert=node.cert_file,
            nats_tls_key=node.key_file,
        )
        joined = await ClusterLink.connect(good)
        await joined.answer_pings()
        assert len(await joined.ping_members(expect=1, within=WAIT)) == 1
        await joined.close()
        with pytest.raises(ClusterError):
            await ClusterLink.connect(cluster_settings(nats_url=url, nats_tls_ca=pki.ca_file))


async def test_unusable_files_are_config_errors_naming_the_setting(
    cluster_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    missing = tmp_path / "node.creds"
    with pytest.raises(ConfigError, match=f"nats_creds_file {missing}: No such file"):
        await ClusterLink.connect(cluster_settings(nats_creds_file=missing))
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=f"nats_tls_ca {not_a_ca}: no usable CA"):
        await ClusterLink.connect(cluster_settings(nats_tls_ca=not_a_ca))


def test_node_name_defaults_to_a_subject_safe_host_name(
    cluster_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert node_name(cluster_settings()) == "node-a"
    monkeypatch.setattr("socket.gethostname", lambda: "rack 7*b.example.com")
    assert node_name(cluster_settings(node_name=None)) == "rack-7-b"


def test_redacted_drops_user_and_password() -> None:
    assert redacted("nats://u:p@a:4222, tls://b:4222") == "nats://a:4222,tls://b:4222"
    assert redacted("nats://t0ken@[::1]:4222") == "nats://[::1]:4222"


def test_single_node_never_loads_the_nats_client(tmp_path: Path) -> None:
    """No nats_url: starting and stopping a whole node imports nothing of NATS."""
    code = f"""
import asyncio, sys
from nanoiot.node import Node
from nanoiot.settings import Settings
settings = Settings(data_dir={str(tmp_path)!r}, mqtt_ssl_bind_address="127.0.0.1",
                    mqtt_ssl_bind_port=0, http_port=0)
async def main():
    node = await Node.start(settings)
    await node.stop()
asyncio.run(main())
loaded = sorted(name for name in sys.modules if name == "nats" or name.startswith("nats."))
assert not loaded, loaded
print("ok")
"""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


async def test_nothing_written_while_nats_is_lost_goes_out_once_it_is_back(
    cluster_settings: Callable[..., Settings],
) -> None:
    """A write while the connection is down fails at once, and is not sent later on the
    new connection (its caller took it as failed); the link says when NATS is back."""
    with nats_proxy() as proxy:
        watcher = await ClusterLink.connect(cluster_settings(), worker=1)
        cut_off = await ClusterLink.connect(cluster_settings(nats_url=proxy.url), worker=2)
        try:
            got: asyncio.Queue[bytes] = asyncio.Queue()

            async def take(payload: bytes, _reply: str | None) -> None:
                got.put_nowait(payload)

            await watcher.subscribe(watcher.subject("writes"), take)
            lost, back = asyncio.Event(), asyncio.Event()
            cut_off.on_lost(lost.set)
            cut_off.on_reconnected(back.set)
            proxy.cut()
            await asyncio.wait_for(lost.wait(), WAIT)
            with pytest.raises(ClusterUnavailableError):
                await cut_off.publish(cut_off.subject("writes"), b"while lost")
            proxy.restore()
            await asyncio.wait_for(back.wait(), WAIT)
            await cut_off.publish(cut_off.subject("writes"), b"once back")
            assert await asyncio.wait_for(got.get(), WAIT) == b"once back"
        finally:
            await cut_off.close()
            await watcher.close()
