"""Whether what a node may have to send fits in one NATS message, checked once it has joined.

NATS refuses a message past its servers' ``max_payload`` (1 MiB by default), and a message a
node routes carries a whole MQTT packet (up to ``max_packet_size``) and the names of the
shared subscriptions of the node it goes to that it matches (up to
``max_shared_subscription_bytes``, ``broker.cluster.frames.groups_room``), in one frame
(``FRAMING`` bytes). A node whose settings let either pass would, under load, drop messages
the others never see: it refuses to start instead, saying which settings to change. Pure: the
caller has the ``max_payload`` the NATS server announced.
"""

from broker.cluster.frames import FRAMING, groups_room
from nanoiot.settings import Settings

__all__ = ["payload_fit_problem"]


def payload_fit_problem(settings: Settings, max_payload: int, url: str) -> str | None:
    """Why ``settings`` do not fit the ``max_payload`` of NATS at ``url`` (redacted), or None."""
    room = max_payload - FRAMING
    if settings.max_packet_size > room:
        return (
            f"max_packet_size {settings.max_packet_size} does not fit in one NATS message "
            f"(NATS {url} has max_payload {max_payload}, of which {FRAMING} bytes "
            "frame it): lower max_packet_size, or raise max_payload on the NATS servers"
        )
    # A message routed here names each of this member's groups it matches, in the same NATS
    # message as its content (``broker.cluster.frames``).
    named = groups_room(settings.max_shared_subscription_bytes)
    if settings.max_packet_size + named > room:
        return (
            f"max_packet_size {settings.max_packet_size} and max_shared_subscription_bytes "
            f"{settings.max_shared_subscription_bytes} do not fit in one NATS message "
            f"(NATS {url} has max_payload {max_payload}, of which {FRAMING} bytes "
            f"frame it; the groups' names take up to {named} bytes): lower either, or "
            "raise max_payload on the NATS servers"
        )
    return None
