"""Where NanoIoT keeps its data, and how long it waits for the database."""

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from nanoiot.dburl import normalise_database_url
from nanoiot.locations import user_data_dir
from nanoiot.settings.common import SettingsGroup


class StorageSettings(SettingsGroup):
    # --- NanoIoT's own (environment: NANOIOT_<NAME>) ---
    # Without a settings file or NANOIOT_DATA_DIR: a per-user folder (nanoiot.locations).
    data_dir: Path = Field(default_factory=lambda: user_data_dir(os.environ))
    database_url: str | None = None
    # Seconds to wait for the database: to open a connection (PostgreSQL), and for one
    # statement (PostgreSQL: cancelled after it; SQLite: the busy timeout, the wait for
    # another process's write lock). Past either the call fails: "not answering".
    database_connect_timeout: float = Field(2.0, gt=0, le=300)
    database_statement_timeout: float = Field(5.0, gt=0, le=3600)
    # Seconds a CONNECT waits for the store to look its credentials up; then CONNACK 3
    # (server unavailable) and the client retries. A password's argon2 verification after
    # the lookup is CPU work here, not the store's: tls_handshake_timeout (the whole
    # CONNECT phase) bounds it.
    auth_timeout: float = Field(2.0, gt=0, le=300)
    # Key of the access-token hashes (64 hex characters); unset: generated into the data
    # directory. Nodes sharing a database but not a data directory must share it.
    token_hash_key: SecretStr | None = None

    @field_validator("token_hash_key", mode="before")
    @classmethod
    def _unset_when_blank(cls, value: object) -> object:
        """Blank is unset (Compose passes an empty ``${VAR:-}``): the data directory's key."""
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str | None) -> str | None:
        """``postgresql://``, ``postgres://`` and ``sqlite:///`` get the async driver."""
        return normalise_database_url(url) if url else None

    @property
    def effective_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'nanoiot.db').resolve()}"
