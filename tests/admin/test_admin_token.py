"""A configured admin token must look random: long is not enough (``admin.token``)."""

import base64
import itertools
import math
import random
import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from admin import token_bits
from admin.token import MIN_BITS, TOKEN_FILE, admin_token, estimated_bits, weakness
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
        # keyboard walks: the steps between keys repeat, not the characters
        "qwertyuiopasdfgh",
        "qwertyuiopasdfghjklzxcvbnm",
        "1qaz2wsx3edc4rfv",
        "!QAZ@WSX#EDC$RFV",
        "zaq12wsxcde34rfv",
        "1q2w3e4r5t6y7u8i9o0p",
        "poiuytrewqlkjhgfdsa",
        "asdfghjkl;asdfghjkl;",
        "Qwerty123456789!",
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


# What 128 random bits look like from the generators the docs and the messages suggest.
_RANDOM_128: dict[str, Callable[[random.Random], str]] = {
    "openssl rand -hex 16": lambda rng: rng.randbytes(16).hex(),
    "openssl rand -base64 16": lambda rng: base64.b64encode(rng.randbytes(16)).decode(),
    "openssl rand -hex 32": lambda rng: rng.randbytes(32).hex(),
    "secrets.token_urlsafe(16)": (
        lambda rng: base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode()
    ),
}


@pytest.mark.parametrize(
    ("generator", "draws"),
    [
        ("openssl rand -hex 16", 200_000),  # the old estimate refused 16 of these
        ("openssl rand -base64 16", 50_000),
        ("openssl rand -hex 32", 20_000),
        ("secrets.token_urlsafe(16)", 50_000),
    ],
)
def test_random_tokens_of_128_bits_are_never_refused(generator: str, draws: int) -> None:
    """The estimate is a code length, so a 128-bit token falls under MIN_BITS with a
    probability below 2^-32 (``admin.token_bits``); a sample far past the old rate of
    refusal (1 in 12,500: 11 of the 200,000 hex ones here), each checked in microseconds."""
    make = _RANDOM_128[generator]
    rng = random.Random(20261207)
    tokens = [make(rng) for _ in range(draws)]
    assert [token for token in tokens if weakness(token) is not None] == []
    assert min(map(estimated_bits, tokens[:1000])) > MIN_BITS + 16


def _steps_in_sequence(data: bytes, first: float) -> float:
    """``admin.token_bits``'s step code, one step at a time."""
    bits, seen = first, dict[int, int]()
    for count, (a, b) in enumerate(itertools.pairwise(data)):
        step = b - a
        if step in seen:
            bits -= math.log2(seen[step] / (count + 1))
        else:
            bits -= math.log2(1 / (count + 1) / (511 - len(seen)))
        seen[step] = seen.get(step, 0) + 1
    return bits


def _kt(one: bool, ones: int, zeros: int) -> float:
    return -math.log2(((ones if one else zeros) + 0.5) / (ones + zeros + 1))


def _classes_in_sequence(token: str) -> float:
    """``admin.token_bits``'s classes code, one character at a time."""

    def kind(char: str) -> str:
        return "L" if char.islower() else "U" if char.isupper() else "D" if char.isdigit() else "O"

    sizes = {"L": 26, "U": 26, "D": 10, "O": 33}
    bits, changes, stays, counting, other = 2.0, 0, 0, 0, 0
    for at, char in enumerate(token):
        if at:
            changed = kind(char) != kind(token[at - 1])
            bits += _kt(changed, changes, stays) + (math.log2(3) if changed else 0)
            changes, stays = changes + changed, stays + (not changed)
        if at and kind(char) == kind(token[at - 1]) == "D":
            up = ord(char) == ord(token[at - 1]) + 1
            bits += _kt(up, counting, other) + (0 if up else math.log2(10))
            counting, other = counting + up, other + (not up)
        else:
            bits += math.log2(sizes[kind(char)])
    return bits


@pytest.mark.parametrize(
    "token",
    [
        "Password1234567!",
        "0123456789abcdef",
        "1qaz2wsx3edc4rfv",
        "99123 45678 01234 9",
        "aaaaaaaaaaaaaaaa",
        "f5b165224a58b791df6af1d8303e61cd",
        "6bqxmkojgpcgpkbakavaVQ==",
        "éé",
        "x",
    ],
)
def test_the_codes_counted_at_once_are_the_codes_step_by_step(token: str) -> None:
    """Computed from counts for speed, the codes are still the sequential ones the module
    describes, whose probabilities add up to at most one (what bounds the refusals)."""
    data = token.encode()
    steps = token_bits._steps(data)
    assert token_bits._steps_bits(steps, 8.0, math.inf) == pytest.approx(
        _steps_in_sequence(data, 8.0)
    )
    if token.isascii():
        keys = data.translate(token_bits._KEYS)
        key_steps = token_bits._steps(keys)
        assert token_bits._steps_bits(key_steps, 1.0, math.inf) == pytest.approx(
            _steps_in_sequence(keys, 1.0)
        )
        classes = data.translate(token_bits._CLASSES)
        assert token_bits._classes_bits(token, classes, 0, math.inf) == pytest.approx(
            _classes_in_sequence(token)
        )
    # What a cheaper bound says never hides a code that is less.
    assert estimated_bits(token, enough=MIN_BITS) >= min(estimated_bits(token), MIN_BITS)
