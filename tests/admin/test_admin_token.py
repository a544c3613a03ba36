"""A configured admin token must look random: long is not enough (``admin.token``)."""

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from admin.token import MIN_BITS, TOKEN_FILE, admin_token, estimated_bits
from nanoiot.errors import ConfigError
from nanoiot.settings import Settings


def configured(tmp_path: Path, token: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token=SecretStr(token))


@pytest.mark.parametrize(
    "token",
    [
        "aaaaaaaaaaaaaaaa",  # 16 characters: the length check alone let it in
        "0123456789abcdef",
        "abababababababababababababababab",
        "Password1234567!",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    ],
)
def test_a_weak_configured_token_is_refused_in_one_line_saying_how(
    tmp_path: Path, token: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        admin_token(configured(tmp_path, token))
    message = str(refused.value)
    assert message.startswith("admin_token (NANOIOT_ADMIN_TOKEN) is guessable")
    assert message.endswith("openssl rand -hex 32")
    assert "\n" not in message
    assert token not in message  # a secret, even a weak one, is never echoed


def test_a_short_token_is_still_refused_for_its_length(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is 5 characters; use at least 16"):
        admin_token(configured(tmp_path, "short"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_rand_hex_32_is_accepted(tmp_path: Path) -> None:
    made = subprocess.run(
        ["openssl", "rand", "-hex", "32"], capture_output=True, text=True, check=True
    )
    token = made.stdout.strip()
    assert admin_token(configured(tmp_path, token)) == (token, False)


def test_generated_tokens_are_accepted_and_far_above_the_bound(tmp_path: Path) -> None:
    token, created = admin_token(Settings(data_dir=tmp_path / "data"))
    assert created
    assert admin_token(configured(tmp_path, token)) == (token, False)
    # The generator's worst case over many draws, with a wide margin: never a false refusal.
    assert min(estimated_bits(secrets.token_urlsafe(32)) for _ in range(2000)) > 2 * MIN_BITS
    assert min(estimated_bits(secrets.token_hex(32)) for _ in range(2000)) > 2 * MIN_BITS


def test_a_weak_token_written_into_the_file_by_hand_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    (settings.data_dir / TOKEN_FILE).write_text("aaaaaaaaaaaaaaaaaaaaaaaa\n")
    with pytest.raises(ConfigError, match="delete it to make a new one"):
        admin_token(settings)
