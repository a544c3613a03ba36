"""A session's claim says its member, the connect's Clean Start, and whether an adoption made
it (naming the connect it replaced); it reads a claim of an earlier version (the member's
name alone) as a connect's with Clean Start 0 (``broker.cluster.claim_value``)."""

import pytest

from broker.cluster.claim_value import (
    adoption_value,
    came_back,
    claim_value,
    clean_start,
    connect_revision,
    holder_of,
    is_adoption,
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
