"""The Dockerfile, docker-compose.yml and the settings model agree: every variable they set is
a setting NanoIoT accepts (an unknown NANOIOT_* variable would stop the server), the values
validate, and ports and paths match across the three."""

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from nanoiot.cli.keygen import packaged_properties
from nanoiot.keygen.outputs import ServerPaths
from nanoiot.keygen.properties import load_properties
from nanoiot.settings import Settings, env_name, load_settings
from tests.deploy.files import (
    ENTRYPOINT,
    ENV_EXAMPLE,
    FILLED_ENV,
    compose_model,
    dockerfile_env,
    dockerfile_instructions,
    final_stage,
    healthcheck_command,
    only,
    read_env_file,
    write_env_file,
)

SETTING_NAMES = {env_name(field) for field in Settings.model_fields}
# Not settings: Python's and pip's own, and the entrypoint's bound on the database wait.
OTHER_NAMES = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "DATABASE_WAIT_SECONDS",
}
DATA = Path("/var/lib/nanoiot")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the container must bind, checked here


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("compose")
    env_file = write_env_file(folder / ".env", read_env_file(ENV_EXAMPLE) | FILLED_ENV)
    return compose_model(env_file)


@pytest.fixture(scope="module")
def image_env() -> dict[str, str]:
    return dockerfile_env(final_stage(dockerfile_instructions()))


@pytest.fixture(scope="module")
def container_env(image_env: dict[str, str], model: dict[str, Any]) -> dict[str, str]:
    """What the nanoiot container sees: the image's ENV, overridden by the compose file's."""
    environment: dict[str, str] = model["services"]["nanoiot"]["environment"]
    return image_env | environment


@pytest.fixture(scope="module")
def settings(container_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The settings the container's server loads (no conf/nanoiot.yaml in its working dir)."""
    empty = tmp_path_factory.mktemp("conf") / "nanoiot.yaml"
    empty.write_text("")
    return load_settings(empty, container_env)


def test_every_variable_set_for_nanoiot_is_a_setting(
    image_env: dict[str, str], model: dict[str, Any]
) -> None:
    for source, names in [
        ("Dockerfile", set(image_env)),
        ("compose nanoiot", set(model["services"]["nanoiot"]["environment"])),
        ("compose keygen", set(model["services"]["keygen"].get("environment", {}))),
    ]:
        unknown = names - SETTING_NAMES - OTHER_NAMES
        assert not unknown, f"{source} sets variables NanoIoT does not know: {unknown}"


def test_the_database_wait_variable_is_the_one_the_entrypoint_reads() -> None:
    assert "${DATABASE_WAIT_SECONDS:-60}" in ENTRYPOINT.read_text()


def test_postgres_gets_only_its_own_variables(model: dict[str, Any]) -> None:
    names = set(model["services"]["postgres"]["environment"])
    assert names == {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}


def test_container_settings_validate(settings: Settings) -> None:
    assert settings.data_dir == DATA
    # All interfaces inside the container: reachable through the published ports.
    assert settings.http_bind_address == ALL_INTERFACES
    assert settings.mqtt_ssl_bind_address == ALL_INTERFACES
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == FILLED_ENV["NANOIOT_ADMIN_TOKEN"]
    assert settings.effective_database_url.startswith("postgresql+asyncpg://")


def test_the_image_alone_validates_too(image_env: dict[str, str], tmp_path: Path) -> None:
    """`docker run` without compose: the image's own defaults load (SQLite in the volume)."""
    empty = tmp_path / "nanoiot.yaml"
    empty.write_text("")
    alone = load_settings(empty, image_env)
    assert alone.effective_database_url == f"sqlite+aiosqlite:///{DATA / 'nanoiot.db'}"


def test_database_url_matches_the_postgres_service(
    settings: Settings, model: dict[str, Any]
) -> None:
    url = make_url(settings.effective_database_url)
    postgres = model["services"]["postgres"]
    environment = postgres["environment"]
    assert url.host == "postgres"  # the service name, resolved on the project network
    assert url.port == 5432
    assert (url.username, url.password, url.database) == (
        environment["POSTGRES_USER"],
        environment["POSTGRES_PASSWORD"],
        environment["POSTGRES_DB"],
    )
    check = postgres["healthcheck"]["test"]
    assert f"--username={url.username}" in check
    assert f"--dbname={url.database}" in check


def test_ports_agree(settings: Settings, model: dict[str, Any], image_env: dict[str, str]) -> None:
    exposed = only(final_stage(dockerfile_instructions()), "EXPOSE").arguments.split()
    published = {port["target"] for port in model["services"]["nanoiot"]["ports"]}
    ports = {settings.mqtt_ssl_bind_port, settings.http_port}
    assert {int(port) for port in exposed} == published == ports == {8883, 8080}
    # The image says what the model's defaults say: nothing differs by accident.
    defaults = Settings()
    assert int(image_env["MQTT_SSL_BIND_PORT"]) == defaults.mqtt_ssl_bind_port
    assert int(image_env["NANOIOT_HTTP_PORT"]) == defaults.http_port


def test_healthcheck_asks_the_admin_port_for_healthz(
    settings: Settings, image_env: dict[str, str]
) -> None:
    command = healthcheck_command(dockerfile_instructions())
    assert command[:2] == ["python", "-c"]
    code = command[2]
    # The port is read from NANOIOT_HTTP_PORT at check time, defaulting to the image's.
    assert f"os.environ.get('NANOIOT_HTTP_PORT', '{image_env['NANOIOT_HTTP_PORT']}')" in code
    assert "/healthz" in code
    assert str(settings.http_port) == image_env["NANOIOT_HTTP_PORT"]


def test_the_data_volume_is_the_data_dir(settings: Settings, model: dict[str, Any]) -> None:
    stage = final_stage(dockerfile_instructions())
    assert json.loads(only(stage, "VOLUME").arguments) == [str(DATA)]
    assert only(stage, "WORKDIR").arguments == str(DATA)
    for service in ("nanoiot", "keygen"):
        targets = [volume["target"] for volume in model["services"][service]["volumes"]]
        assert targets == [str(settings.data_dir)], service


def test_server_credentials_are_where_keygen_writes_them(
    settings: Settings, model: dict[str, Any]
) -> None:
    keygen = model["services"]["keygen"]
    command = keygen["command"]
    folder = Path(command[command.index("--dir") + 1])
    assert folder.is_relative_to(settings.data_dir)
    # The keygen service reads the packaged keygen.properties (its working dir has none).
    written = ServerPaths.of(load_properties(packaged_properties()), folder)
    assert settings.mqtt_ssl_credentials_type == "PEM"
    assert (settings.mqtt_ssl_pem_cert, settings.mqtt_ssl_pem_key) == (
        written.cert_pem,
        written.key_pem,
    )
