"""What a member knows its own route entries hold in the bucket: a restarted member writes only
those the bucket lacks (``broker.cluster.routes``).

A node restarted at fleet size wrote every filter of the sessions it restored again, one
write at a time: 60,000 for 20,000 sessions of three subscriptions, 40 s, when its previous
run had left nearly all of them in the bucket. It now skips a write whose entry the bucket
holds, with the value wanted.

Why that is safe, although a survivor may delete this member's entries while it is away, or
while it restores (its ``forget`` was decided when it saw this member gone, and may run
late), whatever the order of the reads and the deletions:

- Only this member writes values to its keys; the others only delete them.
- It knows each of its keys' latest change by revision (the bucket's stream sequence, one
  order for all changes): the watch gives every change in revision order (remade after a
  reconnection from the revision after the last it gave, ``broker.cluster.kv``), and its
  writer has its own changes' revisions (``seen``).
- A write is skipped only if no change of the key waits or is being written and the latest
  change known put the value wanted (``holds``). A deletion made before that change is older:
  the bucket has the value. A deletion made after it has a later revision, which the watch
  gives whenever it happens (before the member is back, while it restores, or later): the
  member then writes the key again, if a session here still uses it (``seen`` says so),
  and that write comes after the deletion.

So a filter a session here uses ends up in the bucket (``tests/broker/cluster/
test_routes_held.py``). Without this, a survivor's deletion made after the restarted member
wrote its routes again lost them: nothing wrote them back.
"""

__all__ = ["OwnEntries"]


class OwnEntries:
    """This member's keys: the latest change known of each (its value, or None: deleted; its
    revision). A deletion is kept only until the watch gives it: nothing older can come then,
    so what is kept is bounded by the keys in the bucket and the writes the watch is behind."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple[bytes | None, int]] = {}

    def __len__(self) -> int:
        return len(self._latest)

    def holds(self, key: str, value: bytes) -> bool:
        """Whether the latest change known of ``key`` put ``value``."""
        latest = self._latest.get(key)
        return latest is not None and latest[0] == value

    def seen(self, key: str, value: bytes | None, revision: int, *, watched: bool) -> bool:
        """A change of ``key`` the watch gave (``watched``) or this member wrote; True if it
        is a deletion the member did not know of (another member's, as far as it knows)."""
        latest = self._latest.get(key)
        if latest is not None and latest[1] >= revision:  # known already, or a newer one
            if watched and latest == (None, revision):
                del self._latest[key]  # the watch is past this member's own deletion
            return False
        if value is not None:
            self._latest[key] = (value, revision)
            return False
        if not watched:
            self._latest[key] = (None, revision)
            return False
        self._latest.pop(key, None)
        return True
