"""A member joined to the cluster for the length of a ``with`` block, in tests that need
more than the one ``link`` fixture (``conftest``) gives: two members claiming, adopting."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broker.cluster.link import ClusterLink
from nanoiot.settings import Settings


@asynccontextmanager
async def joined(settings: Settings) -> AsyncIterator[ClusterLink]:
    """The member ``settings`` names, joined through NATS; closed at the block's end."""
    link = await ClusterLink.connect(settings)
    try:
        yield link
    finally:
        await link.close()
