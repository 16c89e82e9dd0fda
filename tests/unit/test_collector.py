"""The collector of a serving process (chatpush/cli.py): the start-up's objects frozen, so a full
collection no longer walks them (docs/operations.md, "The garbage collector")."""

from __future__ import annotations

import gc

from chatpush.cli import freeze_startup_objects


def test_after_start_up_a_full_collection_walks_only_what_was_made_since() -> None:
    started = [[n] for n in range(10_000)]  # the start-up's long-lived objects
    assert len(gc.get_objects()) > len(started)
    try:
        freeze_startup_objects()
        made_since = [[n] for n in range(100)]
        tracked = gc.get_objects()  # what a full collection walks
        assert gc.get_freeze_count() >= len(started)
        assert len(tracked) < len(started)
        assert any(each is made_since[0] for each in tracked)
        assert not any(each is started[0] for each in tracked)
    finally:
        gc.unfreeze()
