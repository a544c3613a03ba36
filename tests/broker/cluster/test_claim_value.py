"""A session's claim says its member and the connect's Clean Start, and reads a claim of an
earlier version (the member's name alone) as Clean Start 0 (``broker.cluster.claim_value``)."""

import pytest

from broker.cluster.claim_value import claim_value, clean_start, holder_of


@pytest.mark.parametrize("clean", [True, False])
def test_a_claim_names_its_member_and_says_its_connects_clean_start(clean: bool) -> None:
    value = claim_value("node-1", clean)
    assert (holder_of(value), clean_start(value)) == ("node-1", clean)


def test_a_claim_of_clean_start_0_is_written_as_earlier_versions_wrote_every_claim() -> None:
    assert claim_value("node-1", False) == b"node-1"
    assert (holder_of(b"node-1"), clean_start(b"node-1")) == ("node-1", False)
