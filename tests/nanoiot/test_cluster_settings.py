"""The cluster settings: NATS URL, credentials and TLS files, names, workers. Each mistake is
refused in one line naming the setting."""

import os
from pathlib import Path

import pytest

from nanoiot.errors import ConfigError
from nanoiot.settings import Settings, load_settings
from nanoiot.supervisor import worker_count

URL = {"NANOIOT_NATS_URL": "nats://nats:4222"}


def load(tmp_path: Path, env: dict[str, str]) -> Settings:
    return load_settings(environ=env, cwd=tmp_path)


def refused(tmp_path: Path, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, env)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_single_node_by_default(tmp_path: Path) -> None:
    settings = load(tmp_path, {})
    assert settings.nats_url is None
    assert (settings.workers, settings.cluster_name, settings.node_name) == (1, "nanoiot", None)


def test_a_full_cluster_configuration_from_the_environment(tmp_path: Path) -> None:
    env = URL | {
        "NANOIOT_NATS_URL": "tls://nats-1:4222, tls://nats-2:4222",
        "NANOIOT_NATS_CREDS_FILE": "node.creds",
        "NANOIOT_NATS_TLS_CA": "ca.pem",
        "NANOIOT_NATS_TLS_CERT": "node.pem",
        "NANOIOT_NATS_TLS_KEY": "node.key",
        "NANOIOT_NODE_NAME": "edge-7",
        "NANOIOT_CLUSTER_NAME": "plant_b",
        "NANOIOT_WORKERS": "4",
        "NANOIOT_CLUSTER_REPLICAS": "3",
    }
    settings = load(tmp_path, env)
    assert settings.nats_creds_file == Path("node.creds")
    assert (settings.cluster_replicas, load(tmp_path, URL).cluster_replicas) == (3, 1)
    assert (settings.node_name, settings.cluster_name, settings.workers) == ("edge-7", "plant_b", 4)
    assert load(tmp_path, URL | {"NANOIOT_WORKERS": "auto"}).workers == "auto"


def test_relative_files_in_the_settings_file_are_relative_to_it(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "nanoiot.yaml").write_text(
        "nats_url: nats://nats:4222\nnats_creds_file: secrets/node.creds\n"
    )
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.nats_creds_file == conf / "secrets" / "node.creds"


REFUSED = {
    "option-without-url": (
        {"NANOIOT_NATS_TOKEN": "t"},
        "setting 'nats_token' (from $NANOIOT_NATS_TOKEN)",
        "is set but nats_url is not",
    ),
    "bad-scheme": (
        {"NANOIOT_NATS_URL": "http://nats:4222"},
        "'nats_url'",
        "'http://nats:4222' is not a NATS URL",
    ),
    "no-host": ({"NANOIOT_NATS_URL": "nats://:4222"}, "'nats_url'", "is not a NATS URL"),
    "bad-port": ({"NANOIOT_NATS_URL": "nats://nats:99999"}, "'nats_url'", "has a bad port"),
    "user-without-password": (
        URL | {"NANOIOT_NATS_USER": "node"},
        "setting 'nats_password' (not set)",  # judged by nats_user's value
        "nats_user and nats_password go together",
    ),
    "password-without-user": (
        URL | {"NANOIOT_NATS_PASSWORD": "pw"},
        "'nats_password'",
        "go together",
    ),
    "two-ways-to-authenticate": (
        URL | {"NANOIOT_NATS_CREDS_FILE": "a.creds", "NANOIOT_NATS_TOKEN": "t"},
        "'nats_token'",
        "set one way to authenticate to NATS",
    ),
    "cert-without-key": (
        URL | {"NANOIOT_NATS_TLS_CERT": "node.pem"},
        "'nats_tls_key'",
        "nats_tls_cert and nats_tls_key go together",
    ),
    "node-name-with-a-dot": ({"NANOIOT_NODE_NAME": "a.b"}, "'node_name'", "should match"),
    "cluster-name-with-a-wildcard": (
        {"NANOIOT_CLUSTER_NAME": "x*"},
        "'cluster_name'",
        "should match",
    ),
    "zero-workers": ({"NANOIOT_WORKERS": "0"}, "'workers", ""),
    "zero-replicas": (
        {"NANOIOT_CLUSTER_REPLICAS": "0"},
        "'cluster_replicas' (from $NANOIOT_CLUSTER_REPLICAS)",
        "greater than or equal to 1",
    ),
    "six-replicas": (  # JetStream keeps at most 5 copies of a stream
        {"NANOIOT_CLUSTER_REPLICAS": "6"},
        "'cluster_replicas'",
        "less than or equal to 5",
    ),
    "words-for-workers": ({"NANOIOT_WORKERS": "many"}, "'workers", ""),
    "too-few-qos2-ids": (  # fewer would forget a resend's id within moments
        {"NANOIOT_CLUSTER_QOS2_IDS_KEPT": "999"},
        "'cluster_qos2_ids_kept'",
        "greater than or equal to 1000",
    ),
    "no-will-lookups": (  # a dead member's wills would never be decided
        {"NANOIOT_CLUSTER_MAX_WILL_LOOKUPS": "0"},
        "'cluster_max_will_lookups'",
        "greater than or equal to 1",
    ),
    "no-subacks-waiting": (  # a SUBSCRIBE's SUBACK could never wait
        {"NANOIOT_CLUSTER_MAX_SUBACKS_WAITING": "0"},
        "'cluster_max_subacks_waiting'",
        "greater than or equal to 1",
    ),
    "negative-completed-qos2-ids": (
        {"NANOIOT_CLUSTER_QOS2_COMPLETED_KEPT": "-1"},
        "'cluster_qos2_completed_kept'",
        "greater than or equal to 0",
    ),
}


@pytest.mark.parametrize(("env", "names", "says"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_in_one_line(tmp_path: Path, env: dict[str, str], names: str, says: str) -> None:
    message = refused(tmp_path, env)
    assert names in message
    assert says in message


def test_worker_count(tmp_path: Path) -> None:
    clustered = load(tmp_path, URL)
    cpus = len(os.sched_getaffinity(0))
    assert worker_count("auto", clustered) == cpus
    assert worker_count(3, clustered) == 3
    alone = load(tmp_path, {})
    assert worker_count(1, alone) == 1
    with pytest.raises(ConfigError, match="workers 2 needs nats_url"):
        worker_count(2, alone)
    if cpus > 1:
        with pytest.raises(ConfigError, match=f"workers {cpus} needs nats_url"):
            worker_count("auto", alone)
