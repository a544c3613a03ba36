"""The credential store opened as the settings say: its URL, data directory and timeouts."""

from nanoiot.settings import Settings
from storage.engine import Timeouts
from storage.sql import SqlCredentialStore


def store_timeouts(settings: Settings) -> Timeouts:
    return Timeouts(settings.database_connect_timeout, settings.database_statement_timeout)


async def open_store(settings: Settings) -> SqlCredentialStore:
    return await SqlCredentialStore.open(
        settings.effective_database_url, data_dir=settings.data_dir,
        timeouts=store_timeouts(settings),
    )  # fmt: skip
