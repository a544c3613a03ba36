"""A per-device bound left at its default follows a raised per-session bound: a session
allowed a long backlog (``max_queued_messages`` 100,000) was cut to the device default's
10,000, and the messages past it, acknowledged to their publishers, were dropped."""

from pathlib import Path

from broker.server import broker_config
from nanoiot.settings import load_settings


def _config(tmp_path: Path, **environ: str) -> tuple[int, int, int]:
    empty = tmp_path / "nanoiot.yaml"
    empty.write_text("")
    settings = load_settings(empty, {"NANOIOT_DATA_DIR": str(tmp_path / "data"), **environ})
    config = broker_config(settings)
    limits = config.limits
    return (
        limits.max_queued_messages_per_device,
        limits.max_queued_bytes_per_device,
        config.max_subscription_bytes_per_device,
    )


def test_raised_session_bounds_raise_the_device_defaults(tmp_path: Path) -> None:
    raised = _config(
        tmp_path,
        NANOIOT_MAX_QUEUED_MESSAGES="100000",
        NANOIOT_MAX_QUEUED_BYTES="100000000",
        NANOIOT_MAX_SUBSCRIPTION_BYTES="4194304",
    )
    assert raised == (100_000, 100_000_000, 4_194_304)


def test_the_defaults_and_explicit_device_bounds_are_kept(tmp_path: Path) -> None:
    assert _config(tmp_path) == (10_000, 64 * 1024 * 1024, 1024 * 1024)
    explicit = _config(
        tmp_path,
        NANOIOT_MAX_QUEUED_MESSAGES="100000",
        NANOIOT_MAX_QUEUED_MESSAGES_PER_DEVICE="500",
        NANOIOT_MAX_QUEUED_BYTES_PER_DEVICE="4096",
        NANOIOT_MAX_SUBSCRIPTION_BYTES_PER_DEVICE="8192",
    )
    assert explicit == (500, 4096, 8192)
