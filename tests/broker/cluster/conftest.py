"""A cluster of its own on the machine's NATS for each test (``tests.natsserver``)."""

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.cluster.link import ClusterLink
from nanoiot.settings import Settings
from tests.natsserver import NATS_URL, shared_cluster


@pytest.fixture
def cluster_name() -> Iterator[str]:
    with shared_cluster() as name:
        yield name


@pytest.fixture
def cluster_settings(cluster_name: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings joining the shared NATS under this test's cluster name; keywords override."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "nats_url": NATS_URL,
            "cluster_name": cluster_name,
            "node_name": "node-a",
        }
        return Settings(**(values | overrides))

    return make


@pytest.fixture
async def link(cluster_settings: Callable[..., Settings]) -> AsyncIterator[ClusterLink]:
    """This test's member (``node-a``) joined, closed after the test."""
    link = await ClusterLink.connect(cluster_settings())
    try:
        yield link
    finally:
        await link.close()
