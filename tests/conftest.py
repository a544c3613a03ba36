"""Fixtures shared by every test package."""

from collections.abc import Iterator

import pytest

from tests.storage.pg import fresh_database


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty, un-migrated PostgreSQL database of its own, dropped afterwards."""
    with fresh_database() as url:
        yield url
