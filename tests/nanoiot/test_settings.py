import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from nanoiot.errors import ConfigError
from nanoiot.settings import Settings, env_name, load_settings

SHIPPED = Path(__file__).resolve().parents[2] / "conf" / "nanoiot.yaml"


def test_defaults_without_any_file_keep_data_in_a_per_user_folder(tmp_path: Path) -> None:
    """Not in the working directory: a command run elsewhere must find the same database."""
    work = tmp_path / "somewhere"
    work.mkdir()
    settings = load_settings(environ={"HOME": str(tmp_path / "home")}, cwd=work)
    assert settings.mqtt_ssl_bind_port == 8883
    assert settings.http_port == 8080
    database = tmp_path / "home" / ".local" / "share" / "nanoiot" / "nanoiot.db"
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{database}"
    xdg = load_settings(environ={"XDG_DATA_HOME": str(tmp_path / "xdg")}, cwd=work)
    assert xdg.data_dir == tmp_path / "xdg" / "nanoiot"


def test_the_nearest_settings_file_above_the_working_directory_is_used(tmp_path: Path) -> None:
    """Run from the project folder, from conf/ or from deeper down: the same settings, and
    relative paths in the file are relative to the file's folder."""
    project = tmp_path / "project"
    (project / "conf" / "keys").mkdir(parents=True)
    (project / "conf" / "nanoiot.yaml").write_text(
        "data_dir: ../data\nmqtt_ssl_pem_cert: keys/server.pem\nhttp_port: 8181\n"
    )
    for cwd in (project, project / "conf", project / "conf" / "keys"):
        settings = load_settings(environ={}, cwd=cwd)
        assert settings.http_port == 8181
        assert settings.data_dir == project / "data"
        assert settings.mqtt_ssl_pem_cert == project / "conf" / "keys" / "server.pem"
    outside = load_settings(environ={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert outside.http_port == 8080


def test_relative_paths_from_the_environment_stay_relative_to_the_working_directory(
    tmp_path: Path,
) -> None:
    settings = load_settings(environ={"NANOIOT_DATA_DIR": "mine"}, cwd=tmp_path)
    assert settings.data_dir == Path("mine")


def test_shipped_file_documents_every_setting_with_its_default() -> None:
    documented = yaml.safe_load(SHIPPED.read_text())
    assert set(documented) == set(Settings.model_fields)
    # data_dir is the one exception: the project's data/ folder, beside conf/.
    assert documented.pop("data_dir") == "../data"
    assert load_settings(SHIPPED, environ={}).data_dir == SHIPPED.parents[1] / "data"
    defaults = Settings().model_dump(exclude={"data_dir"})
    listed = Settings(**{k: v for k, v in documented.items() if v is not None})
    assert listed.model_dump(exclude={"data_dir"}) == defaults
    assert all(documented[k] is None for k, v in defaults.items() if v is None)
    text = SHIPPED.read_text()
    for key in Settings.model_fields:  # each key has a comment above it
        before = text.split(f"\n{key}:")[0].rstrip().splitlines()[-1]
        assert before.startswith(("#", *Settings.model_fields)), key


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "n.yaml"
    config.write_text("mqtt_ssl_bind_port: 9999\ndata_dir: /srv/a\n")
    env = {"MQTT_SSL_BIND_PORT": "18883", "NANOIOT_CONFIG": str(config)}
    settings = load_settings(environ=env)
    assert settings.mqtt_ssl_bind_port == 18883
    assert settings.data_dir == Path("/srv/a")


def test_reference_and_own_environment_names() -> None:
    assert env_name("mqtt_ssl_pem_cert") == "MQTT_SSL_PEM_CERT"
    assert env_name("data_dir") == "NANOIOT_DATA_DIR"
    env = {
        "MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT": "true",
        "MQTT_SSL_CREDENTIALS_TYPE": "KEYSTORE",
        "NANOIOT_DATABASE_URL": "postgresql+asyncpg://u@h/db",
        "NANOIOT_ADMIN_TOKEN": "s3cret",
        "UNRELATED": "x",
    }
    settings = load_settings(config_path=SHIPPED, environ=env)
    assert settings.mqtt_ssl_skip_validity_check_for_client_cert is True
    assert settings.mqtt_ssl_credentials_type == "KEYSTORE"
    assert settings.effective_database_url == "postgresql+asyncpg://u@h/db"
    assert settings.admin_token is not None
    assert "s3cret" not in repr(settings)


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "n.yaml"
    config.write_text("mqtt_ssl_bind_prot: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path=config, environ={})
    message = str(caught.value)
    assert str(config) in message
    assert "'mqtt_ssl_bind_prot'" in message
    assert "did you mean 'mqtt_ssl_bind_port'" in message


def refused(environ: dict[str, str], config_path: Path = SHIPPED) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path=config_path, environ=environ)
    assert "\n" not in str(caught.value)  # one line
    return str(caught.value)


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("NANOIOT_MAX_INFLIGHT_MESAGES", "NANOIOT_MAX_INFLIGHT_MESSAGES"),
        ("NANOIOT_DATABSE_URL", "NANOIOT_DATABASE_URL"),
        ("NANOIOT_DATADIR", "NANOIOT_DATA_DIR"),
        ("MQTT_SSL_BIND_PROT", "MQTT_SSL_BIND_PORT"),  # was ignored: the broker took 8883
        ("mqtt_ssl_pem_crt", "MQTT_SSL_PEM_CERT"),
        ("NANOIOT_MQTT_SSL_BIND_PORT", "MQTT_SSL_BIND_PORT"),  # TLS keeps the reference's names
        ("NANOIOT_CONFG", "NANOIOT_CONFIG"),
    ],
)
def test_a_misspelt_variable_is_refused_naming_it_and_the_variable_meant(
    name: str, suggested: str
) -> None:
    """Named as the operator wrote it, and the suggestion is a variable to write, not a key
    of the file."""
    message = refused({name: "200"})
    assert message == f"environment: unknown setting '{name}' (did you mean '{suggested}'?)"


def test_an_unknown_variable_far_from_any_is_refused_without_a_guess() -> None:
    assert refused({"NANOIOT_QQQQ": "x"}) == "environment: unknown setting 'NANOIOT_QQQQ'"


def test_the_reference_systems_tls_switch_may_stay_on_but_not_off() -> None:
    """Ours is always TLS: an environment carried over with MQTT_SSL_ENABLED=true still
    starts; one asking for a plain listener is told it will not get one."""
    assert load_settings(config_path=SHIPPED, environ={"MQTT_SSL_ENABLED": "true"})
    assert "the MQTT listener is always TLS" in refused({"MQTT_SSL_ENABLED": "false"})


def test_a_bad_value_from_the_environment_names_the_variable_not_the_file() -> None:
    message = refused({"MQTT_SSL_BIND_PORT": "port"})
    assert message.startswith("setting 'mqtt_ssl_bind_port' (from $MQTT_SSL_BIND_PORT): ")
    assert str(SHIPPED) not in message
    assert refused({"nanoiot_max_inflight_messages": "0"}).startswith(  # as written
        "setting 'max_inflight_messages' (from $nanoiot_max_inflight_messages): "
    )
    assert "mqtt_ssl_protocol" in refused({"MQTT_SSL_PROTOCOL": "TLSv1"})


def test_a_bad_value_in_the_file_names_the_file_and_key_not_a_variable(tmp_path: Path) -> None:
    config = tmp_path / "n.yaml"
    config.write_text("max_inflight_messages: 0\n")
    message = refused({}, config)
    assert message == (
        f"setting 'max_inflight_messages' (from file {config}): "
        "Input should be greater than or equal to 1"
    )
    config.write_text("http_trusted_proxies: [haproxy.local]\n")
    assert refused({}, config).startswith(f"setting 'http_trusted_proxies' (from file {config}): ")
    # The environment wins, and is what the error names.
    config.write_text("max_inflight_messages: 20\n")
    name = "NANOIOT_MAX_INFLIGHT_MESSAGES"
    assert f"(from ${name})" in refused({name: "0"}, config)


@pytest.mark.parametrize(
    ("content", "message"),
    [("[1, 2]", "expected a mapping"), ("a: [", "not valid YAML")],
)
def test_malformed_file(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "n.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(config_path=config, environ={})


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(config_path=tmp_path / "nope.yaml", environ={})


def test_acl_rules_from_the_environment_are_json() -> None:
    rule = {"who": "device", "action": "publish", "topic": "shared/+/status"}
    environ = {"NANOIOT_ACL_RULES": json.dumps([rule])}
    settings = load_settings(None, environ)
    assert settings.acl_rules == [rule]
    with pytest.raises(ConfigError, match="NANOIOT_ACL_RULES is not valid JSON"):
        load_settings(None, {"NANOIOT_ACL_RULES": "[{who: device}"})


@pytest.mark.parametrize(
    ("value", "says"),
    [("-1", "greater than or equal to 0"), ("4294967296", "less than or equal to 4294967295")],
)
def test_persistent_session_expiry_fits_a_session_expiry_interval(value: str, says: str) -> None:
    """It is the Session Expiry Interval 3.1.1 sessions get: four bytes (5.0 §3.1.2.11.2)."""
    name = "NANOIOT_PERSISTENT_SESSION_EXPIRY"
    with pytest.raises(ConfigError, match=f"'persistent_session_expiry'.*{says}"):
        load_settings(config_path=SHIPPED, environ={name: value})
    longest = load_settings(config_path=SHIPPED, environ={name: "4294967295"})
    assert longest.persistent_session_expiry == 0xFFFF_FFFF
    assert load_settings(config_path=SHIPPED, environ={}).persistent_session_expiry == 0


@pytest.mark.parametrize(
    ("value", "says"),
    [("0", "greater than or equal to 1"), ("65536", "less than or equal to 65535")],
)
def test_max_filters_per_subscribe_is_bounded(value: str, says: str) -> None:
    """At least one filter a packet (§3.8.3: a SUBSCRIBE has one); a bound past 65,535 is
    none at all for the event loop (8 µs a filter: half a second a packet)."""
    name = "NANOIOT_MAX_FILTERS_PER_SUBSCRIBE"
    with pytest.raises(ConfigError, match=f"'max_filters_per_subscribe'.*{says}"):
        load_settings(config_path=SHIPPED, environ={name: value})
    assert (
        load_settings(config_path=SHIPPED, environ={name: "65535"}).max_filters_per_subscribe
        == 65535
    )
    assert load_settings(config_path=SHIPPED, environ={}).max_filters_per_subscribe == 100


@pytest.mark.parametrize("setting", ["max_subscription_bytes", "max_subscription_bytes_per_device"])
@pytest.mark.parametrize(
    ("value", "says"),
    [("-1", "greater than or equal to 0"), ("1099511627777", "less than or equal to 1099511")],
)
def test_the_subscription_byte_bounds_are_bounded(setting: str, value: str, says: str) -> None:
    """0 takes no filter at all; 1 TiB is more than any broker holds."""
    name = f"NANOIOT_{setting.upper()}"
    with pytest.raises(ConfigError, match=f"'{setting}'.*{says}"):
        load_settings(config_path=SHIPPED, environ={name: value})
    assert getattr(load_settings(config_path=SHIPPED, environ={name: "0"}), setting) == 0
    shipped = load_settings(config_path=SHIPPED, environ={})
    assert (shipped.max_subscription_bytes, shipped.max_subscription_bytes_per_device) == (
        512 * 1024,
        1024 * 1024,
    )


@pytest.mark.parametrize("name", ["proxy_protocol_trusted", "http_trusted_proxies"])
def test_both_address_lists_refuse_a_host_name(name: str, tmp_path: Path) -> None:
    """Each group of settings is a base of ``Settings``: a validator named as one in another
    group would hide it, and the setting would take anything."""
    env = {env_name(name): '["10.0.5.7", "haproxy.local"]'}
    with pytest.raises(ConfigError, match=f"{name}.*'haproxy.local' is not an IP address"):
        load_settings(environ=env, cwd=tmp_path)


def test_no_group_hides_another_groups_validator() -> None:
    """A name used by two groups' validators would keep only one of them in ``Settings``."""
    groups = [group for group in Settings.__bases__ if issubclass(group, BaseModel)]
    names = [name for group in groups for name in group.__pydantic_decorators__.field_validators]
    assert len(names) == len(set(names)), sorted(names)


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("max_queued_bytes_per_device", "-1", "greater than or equal to 0"),
        ("max_queued_bytes_per_device", "1099511627777", "less than or equal to 1099511"),
        ("max_queued_messages_per_device", "-1", "greater than or equal to 0"),
        ("max_queued_messages_per_device", "100000001", "less than or equal to 100000000"),
    ],
)
def test_the_device_queue_bounds_are_bounded(setting: str, value: str, says: str) -> None:
    """0 queues nothing for the device's sessions; past the top, more than a broker holds."""
    name = f"NANOIOT_{setting.upper()}"
    with pytest.raises(ConfigError, match=f"'{setting}'.*{says}"):
        load_settings(config_path=SHIPPED, environ={name: value})
    assert getattr(load_settings(config_path=SHIPPED, environ={name: "0"}), setting) == 0
    shipped = load_settings(config_path=SHIPPED, environ={})
    assert (shipped.max_queued_bytes_per_device, shipped.max_queued_messages_per_device) == (
        64 * 1024 * 1024,
        10_000,
    )


@pytest.mark.parametrize(
    ("environ", "source"),
    [
        ({"NANOIOT_MAX_PACKET_SIZE": str(256 * 1024 * 1024)}, f"from file {SHIPPED}"),
        ({"NANOIOT_MAX_UNADMITTED_BYTES": str(1024 * 1024 - 1)}, "from $NANOIOT_MAX_UNADMITTED"),
    ],
)
def test_the_unadmitted_bytes_leave_room_for_a_largest_connect(
    environ: dict[str, str], source: str
) -> None:
    """Below a few max_packet_size (4: one connection's CONNECT and the packet behind it, and
    as much for the others) a device's CONNECT with a large will could never be admitted: the
    broker would close it as the connection holding the most."""
    message = refused({"NANOIOT_MAX_PACKET_SIZE": str(256 * 1024), **environ})
    assert message.startswith(f"setting 'max_unadmitted_bytes' ({source}")
    assert "less than 4 times max_packet_size" in message
    just = {"NANOIOT_MAX_PACKET_SIZE": "1048576", "NANOIOT_MAX_UNADMITTED_BYTES": "4194304"}
    assert load_settings(config_path=SHIPPED, environ=just).max_unadmitted_bytes == 4 * 1024**2


def test_a_packet_size_past_the_default_unadmitted_bytes_is_refused_without_a_file(
    tmp_path: Path,
) -> None:
    """The default budget is checked too: raising max_packet_size alone must not make a
    broker whose large CONNECTs can never get in."""
    with pytest.raises(ConfigError, match=r"'max_unadmitted_bytes' \(not set\).*max_packet_size"):
        load_settings(environ={"NANOIOT_MAX_PACKET_SIZE": str(32 * 1024 * 1024)}, cwd=tmp_path)
    raised = {"NANOIOT_MAX_PACKET_SIZE": str(16 * 1024 * 1024)}
    assert load_settings(environ=raised, cwd=tmp_path).max_packet_size == 16 * 1024 * 1024
