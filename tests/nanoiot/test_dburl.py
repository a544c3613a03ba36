import pytest

from nanoiot.dburl import normalise_database_url
from nanoiot.errors import ConfigError
from nanoiot.settings import load_settings


@pytest.mark.parametrize(
    ("written", "used"),
    [
        ("postgresql://u:p@db:5432/nanoiot", "postgresql+asyncpg://u:p@db:5432/nanoiot"),
        ("postgres://u:p@db/nanoiot", "postgresql+asyncpg://u:p@db/nanoiot"),
        ("POSTGRESQL://db/nanoiot", "postgresql+asyncpg://db/nanoiot"),
        ("postgresql+asyncpg://db/nanoiot", "postgresql+asyncpg://db/nanoiot"),
        ("sqlite:////srv/nanoiot.db", "sqlite+aiosqlite:////srv/nanoiot.db"),
        ("sqlite:///nanoiot.db", "sqlite+aiosqlite:///nanoiot.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_urls_without_a_driver_get_the_async_one(written: str, used: str) -> None:
    assert normalise_database_url(written) == used


@pytest.mark.parametrize(
    ("written", "says"),
    [
        (
            "postgresql+psycopg2://u:secret@db/n",
            "write postgresql+asyncpg:// or just postgresql://",
        ),
        ("sqlite+pysqlite:///x.db", "write sqlite+aiosqlite:// or just sqlite://"),
        ("mysql://u:secret@db/n", "'mysql://' is not supported"),
        ("db.example.com/nanoiot", "not a database URL"),
    ],
)
def test_unusable_urls_say_what_to_write_without_the_password(written: str, says: str) -> None:
    with pytest.raises(ValueError, match="write") as refused:
        normalise_database_url(written)
    assert says in str(refused.value)
    assert "secret" not in str(refused.value)


def test_settings_store_the_url_with_its_driver_and_errors_are_one_line() -> None:
    env = {"NANOIOT_DATABASE_URL": "postgres://u:p@db/nanoiot"}
    assert load_settings(environ=env).database_url == "postgresql+asyncpg://u:p@db/nanoiot"
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={"NANOIOT_DATABASE_URL": "mysql://u:secret@db/n"})
    message = str(refused.value)
    assert message.startswith("setting 'database_url'")
    assert "Value error" not in message
    assert "\n" not in message
    assert "secret" not in message
