"""Exactly-once work on at-least-once deliveries, through the lineage store.

A unit of work (ingesting one version, validating it, ...) is one lineage row.
``claim`` creates it with status ``claimed`` by a conditional write; a second
delivery finds it and either learns the work is done, backs off while the
claim is fresh, or takes over a claim whose holder died. ``complete`` marks
the row with its final status once the work's event is out.

How long a claim stays fresh (its window) is not a constant: it is derived from
the function's queue (``shared.topology.claim_window_s``), so that a crashed
holder's claim is stale by the time its queue delivers the message again, and
the redelivery takes it over instead of backing off into the DLQ. Work that may
outlast the window runs inside ``renewing``, which refreshes the claim, so a
live holder is never taken over.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import WorkInProgress
from shared.ports import LineageRecord, LineageStore


def utcnow() -> datetime:
    """The clock claims are judged by (one function, so a test can run the real schedule)."""
    return datetime.now(UTC)


class Claim:
    """The claimed row at its stored revision; ``done`` if the work was already finished.

    A renewal moves the row to a new revision while the work runs, so the record is
    read under a lock and ``complete`` always writes over the latest one."""

    def __init__(self, record: LineageRecord, done: bool) -> None:
        self._record = record
        self.done = done
        self._lock = threading.Lock()

    @property
    def record(self) -> LineageRecord:
        with self._lock:
            return self._record

    def renew(self, lineage: LineageStore) -> bool:
        """Mark the claim fresh again; False if another delivery took it over meanwhile."""
        with self._lock:
            current = self._record
            fresh = current.model_copy(update={"updated_at": utcnow()})
            if not lineage.replace(fresh, current.revision):
                return False
            self._record = fresh.model_copy(update={"revision": current.revision + 1})
            return True


def claim(
    lineage: LineageStore,
    row: LineageRecord,
    window: timedelta,
    done_statuses: set[str],
    handover_statuses: frozenset[str] = frozenset(),
) -> Claim:
    """Claim ``row``'s work, or report it done; raises ``WorkInProgress`` to retry later.

    A row in one of ``handover_statuses`` was passed on on purpose (to a managed
    job, say) and is taken over at once, however fresh.
    """
    now = utcnow()
    row = row.model_copy(update={"updated_at": now})
    if lineage.put_if_absent(row):
        return Claim(row, done=False)
    existing = lineage.get(row.dataset, row.record_id)
    what = f"{row.kind} of {row.dataset} {row.record_id}"
    if existing is None:  # deleted in between; let the retry start clean
        raise WorkInProgress(f"lineage row for {what} changed under us")
    if existing.status in done_statuses:
        return Claim(existing, done=True)
    if existing.status not in handover_statuses and now - existing.updated_at < window:
        raise WorkInProgress(
            f"{what} is being worked on by another delivery",
            hint="the message will be retried after its visibility timeout",
        )
    # A stale claim: its holder died. Take it over, keeping the first delivery's facts.
    taken = existing.model_copy(update={"updated_at": now})
    if not lineage.replace(taken, existing.revision):
        raise WorkInProgress(f"another delivery took over {what}")
    return Claim(taken.model_copy(update={"revision": existing.revision + 1}), done=False)


@contextmanager
def renewing(lineage: LineageStore, claimed: Claim, window: timedelta) -> Iterator[Claim]:
    """Keep ``claimed`` fresh while the block runs: renewed every third of its window,
    so a duplicate delivery backs off however long the work takes, while a holder that
    dies stops renewing and is taken over within one window."""
    stop = threading.Event()
    every = max(window.total_seconds() / 3, 0.01)

    def beat() -> None:
        while not stop.wait(every):
            if not claimed.renew(lineage):
                return  # taken over: the other delivery finishes; our complete loses the race

    thread = threading.Thread(target=beat, name="claim-renewal", daemon=True)
    thread.start()
    try:
        yield claimed
    finally:
        stop.set()
        thread.join()


def complete(lineage: LineageStore, claimed: Claim, status: str, **attributes: Any) -> None:
    """Record the work's final status (and any facts learnt doing it)."""
    record = claimed.record
    done = record.model_copy(
        update={
            "status": status,
            "attributes": {**record.attributes, **attributes},
            "updated_at": utcnow(),
        }
    )
    # Losing this race means a stale-claim taker finished the same work; both are fine.
    lineage.replace(done, record.revision)
