"""The one typed settings model (``Settings``), and where its values come from
(``load_settings``).

The model's fields are grouped by concern, a module each: ``tls`` (the MQTT listener),
``mqtt`` (sessions, topics and what one client may make the broker hold), ``storage``,
``admin_http`` (the admin HTTP server), ``cluster``; ``model`` joins them into one class, and
``loading`` reads the file and the environment. Import from here: the grouping is not part
of the interface.
"""

from nanoiot.settings.loading import CONFIG_ENV, DEFAULT_CONFIG_PATH, env_name, load_settings
from nanoiot.settings.model import Settings
from nanoiot.settings.tls import CredentialsType

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "CredentialsType",
    "Settings",
    "env_name",
    "load_settings",
]
