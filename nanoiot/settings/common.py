"""What the groups of settings (``nanoiot.settings``) share: their configuration, and checks
more than one group needs."""

import ipaddress

from pydantic import BaseModel, ConfigDict


class SettingsGroup(BaseModel):
    """One concern's settings; ``nanoiot.settings.Settings`` is all of them in one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def addresses_or_networks(entries: list[str]) -> list[str]:
    """``entries`` if each is an IP address or a CIDR network; ValueError naming the first
    that is not."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(f"'{entry}' is not an IP address or CIDR network") from None
    return entries
