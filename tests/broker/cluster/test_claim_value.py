"""A session's claim says its member, the connect's Clean Start, and whether an adoption made
it (naming the connect it replaced); it reads a claim of an earlier version (the member's
name alone) as a connect's with Clean Start 0 (``broker.cluster.claim_value``)."""

import logging

import pytest

from broker.cluster.claim_value import (
    adoption_value,
    came_back,
    claim_value,
    clean_start,
    connect_revision,
    holder_of,
    is_adoption,
    read_claim,
    unknown_claims,
)


@pytest.mark.parametrize("clean", [True, False])
def test_a_claim_names_its_member_and_says_its_connects_clean_start(clean: bool) -> None:
    value = claim_value("node-1", clean)
    assert (holder_of(value), clean_start(value)) == ("node-1", clean)


def test_a_claim_of_clean_start_0_is_written_as_earlier_versions_wrote_every_claim() -> None:
    assert claim_value("node-1", False) == b"node-1"
    assert (holder_of(b"node-1"), clean_start(b"node-1")) == ("node-1", False)


@pytest.mark.parametrize("clean", [True, False])
def test_an_adoption_names_the_connect_it_replaced_and_its_clean_start(clean: bool) -> None:
    """A survivor's adoption, then another's of the first survivor's sessions: both name
    the connect made at revision 7, so a will of that connection still waits for its client."""
    first = adoption_value("node-2", claim_value("node-1", clean), 7)
    again = adoption_value("node-3", first, 12)
    for value, holder, revision in ((first, "node-2", 12), (again, "node-3", 15)):
        assert (holder_of(value), clean_start(value), is_adoption(value)) == (holder, clean, True)
        assert connect_revision(value, revision) == 7
        assert not came_back(value, revision, 7)
        assert came_back(value, revision, 3)  # a will of an earlier connection: decided


def test_a_connects_claim_is_the_client_coming_back_unless_it_is_the_wills_own() -> None:
    value = claim_value("node-2", True)
    assert (is_adoption(value), connect_revision(value, 9)) == (False, 9)
    assert not came_back(value, 9, 9)
    assert came_back(value, 9, 7)
    assert came_back(b"node-2", 9, 7)  # a claim of an earlier version: a connect


@pytest.mark.parametrize(
    ("value", "holder"),
    [
        (b"node-2 moved 9 clean", "node-2"),  # a later version's form
        (b"node-2 adopted x", "node-2"),
        (b"node-2  clean", "node-2"),
        (b"node-2 adopted 99999999999999999999999", "node-2"),  # no revision NATS gives
        (b"\xff\xfe clean", ""),  # not UTF-8: names no member
        (b"node.2", ""),
        (b"", ""),
    ],
)
def test_a_claim_of_an_unknown_form_names_its_first_words_member_and_decides_no_will(
    value: bytes, holder: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Read as naming the member of its first word (if that is a member's name), as a
    connect with Clean Start 0 and no sign of the client coming back: a delayed will
    waits for its delay and is published then, not dropped on a claim not understood.
    Counted, and logged with what was read."""
    before = unknown_claims()
    with caplog.at_level(logging.WARNING, logger="broker.cluster.claim_value"):
        claim = read_claim(value)
    assert (claim.holder, claim.clean, claim.adopted, claim.known) == (holder, False, None, False)
    assert holder_of(value) == holder
    assert not clean_start(value)
    assert not is_adoption(value)
    assert connect_revision(value, 9) == 9
    assert not came_back(value, 9, 7)
    assert unknown_claims() > before
    logged = [r.getMessage() for r in caplog.records]
    assert all("a session claim of a form this version does not know" in m for m in logged)


def test_claims_of_an_unknown_form_are_logged_once_a_minute_with_what_was_read(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.cluster.claim_value._Unknown.logged_at", float("-inf"))
    with caplog.at_level(logging.WARNING, logger="broker.cluster.claim_value"):
        for _ in range(3):
            read_claim(b"node-2 moved 9")
        read_claim(b"node-2 adopted 9 clean")  # a known form: not logged
    [line] = [r.getMessage() for r in caplog.records]
    assert "b'node-2 moved 9' read as held by node-2" in line
