"""Where the settings' values come from, and the errors that name a bad one.

Sources, later ones winning: the model's defaults, the YAML file (the nearest
``conf/nanoiot.yaml`` at or above the working directory, or the file named by ``--config`` /
``NANOIOT_CONFIG``; relative paths in it are relative to its folder: ``nanoiot.locations``),
then environment variables. TLS settings keep the reference system's environment names
(``MQTT_SSL_*``); ours are ``NANOIOT_<KEY>``. An unknown key in the file, or an unknown
``NANOIOT_*`` or ``MQTT_SSL_*`` variable, is an error naming the key and where it came from,
with the closest known name: a misspelt setting must not be silently ignored. So is a bad
value, named as it was given: the environment variable, or the file and its key.
"""

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import ValidationError as PydanticValidationError

from nanoiot.errors import ConfigError
from nanoiot.locations import SETTINGS_FILE, find_settings_file, relative_to_file, user_data_dir
from nanoiot.settings.model import Settings

DEFAULT_CONFIG_PATH = SETTINGS_FILE
CONFIG_ENV = "NANOIOT_CONFIG"
_OUR_PREFIX = "NANOIOT_"
_REFERENCE_PREFIX = "mqtt_ssl_"
# The reference system's switch for its TLS listener: ours is always TLS, so it may stay set
# (an environment carried over) as long as it does not ask for a plain listener.
_ALWAYS_ON = "MQTT_SSL_ENABLED"


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    if field.startswith(_REFERENCE_PREFIX):
        return field.upper()
    return _OUR_PREFIX + field.upper()


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build the settings from defaults, the YAML file and the environment.

    ``config_path`` wins over ``NANOIOT_CONFIG``; without either, the nearest
    ``conf/nanoiot.yaml`` at or above ``cwd`` (default: the working directory) is read. A path
    given explicitly must exist.
    """
    env = os.environ if environ is None else environ
    explicit = config_path or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    path = explicit or find_settings_file(cwd or Path.cwd())
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # field -> where its value came from, for the errors
    if path is not None:
        from_file = relative_to_file(_read_yaml(path), path)
        values.update(from_file)
        sources.update(dict.fromkeys(from_file, f"from file {path}"))
    from_env, names = _read_env(env)
    values.update(from_env)
    sources.update({field: f"from ${name}" for field, name in names.items()})
    values.setdefault("data_dir", user_data_dir(env))
    try:
        return Settings(**values)
    except PydanticValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(loaded).__name__}")
    known = Settings.model_fields
    for key in loaded:
        if key not in known:
            raise ConfigError(f"{path}: unknown setting '{key}'{_suggest(str(key))}")
    return {key: value for key, value in loaded.items() if value is not None}


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """One line naming where the file stops being YAML, never the text there: PyYAML's own
    message quotes the offending line, which may be a password or a database URL."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    if mark is None:
        return f"{path}: not valid YAML: {problem}"
    text = f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None:  # e.g. the line where an unclosed quote opened
        text += f" ({context} at line {start.line + 1}, column {start.column + 1})"
    return text


def _env_value(field: str, name: str, value: str) -> Any:
    """Lists come from the environment as JSON; everything else as text pydantic converts."""
    # typing.get_origin, not identity: each ``list[...]`` expression is a new object.
    if get_origin(Settings.model_fields[field].annotation) is not list:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment: {name} is not valid JSON: {exc.msg}") from None


def _read_env(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the environment sets, and for each the variable's name as given."""
    by_env = {env_name(field): field for field in Settings.model_fields}
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, value in env.items():
        upper = name.upper()
        if upper in by_env:
            values[by_env[upper]] = _env_value(by_env[upper], name, value)
            names[by_env[upper]] = name
        elif upper == _ALWAYS_ON:
            if value.strip().lower() != "true":
                raise ConfigError(
                    f"environment: {name} is not true: the MQTT listener is always TLS "
                    f"(unset {name}, or set it to true)"
                )
        elif upper.startswith((_OUR_PREFIX, _REFERENCE_PREFIX.upper())) and upper != CONFIG_ENV:
            raise ConfigError(f"environment: unknown setting '{name}'{_suggest_env(upper)}")
    return values, names


def _suggest(key: str) -> str:
    """The known key closest to a file's unknown ``key``."""
    close = difflib.get_close_matches(key.lower(), list(Settings.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _suggest_env(name: str) -> str:
    """The variable closest to an unknown one: compared without our prefix (which every one
    shares), so ``NANOIOT_MQTT_SSL_BIND_PORT`` finds ``MQTT_SSL_BIND_PORT``."""
    by_bare = {field: env_name(field) for field in Settings.model_fields}
    by_bare[CONFIG_ENV.removeprefix(_OUR_PREFIX).lower()] = CONFIG_ENV
    bare = name.lower().removeprefix(_OUR_PREFIX.lower())
    close = difflib.get_close_matches(bare, list(by_bare), n=1)
    return f" (did you mean '{by_bare[close[0]]}'?)" if close else ""


def _describe(exc: PydanticValidationError, sources: Mapping[str, str]) -> str:
    """One line: the setting, where its bad value came from (``$NAME`` or the file), why.
    A setting that neither set is judged by another's value (a password without a user)."""
    first = exc.errors()[0]
    # Positions inside a list stay (acl_rules.0); the branch names pydantic adds for a union
    # (workers: a number or "auto") go.
    loc = [first["loc"][0], *(part for part in first["loc"][1:] if isinstance(part, int))]
    key = ".".join(str(part) for part in loc)
    source = sources.get(str(loc[0]), "not set")
    message = first["msg"].removeprefix("Value error, ")  # our validators' own words
    return f"setting '{key}' ({source}): {message}"
