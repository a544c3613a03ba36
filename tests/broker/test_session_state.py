"""``DeviceSession``'s light state machine behaves as amqtt's ``transitions`` one."""

import itertools

import pytest
from amqtt.session import Session
from transitions.core import MachineError

from broker.session_state import DeviceSession


def _run(session: Session, triggers: tuple[str, ...]) -> list[object]:
    seen: list[object] = []
    for trigger in triggers:
        try:
            getattr(session.transitions, trigger)()
        except MachineError:
            seen.append("refused")
        seen.append(
            (
                session.transitions.state,
                session.transitions.is_connected(),
                session.last_connect_time is not None,
                session.last_disconnect_time is not None,
            )
        )
    return seen


@pytest.mark.parametrize("triggers", list(itertools.product(["connect", "disconnect"], repeat=4)))
def test_every_trigger_sequence_ends_as_with_amqtts_machine(triggers: tuple[str, ...]) -> None:
    assert _run(DeviceSession(), triggers) == _run(Session(), triggers)


def test_it_is_still_an_amqtt_session() -> None:
    session = DeviceSession()
    assert isinstance(session, Session)
    assert session.transitions.state == "new"
    assert session.attributes == {}
    assert session.next_packet_id == 1
