"""Following one correlation's pipeline events (`upload --wait`, `train --wait`): each
event's line, and the stage running meanwhile on stderr's progress bar."""

from __future__ import annotations

import time
from typing import Any, TextIO

import click

from shared.events import (
    DatasetIngested,
    DatasetRejected,
    DatasetValidated,
    ModelApproved,
    ModelRejected,
    PipelineEvent,
    TrainingCompleted,
    TrainingLaunched,
)
from shared.layout import DatasetVersion
from shared.ports import EventTap

# Events after which `upload --wait` has nothing more to follow (for now: the model's verdict).
TERMINAL_EVENTS: tuple[type[PipelineEvent], ...] = (ModelApproved, ModelRejected, DatasetRejected)


def _is_final(event: PipelineEvent) -> bool:
    failed_training = isinstance(event, TrainingCompleted) and event.status != "Completed"
    return isinstance(event, TERMINAL_EVENTS) or failed_training


def _describe(event: PipelineEvent) -> str:
    if isinstance(event, DatasetIngested):
        return (
            f"version {DatasetVersion(event.dataset, event.sha256).version}, "
            f"{event.size_bytes} bytes, {event.format}, "
            f"staged at {event.staged.uri}"
        )
    if isinstance(event, DatasetValidated):
        return f"{event.rows} rows, spec {event.spec_version}, curated at {event.curated.uri}"
    if isinstance(event, TrainingLaunched):
        return f"job {event.job_name} on {event.instance_type} ({event.backend})"
    if isinstance(event, TrainingCompleted):
        return f"job {event.job_name}: {event.status}" + (
            f" ({event.reason})" if event.reason else ""
        )
    if isinstance(event, ModelApproved | ModelRejected):
        shown = {k: round(v, 4) for k, v in event.metrics.items() if not k.startswith("n_")}
        why = f"; {event.reason}" if isinstance(event, ModelRejected) else ""
        return f"version {event.model_version}, {shown}{why}"
    if isinstance(event, DatasetRejected):
        where = f"\n{'':31}quarantined at {event.quarantined.uri}" if event.quarantined else ""
        report = f"\n{'':31}report: {event.report.uri}" if event.report else ""
        return f"[{event.reason}] {event.message}{where}{report}"
    return event.model_dump_json(exclude={"event_id", "occurred_at", "correlation_id"})


# Which stage runs after each event of an upload, for `--wait`'s display.
_NEXT_STAGE: dict[type[PipelineEvent], str] = {
    DatasetIngested: "validate",
    DatasetValidated: "train-launch",
    TrainingLaunched: "training",
    TrainingCompleted: "register",
}


class _StageDisplay:
    """The stage running now and the time since the upload, on click's progress bar (its
    fill is the share of --timeout spent). One bar per stage: each event's line is printed
    between two bars, never into one."""

    def __init__(self, stream: TextIO, t0: float, timeout: float) -> None:
        self._stream, self._t0 = stream, t0
        self._tenths = max(int(timeout * 10), 1)
        self._bar: Any = None
        self._stage = ""

    def start(self, stage: str) -> None:
        self._stage = stage
        self._bar = click.progressbar(
            length=self._tenths,
            label=f"{stage:<12}",
            show_eta=False,
            show_percent=False,
            item_show_func=self._info,
            file=self._stream,
        )
        self._bar.__enter__()
        self.tick()

    def _info(self, _item: object) -> str:
        return f"running {self._stage}, {time.monotonic() - self._t0:.1f}s"

    def tick(self) -> None:
        if self._bar is None:
            return
        pos = min(int((time.monotonic() - self._t0) * 10), self._tenths)
        # update(0) draws nothing, so the bar is redrawn on the next tenth of a second.
        self._bar.update(max(pos - self._bar.pos, 0))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def follow(
    tap: EventTap,
    correlation: str,
    t0: float,
    timeout: float,
    as_json: bool,
    events: list[dict[str, Any]],
    progress: TextIO | None = None,
    first_stage: str = "ingest",
) -> PipelineEvent | None:
    """Print (and collect) this correlation's events until a final one or the timeout;
    with ``progress``, show the running stage and the elapsed time there meanwhile."""
    deadline = t0 + timeout
    display = _StageDisplay(progress, t0, timeout) if progress is not None else None
    if display is not None:
        display.start(first_stage)
    try:
        while time.monotonic() < deadline:
            for tapped in tap.receive(wait_s=1):
                if tapped.event.correlation_id != correlation:
                    tap.release(tapped)
                    continue
                tap.ack(tapped)
                elapsed = time.monotonic() - t0
                events.append(
                    {
                        "seconds": round(elapsed, 3),
                        "type": tapped.event.event_type,
                        "event": tapped.event.model_dump(mode="json"),
                    }
                )
                if display is not None:
                    display.stop()
                if not as_json:
                    click.echo(
                        f"  {elapsed:7.2f}s  {tapped.event.event_type:<18} "
                        f"{_describe(tapped.event)}"
                    )
                if _is_final(tapped.event):
                    return tapped.event
                if display is not None:
                    display.start(_NEXT_STAGE.get(type(tapped.event), first_stage))
            if display is not None:
                display.tick()
        return None
    finally:
        if display is not None:
            display.stop()
