"""amqtt's session state machine without a ``transitions.Machine`` per session.

``amqtt.session.Session._init_states`` builds a ``transitions`` state machine for every new
session: about a tenth of the broker's CPU per connect, and a few kilobytes per connection.
``DeviceSession`` keeps the same three states and two triggers as a plain attribute:

- ``connect``: new or disconnected -> connected (else ``MachineError``, as ``transitions``);
- ``disconnect``: new, connected or disconnected -> disconnected;

with the same entry callbacks (connect and disconnect times). ``tests/broker`` runs both
machines through every trigger sequence and compares them. Its delivery queue is a
``broker.message_loop.WakingQueue``.
"""

from amqtt.session import Session
from transitions.core import MachineError

from broker.message_loop import WakingQueue

_CONNECT_FROM = frozenset({"new", "disconnected"})


class SessionState:
    """What amqtt and our broker use of ``session.transitions``."""

    __slots__ = ("_session", "state")

    def __init__(self, session: Session) -> None:
        self._session = session
        self.state = "new"

    def connect(self) -> bool:
        if self.state not in _CONNECT_FROM:
            raise MachineError(f'"Can\'t trigger event connect from state {self.state}!"')
        self.state = "connected"
        self._session._on_enter_connected()
        return True

    def disconnect(self) -> bool:
        self.state = "disconnected"
        self._session._on_enter_disconnected()
        return True

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"


class DeviceSession(Session):  # type: ignore[misc]  # amqtt is untyped
    def __init__(self) -> None:
        super().__init__()
        # broker.message_loop waits on it without a task.
        self.delivered_message_queue = WakingQueue()

    def _init_states(self) -> None:
        self.transitions = SessionState(self)
