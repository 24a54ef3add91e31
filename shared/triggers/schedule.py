"""The schedules' trigger shapes, the same on both clouds: a ``{"dataset": ...}`` message
that EventBridge Scheduler (AWS) or a timer (Azure) sends to a function's queue.

Both schedules send the same bare body, so the two shapes claim the same payloads: the
queue it arrives on tells them apart, as each function's route table reads only the
shapes of the events it takes (drift's queue a drift check, validate's a sweep).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.constants import DATASET_NAME_PATTERN
from shared.lineage import DriftTimerRecord
from shared.ports import LineageStore
from shared.triggers.registry import Json, TriggerContext, TriggerShape, register_shape


class DriftRequest(BaseModel):
    """Check one dataset for drift: the body the schedule sends to the drift queue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    requested_by: str = "schedule"
    # The schedule period a timer's request is for (its UTC start), or the run's time
    # EventBridge Scheduler writes in (fact aws.scheduler.scheduled_time_attribute); None
    # when a person asked. The drift check's window ends there.
    period: datetime | None = None


class ValidationSweepRequest(BaseModel):
    """Sweep one dataset's validations still handed to managed jobs: the body the
    ``validate_sweep`` schedule sends to the validate queue (``ValidateService.sweep``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A dataset name as ingest accepts one: the sweep reads lineage by it, and a name
    # that is not one never reaches a store's query.
    dataset: str = Field(pattern=DATASET_NAME_PATTERN)
    # The run's time EventBridge Scheduler writes in, as for the drift schedule; unused:
    # a sweep reads the platform's state now, whichever run it is.
    period: datetime | None = None


class _ScheduleMessage(TriggerShape):
    """A schedule's body, which is its request's model itself."""

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[BaseModel]:
        return [cls.produces.model_validate(data)]


@register_shape
class ScheduledDriftCheck(_ScheduleMessage):
    """A schedule's (or a person's) drift check request on the drift queue. Every message
    there is one: a field the model does not know is refused by it, and named."""

    name, produces = "drift_request", DriftRequest
    broken, hint = "not a drift check request:", 'the schedule sends {"dataset": "<name>"}'

    @classmethod
    def infer(cls, data: Json) -> bool:
        return "dataset" in data


@register_shape
class ScheduledValidationSweep(_ScheduleMessage):
    """The ``validate_sweep`` schedule's request on the validate queue: a bare
    ``{"dataset": ...}``, where every event comes in an envelope (EventBridge's detail,
    a CloudEvent's data)."""

    name, produces = "validation_sweep_request", ValidationSweepRequest
    broken = "not a validation sweep request:"
    hint = 'the validate_sweep schedule sends {"dataset": "<name>"}'

    @classmethod
    def infer(cls, data: Json) -> bool:
        return "dataset" in data and set(data) <= set(ValidationSweepRequest.model_fields)


DRIFT_TIMER_RECORD = "drift:timer"


def schedule_period(now: datetime, period_s: float) -> datetime:
    """The start of the schedule period ``now`` falls in, periods counted from the epoch."""
    epoch = now.timestamp()
    return datetime.fromtimestamp(epoch - epoch % period_s, UTC)


def claim_drift_period(lineage: LineageStore, dataset: str, period: datetime) -> bool:
    """Whether this timer tick is the one that sends ``dataset``'s check for ``period``.

    A check that keeps failing is never recorded as done, so it stays due, and a timer
    that fires each minute would send it again each minute, on top of the queue's own
    redeliveries of the first. Storage queues have no duplicate detection (fact
    ``azure.storage.queue_no_duplicate_detection``), so the timer claims the period in
    one lineage row per dataset, moved forward by a conditional write: of every tick in a
    period (and of two timers at once) one sends, the queue's retries and its poison
    queue handle what fails, and the next period sends again.
    """
    attrs = {"period": period.isoformat()}
    for _ in range(3):  # a lost race re-reads the row
        row = lineage.get(dataset, DRIFT_TIMER_RECORD)
        if row is None:
            fresh = DriftTimerRecord(
                dataset=dataset,
                record_id=DRIFT_TIMER_RECORD,
                status="sent",
                attributes=attrs,
            )
            if lineage.put_if_absent(fresh):
                return True
            continue
        if datetime.fromisoformat(str(row.attributes["period"])) >= period:
            return False
        moved = row.model_copy(update={"attributes": attrs, "updated_at": datetime.now(UTC)})
        if lineage.replace(moved, row.revision):
            return True
    return False


def timer_drift_requests(
    lineage: LineageStore,
    due: Sequence[str],
    now: datetime,
    specs_dir: str | None,
    minute_seconds: float = 60.0,
) -> list[DriftRequest]:
    """The requests a timer tick sends for the ``due`` datasets: one per dataset and
    period of its ``drift.schedule`` (``claim_drift_period``)."""
    from shared.specs import load_spec
    from shared.topology import rate_minutes

    requests = []
    for dataset in due:
        minutes = rate_minutes(load_spec(dataset, specs_dir).drift.schedule) or 1
        period = schedule_period(now, minutes * minute_seconds)
        if claim_drift_period(lineage, dataset, period):
            requests.append(DriftRequest(dataset=dataset, period=period))
    return requests
