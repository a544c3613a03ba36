"""``RunningBroker.start`` that cannot finish leaves nothing open behind it."""

import gc
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.server import RunningBroker
from nanoiot.errors import ConfigError
from nanoiot.settings import Settings


async def test_a_bad_topic_rule_fails_before_anything_is_opened(
    tls_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    settings = tls_settings(
        data_dir=tmp_path,
        mqtt_ssl_bind_address="127.0.0.1",
        mqtt_ssl_bind_port=port,
        acl_rules=[{"who": "robot", "action": "publish", "topic": "x"}],
    )
    with pytest.raises(ConfigError, match=r"acl_rules\[0\]"):
        await RunningBroker.start(settings)
    # A store opened and dropped would warn here (an error under filterwarnings).
    gc.collect()
    assert not (tmp_path / "nanoiot.db").exists()
    with socket.create_server(("127.0.0.1", port)):
        pass  # the MQTT port was never kept
