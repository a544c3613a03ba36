"""docker-compose.yml as the real Compose v2 binary reads it: valid with a filled-in .env,
refused without its secrets or when broken, and shaped as the deployment guide says."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.files import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    FILLED_ENV,
    REPO,
    compose_model,
    read_env_file,
    run_compose,
    write_env_file,
)

SECRETS = ("NANOIOT_ADMIN_TOKEN", "POSTGRES_PASSWORD")


@pytest.fixture
def filled_env(tmp_path: Path) -> Path:
    """.env.example with its blanks filled in, as the guide's first step leaves it."""
    values = read_env_file(ENV_EXAMPLE) | FILLED_ENV
    return write_env_file(tmp_path / ".env", values)


@pytest.fixture
def model(filled_env: Path) -> dict[str, Any]:
    return compose_model(filled_env)


def test_config_is_valid_with_a_filled_in_env_file(filled_env: Path) -> None:
    result = run_compose(filled_env, "--profile", "tools", "config", "-q")
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("secret", SECRETS)
def test_config_refuses_an_empty_secret_and_names_it(tmp_path: Path, secret: str) -> None:
    values = read_env_file(ENV_EXAMPLE) | FILLED_ENV | {secret: ""}
    env_file = write_env_file(tmp_path / ".env", values)
    result = run_compose(env_file, "config", "-q")
    assert result.returncode != 0
    assert f"set {secret} in .env" in result.stderr


def test_the_example_env_file_as_committed_is_refused(tmp_path: Path) -> None:
    """The blanks must be filled in: nobody runs on a token or password from the repository."""
    result = run_compose(ENV_EXAMPLE, "config", "-q")
    assert result.returncode != 0
    assert "in .env" in result.stderr


BROKEN = {
    "bad-condition": ("condition: service_healthy", "condition: service_heathy"),
    "unknown-dependency": (
        "      postgres:\n        condition",
        "      postgress:\n        condition",
    ),
    "misspelt-key": ('    healthcheck:\n      test: ["CMD"', '    helthcheck:\n      test: ["CMD"'),
    "volume-not-a-mapping": ("  nanoiot-data:\n", "  nanoiot-data:\n  - list-not-mapping\n"),
    "undeclared-volume": (
        "      - nanoiot-data:/var/lib/nanoiot\n    ports",
        "      - nanoiot-dta:/var/lib/nanoiot\n    ports",
    ),
}


@pytest.mark.parametrize(("broken", "replace"), list(BROKEN.values()), ids=list(BROKEN))
def test_config_check_fails_on_a_broken_compose_file(
    tmp_path: Path, filled_env: Path, broken: str, replace: str
) -> None:
    """The CI check can fail: each of these mistakes makes Compose exit non-zero."""
    text = COMPOSE_FILE.read_text()
    assert text.count(broken) == 1, f"fixture text not found once: {broken!r}"
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace(broken, replace))
    result = run_compose(filled_env, "config", "-q", compose_file=copy)
    assert result.returncode != 0, result.stdout
    assert result.stderr.strip()


def test_nanoiot_starts_after_postgres_is_healthy(model: dict[str, Any]) -> None:
    services = model["services"]
    assert services["nanoiot"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    test = services["postgres"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    # Over TCP: the image's init-time server listens on the Unix socket only.
    assert "--host=127.0.0.1" in test


def test_data_lives_in_named_volumes(model: dict[str, Any]) -> None:
    declared = set(model["volumes"])
    assert declared == {"nanoiot-data", "postgres-data"}
    for name in ("nanoiot", "postgres", "keygen"):
        for volume in model["services"][name]["volumes"]:
            assert volume["type"] == "volume", f"{name}: {volume}"
            assert volume["source"] in declared


def test_ports_mqtt_public_and_admin_on_loopback(model: dict[str, Any]) -> None:
    published = {
        (port["target"], port.get("host_ip", "")): port["published"]
        for port in model["services"]["nanoiot"]["ports"]
    }
    assert published == {(8883, ""): "8883", (8080, "127.0.0.1"): "8080"}
    assert "ports" not in model["services"]["postgres"]


def test_one_locally_built_image_serves_and_makes_keys(model: dict[str, Any]) -> None:
    services = model["services"]
    for name in ("nanoiot", "keygen"):
        assert services[name]["image"] == "localhost/nanoiot:latest", name
        assert services[name]["build"]["dockerfile"] == "Dockerfile", name


def test_keygen_is_a_one_shot_tool_outside_the_default_start(filled_env: Path) -> None:
    default = compose_model(filled_env, profiles=())
    assert set(default["services"]) == {"nanoiot", "postgres"}
    keygen = compose_model(filled_env)["services"]["keygen"]
    assert keygen["profiles"] == ["tools"]
    assert keygen["entrypoint"] == ["server.keygen.sh"]
    assert keygen["hostname"] == FILLED_ENV["BROKER_HOSTNAME"]
    assert keygen["network_mode"] == "none"
    assert keygen["healthcheck"]["disable"] is True


def test_admin_token_and_database_password_come_from_the_env_file(
    model: dict[str, Any],
) -> None:
    environment = model["services"]["nanoiot"]["environment"]
    assert environment["NANOIOT_ADMIN_TOKEN"] == FILLED_ENV["NANOIOT_ADMIN_TOKEN"]
    assert f":{FILLED_ENV['POSTGRES_PASSWORD']}@" in environment["NANOIOT_DATABASE_URL"]
    postgres = model["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == FILLED_ENV["POSTGRES_PASSWORD"]


def test_env_example_lists_exactly_the_variables_the_compose_file_uses() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    assert set(read_env_file(ENV_EXAMPLE)) == used


def test_the_secrets_in_the_example_are_blank() -> None:
    example = read_env_file(ENV_EXAMPLE)
    assert {secret: example[secret] for secret in SECRETS} == dict.fromkeys(SECRETS, "")


def test_the_env_file_is_git_ignored() -> None:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git work tree")
    ignored = subprocess.run(
        [git, "check-ignore", "--quiet", ".env"], cwd=REPO, check=False, timeout=30
    )
    assert ignored.returncode == 0, ".env must be listed in .gitignore: it holds secrets"
    example = subprocess.run(
        [git, "check-ignore", "--quiet", ".env.example"], cwd=REPO, check=False, timeout=30
    )
    assert example.returncode == 1, ".env.example is committed"
