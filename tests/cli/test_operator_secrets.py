"""Secrets an operator writes into the settings never come back in what a command prints:
not from a config file that is not valid YAML, not from a database URL that carries its
password as a query parameter (the real ``nanoiot`` command, real SQLite/PostgreSQL)."""

import json
import re
import socket
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.cli.error_lines import one_error_line
from tests.serve_process import start


def test_a_config_file_that_is_not_yaml_is_named_without_its_text(
    nanoiot: Cli, tmp_path: Path
) -> None:
    config = tmp_path / "nanoiot.yaml"
    # An unterminated quote: PyYAML's own message quotes the line it stopped on.
    config.write_text('http_port: 8080\nmqtt_ssl_key_store_password: "hunter2-yaml\n')
    result = nanoiot("--config", str(config), "device", "list", ok=False)
    assert "hunter2" not in result.stdout + result.stderr
    one_error_line(result, f"{config}, line 3, column 1: not valid YAML: found unexpected end")
    assert "(while scanning a quoted scalar at line 2, column 30)" in result.stderr


def test_a_database_url_after_a_yaml_colon_is_not_echoed(nanoiot: Cli, tmp_path: Path) -> None:
    config = tmp_path / "nanoiot.yaml"
    config.write_text("database_url: postgresql://nanoiot:hunter2-url@db/x: y\n")
    result = nanoiot("--config", str(config), "device", "list", ok=False)
    assert "hunter2" not in result.stdout + result.stderr
    one_error_line(result, f"{config}, line 1, ")


def test_a_query_parameter_password_is_masked_when_the_database_is_away(
    nanoiot: Cli, cli_env: dict[str, str]
) -> None:
    with socket.socket() as probe:  # bound, not listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        cli_env["NANOIOT_DATABASE_URL"] = (
            f"postgresql://nanoiot@127.0.0.1:{port}/nanoiot?password=hunter2-query"
        )
        waited = nanoiot("db", "wait", "--timeout", "0", ok=False)
        listed = nanoiot("device", "list", ok=False)
    for result in (waited, listed):
        assert result.returncode == 1, result
        assert "hunter2" not in result.stdout + result.stderr
        assert "password=***" in result.stdout + result.stderr


@pytest.mark.parametrize("form", ["PEM", "KEYSTORE"])
def test_serve_warns_of_a_server_key_others_can_read(
    nanoiot: Cli, cli_env: dict[str, str], tmp_path: Path, form: str
) -> None:
    keys = tmp_path / "keys"
    nanoiot("keygen", "server", "--dir", str(keys))
    key = keys / ("mqttserver.key.pem" if form == "PEM" else "mqttserver.jks")
    key.chmod(0o644)  # as a careless copy, or a secret mounted with default modes, leaves it
    env = {
        **cli_env,
        "MQTT_SSL_BIND_ADDRESS": "127.0.0.1",
        "MQTT_SSL_BIND_PORT": "0",
        "NANOIOT_HTTP_PORT": "0",
        "MQTT_SSL_CREDENTIALS_TYPE": form,
        "MQTT_SSL_PEM_CERT": str(keys / "mqttserver.pub.pem"),
        "MQTT_SSL_PEM_KEY": str(keys / "mqttserver.key.pem"),
        "MQTT_SSL_KEY_STORE": str(keys / "mqttserver.jks"),
        "MQTT_SSL_KEY_STORE_PASSWORD": "server_ks_password",
    }
    served = start(env, tmp_path)
    try:
        served.log.wait_for(
            rf"WARNING .*{re.escape(str(key))} is mode 0644: other users may read secrets in "
            rf"it \(chmod 600 {re.escape(str(key))}\)"
        )
    finally:
        served.stop()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nat://node:hunter2-nats@nats:4222", "'nat://***@nats:4222' is not a NATS URL"),
        ("nats://hunter2-token@nats:99999", "'nats://***@nats:99999' has a bad port"),
        ("node:hunter2-nats@nats:4222", "'***@nats:4222' is not a NATS URL"),
    ],
)
def test_a_nats_url_refused_is_shown_without_its_credentials(
    nanoiot: Cli, cli_env: dict[str, str], url: str, shown: str
) -> None:
    cli_env["NANOIOT_NATS_URL"] = url
    result = nanoiot("device", "list", ok=False)
    assert "hunter2" not in result.stdout + result.stderr
    one_error_line(result, "setting 'nats_url'")
    assert shown in result.stderr


def test_a_chosen_access_token_comes_on_stdin_never_the_command_line(nanoiot: Cli) -> None:
    nanoiot("device", "add", "t1")
    on_the_line = nanoiot("credentials", "add-token", "t1", "hunter2-cmdline-token", ok=False)
    one_error_line(on_the_line, "a token on the command line is visible to other users (ps)")
    given = nanoiot("credentials", "add-token", "t1", "--token-stdin", stdin="hunter2-stdin\n")
    assert given.stdout.strip().endswith(": hunter2-stdin")
    empty = nanoiot("credentials", "add-token", "t1", "--token-stdin", stdin="\n", ok=False)
    one_error_line(empty, "empty token on standard input")
    listed = nanoiot("credentials", "list", "t1", "--json").stdout
    assert len(json.loads(listed)) == 1  # only the one from stdin; the refused one was not added
