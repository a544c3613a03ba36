"""CONNACK return codes (MQTT 3.1.1 §3.2.2.3) and the MQTT 5 reason code each stands for
(5.0 §3.2.2.2): what an auth decision tells the client, and what the protocol core answers a
CONNECT it refuses itself. Standard library only, for both."""

from enum import IntEnum
from typing import Final


class ConnackCode(IntEnum):
    """CONNACK return codes of MQTT 3.1 and 3.1.1 (§3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


# The MQTT 5 CONNACK reason code each 3.1.1 return code stands for (MQTT 5.0 §3.2.2.2).
MQTT5_REASON_CODE: Final = {
    ConnackCode.ACCEPTED: 0x00,  # success
    ConnackCode.UNACCEPTABLE_PROTOCOL: 0x84,  # unsupported protocol version
    ConnackCode.IDENTIFIER_REJECTED: 0x85,  # client identifier not valid
    ConnackCode.SERVER_UNAVAILABLE: 0x88,  # server unavailable
    ConnackCode.BAD_USERNAME_OR_PASSWORD: 0x86,  # bad user name or password
    ConnackCode.NOT_AUTHORIZED: 0x87,  # not authorized
}
