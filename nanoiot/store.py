"""The credential store opened as the settings say: its URL, data directory, timeouts, the
smallest device keys it registers and the key of its access-token hashes."""

from auth.keys import KeyPolicy
from nanoiot.settings import Settings
from storage.engine import Timeouts
from storage.sql import SqlCredentialStore
from storage.token_key import configured_token_key


def store_timeouts(settings: Settings) -> Timeouts:
    return Timeouts(settings.database_connect_timeout, settings.database_statement_timeout)


async def open_store(settings: Settings) -> SqlCredentialStore:
    return await SqlCredentialStore.open(
        settings.effective_database_url, data_dir=settings.data_dir,
        timeouts=store_timeouts(settings),
        keys=KeyPolicy(settings.min_rsa_key_bits, settings.min_ec_key_bits),
        token_hash_key=configured_token_key(settings),
    )  # fmt: skip
