"""The admin HTTP server's bounds on what a client can make it hold, as the server reads them.

Each is a setting (``nanoiot.settings.admin_http``, ``http_<name>``); the defaults are the
settings' own, so a test or a tool that builds the application without settings gets the
bounds a deployment gets. ``AdminContext`` carries them to the routes, ``HttpServer`` to its
connections.
"""

from dataclasses import dataclass, fields
from typing import Any, Self

from nanoiot.settings import Settings


def _default(name: str) -> Any:
    return Settings.model_fields[f"http_{name}"].default


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = _default("max_body_bytes")
    max_crl_bytes: int = _default("max_crl_bytes")
    max_form_field_bytes: int = _default("max_form_field_bytes")
    max_head_bytes: int = _default("max_head_bytes")
    max_connections: int = _default("max_connections")
    max_connections_per_address: int = _default("max_connections_per_address")
    max_failure_addresses: int = _default("max_failure_addresses")
    max_web_sessions: int = _default("max_web_sessions")
    import_max_row_bytes: int = _default("import_max_row_bytes")
    import_max_unsent_bytes: int = _default("import_max_unsent_bytes")

    @classmethod
    def of(cls, settings: Settings) -> Self:
        return cls(**{each.name: getattr(settings, f"http_{each.name}") for each in fields(cls)})
