"""Full garbage collections on the server's schedule, not CPython's (server/gc_pacing.py)."""

from __future__ import annotations

import gc

from server.gc_pacing import NO_AUTOMATIC_FULL_COLLECTION, GcPacer
from tests.support.polling import eventually


class Cycle:
    """An object that only the cycle collector can free."""

    def __init__(self) -> None:
        self.me = self


async def test_full_collections_run_on_schedule_and_reclaim_old_cycles():
    before = gc.get_threshold()
    pacer = GcPacer(interval=0.05)
    pacer.start()
    try:
        assert gc.get_threshold()[:2] == before[:2]
        assert gc.get_threshold()[2] == NO_AUTOMATIC_FULL_COLLECTION
        assert gc.get_freeze_count() > 0  # what existed at start is never walked again
        Cycle()  # garbage the young collections may or may not see: the paced one will
        await eventually(lambda: pacer.full_collections >= 2)
        assert not [o for o in gc.get_objects() if isinstance(o, Cycle)]
        stats = pacer.stats()
        assert stats["full_collections"] >= 2 and stats["longest_full_s"] >= stats["last_full_s"]
    finally:
        await pacer.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_the_server_reports_its_collections(p2p_server):
    facts = p2p_server.get_json("/stats")["gc"]
    assert facts["interval_s"] > 0 and facts["frozen_objects"] > 0
