"""The delete markers of a key-value bucket as this member's watches gave them: what a
compaction pass purges (``broker.cluster.compaction``) without reading the bucket whole.

Each marker a watch of the bucket gives (the route table's, or one the purging member keeps
on the claims and devices buckets) is noted here, and forgotten once the key is written
again. A purge sends nothing to the watches, so a marker purged (by this member or
another) is forgotten here by age: ``forget_older`` drops those older than the markers kept.

Held: the markers written in the last ``cluster_delete_markers_kept`` seconds, as many as the
bucket holds then (the bucket itself is bounded by the same purges).

A watch that starts late (a reconnection's remake) may give an older state of a key than one
given before: noting its marker again is harmless, since a marker is purged with what is older
on its key only (``KeyValue.purge``), never a value written after it.
"""

__all__ = ["DeleteMarkers"]


class DeleteMarkers:
    """Key -> (revision, when the server stored it) of each delete marker seen."""

    def __init__(self) -> None:
        self._markers: dict[str, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._markers)

    def seen(self, key: str, present: bool, revision: int, written_at: float | None) -> None:
        """A watch gave ``key`` at ``revision``: a marker (``present`` False) or a value."""
        known = self._markers.get(key)
        if known is not None and known[0] >= revision:
            return  # given before by a watch ahead of this one
        if present:
            self._markers.pop(key, None)
        elif written_at is not None:  # a marker whose age is not known is left to a full read
            self._markers[key] = (revision, written_at)

    def older_than(self, moment: float) -> list[tuple[str, int]]:
        """(key, revision) of each marker stored before ``moment`` (seconds since the epoch)."""
        return [(key, rev) for key, (rev, at) in self._markers.items() if at < moment]

    def forget(self, markers: list[tuple[str, int]]) -> None:
        """Purged: forgotten, unless the key changed since."""
        for key, revision in markers:
            if self._markers.get(key, (0, 0.0))[0] == revision:
                del self._markers[key]

    def forget_older(self, moment: float) -> None:
        """Drop the markers stored before ``moment``: another member purges them."""
        self.forget(self.older_than(moment))
