"""What the journal makes of a completed QoS 2 message that has a cluster-wide id
(``Completed``): its row's deletion and the id kept with its session, in one transaction's
writes (pure; the rest of ``writes_for`` is in test_journal.py)."""

from uuid import uuid4

from broker.journal_entries import DONE, QUEUE, Completed, Ref, writes_for
from broker.mqtt.session import Outgoing
from storage.session_data import Acknowledge, DropSession, KeepCompleted, SaveSession

ID = 2**64 - 9


def _ref(row: int | None = None, key: str = "k") -> Ref:
    message = Outgoing("t", b"p", 2)
    message.message_id = ID
    ref = Ref(key, message, row)
    ref.done = True  # as ``SqlSessionStore.message_completed`` leaves it
    return ref


def test_a_completed_message_goes_and_its_id_stays_in_the_same_writes() -> None:
    save = SaveSession("j", uuid4(), "meter", "c")
    writes, queued = writes_for([Completed(_ref(4), 3, 7), save, (DONE, _ref(5, "j"))])
    assert writes == [save, Acknowledge((4, 5)), KeepCompleted((("k", 3, 7, ID),))]
    assert queued == []


def test_one_completed_before_its_first_commit_is_never_written_but_its_id_is() -> None:
    ref = _ref()
    assert writes_for([(QUEUE, ref), Completed(ref, 0, 1)]) == (
        [KeepCompleted((("k", 0, 1, ID),))],
        [],
    )


def test_ids_of_a_session_dropped_in_the_batch_go_with_it() -> None:
    """§3.1.2.4: a clean session after the persistent one; the ids completed in the
    session saved again after the drop are kept."""
    save = SaveSession("k", uuid4(), "meter", "c")
    first, second, other = _ref(1), _ref(), _ref(key="j")
    writes, _ = writes_for(
        [Completed(first, 1, 1), Completed(other, 1, 1), DropSession("k"), save,
         Completed(second, 1, 1)]
    )  # fmt: skip
    assert writes == [
        DropSession("k"),
        save,
        Acknowledge((1,)),
        KeepCompleted((("j", 1, 1, ID), ("k", 1, 1, ID))),
    ]
