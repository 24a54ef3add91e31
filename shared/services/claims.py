"""Exactly-once work on at-least-once deliveries, through the lineage store.

A unit of work (ingesting one version, validating it, ...) is one lineage row.
``claim`` creates it with status ``claimed`` by a conditional write; a second
delivery finds it and either learns the work is done, backs off while the
claim is fresh, or takes over a claim whose holder died. ``complete`` marks
the row with its final status once the work's event is out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import WorkInProgress
from shared.ports import LineageRecord, LineageStore


@dataclass(frozen=True)
class Claim:
    """The claimed row at its stored revision; ``done`` if the work was already finished."""

    record: LineageRecord
    done: bool


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
    if lineage.put_if_absent(row):
        return Claim(row, done=False)
    existing = lineage.get(row.dataset, row.record_id)
    what = f"{row.kind} of {row.dataset} {row.record_id}"
    if existing is None:  # deleted in between; let the retry start clean
        raise WorkInProgress(f"lineage row for {what} changed under us")
    if existing.status in done_statuses:
        return Claim(existing, done=True)
    now = datetime.now(UTC)
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


def complete(lineage: LineageStore, claimed: Claim, status: str, **attributes: Any) -> None:
    """Record the work's final status (and any facts learnt doing it)."""
    record = claimed.record
    done = record.model_copy(
        update={
            "status": status,
            "attributes": {**record.attributes, **attributes},
            "updated_at": datetime.now(UTC),
        }
    )
    # Losing this race means a stale-claim taker finished the same work; both are fine.
    lineage.replace(done, record.revision)
