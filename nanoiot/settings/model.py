"""The one typed settings model: every group of settings (``nanoiot.settings.*``) in one
class, so that a setting is read, checked and documented the same way whatever its concern."""

from typing import Literal

from pydantic import ConfigDict

from nanoiot.settings.admin_http import AdminHttpSettings
from nanoiot.settings.cluster import ClusterSettings
from nanoiot.settings.mqtt import MqttSettings
from nanoiot.settings.storage import StorageSettings
from nanoiot.settings.tls import TlsSettings


# pydantic takes the bases' fields from the last base to the first: listed so, the groups come
# in conf/nanoiot.yaml's order (TLS first, cluster last), and so do the errors of a bad file.
class Settings(ClusterSettings, AdminHttpSettings, StorageSettings, MqttSettings, TlsSettings):
    """Every setting NanoIoT reads. ``conf/nanoiot.yaml`` documents each one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
