"""Drift check: is what the model sees now still what it learned from?

For one dataset (on its schedule, or `dhow drift run`):

1. the current data is the serve function's captured inputs of the spec's
   ``drift.window_hours``; the reference is the champion's own training sample
   (``reference.parquet`` beside the curated data it was trained on); the rows serve
   flagged outside the spec's domain (``serving.out_of_domain: accept``) are tested
   with the rest and counted in the verdict (``out_of_domain_rows``);
2. ``shared.drift.compare`` gives every column's test and the dataset verdict;
   fewer than ``drift.min_rows`` captured rows is ``insufficient_data``, never an
   alarm;
3. a JSON summary and evidently's HTML report (on a bounded sample, and saying
   so) go to the reports bucket; the figures go to the metrics backend;
4. ``DriftChecked`` always; on drift, ``DriftDetected`` and an alert naming the
   drifted columns and the report;
5. the spec's ``drift.policy`` (``retrain`` or ``rollback``) is carried out by
   the function that owns it (train-launch, deploy), which an event rule sends
   ``DriftDetected`` to. A policy acts at most once per ``cooldown_hours``: the
   cooldown is a lineage row taken by a conditional write, so two checks at once
   cannot both act, and a drifting feed cannot retrain every hour. In cooldown
   the event's action is ``alert`` and it says until when.

Every check is a lineage row (``drift:<check id>``) with its verdict, where its
summary and report are, and what was done.

A check is delivered at least once (a queue, its retries), so its identity is not random:
the check id is derived from the dataset, the window it checks and what asked for it
(the schedule's own scheduled time, or who ran it), and a redelivery is the same check,
over the same window, and carries on where the crashed one stopped. The row is written
first (``checking``) and moved on at each step that must not be repeated (metrics, the
alert); the cooldown, once taken, belongs to the check that took it, so its retry still
acts; report and summary are rewritten under the same keys; the events carry ids derived
from the check id, which the functions acting on them claim (one retrain job, one
rollback per check), so a redelivery after its events went out changes nothing. A check
whose row has its verdict is done and is answered from its summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from shared.capture import out_of_domain, read_window
from shared.drift import ColumnKind, DriftVerdict, compare, feature_kinds
from shared.errors import DhowError, ObjectMissing, WorkInProgress
from shared.events import DriftChecked, DriftDetected, ObjectRef
from shared.layout import DatasetVersion, drift_report_key, drift_summary_key
from shared.lineage import DriftPolicyRecord, DriftRecord, LineageKind
from shared.ports import (
    AlertChannel,
    EventBus,
    LineageRecord,
    LineageStore,
    MetricPoint,
    MetricsSink,
    ModelRegistry,
    ModelVersion,
    ObjectStore,
)
from shared.reasons import Reason
from shared.services.train_launch import (
    NO_NEW_DATA,
    latest_validated,
    training_data,
    version_fingerprint,
)
from shared.specs import DatasetSpec, load_spec

log = logging.getLogger(__name__)

POLICY_RECORD = "drift:policy"
METRICS_NAMESPACE = "Dhow/Drift"

Action = Literal["none", "alert", "retrain", "rollback"]


CHECKING = "checking"  # the row's status until the check has its verdict recorded
VERDICTS = frozenset({"no_drift", "drift", "insufficient_data"})


def drift_record_id(check_id: str) -> str:
    return f"drift:{check_id}"


def drift_check_id(dataset: str, start: datetime, end: datetime, trigger: str) -> str:
    """The check's identity: the same dataset, window and trigger is the same check, however
    often its message is delivered (the end first, so ids sort by time)."""
    key = f"{dataset}|{start.isoformat()}|{end.isoformat()}|{trigger}"
    return f"{end:%Y%m%dT%H%M%SZ}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def window_end(scheduled_at: datetime | None, now: datetime) -> datetime:
    """Where the checked window ends: the schedule's own time for this run (the same on
    every delivery of its message), else now (a person's `dhow drift run`, which calls the
    service directly and is never redelivered: it must see the requests just served, which
    the minute's start left out, and a second run a moment later, after more traffic, is a
    check of its own, not the first one's answer)."""
    at = scheduled_at if scheduled_at is not None else now
    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


def drift_history(lineage: LineageStore, dataset: str, limit: int = 20) -> list[LineageRecord]:
    """A dataset's drift checks, newest first (what `dhow drift status` shows)."""
    rows = [r for r in lineage.list(dataset) if r.kind == LineageKind.DRIFT]
    return sorted(rows, key=lambda r: r.created_at, reverse=True)[:limit]


def due_drift_checks(
    lineage: LineageStore,
    specs_dir: str | None,
    now: datetime,
    minute_seconds: float = 60.0,
) -> list[str]:
    """The datasets whose ``drift.schedule`` says a check is due at ``now``: never checked,
    or last checked a whole period ago. A timer (Azure) calls this each minute instead of
    keeping one schedule per dataset (EventBridge Scheduler on AWS). ``rate(...)`` schedules
    only; a ``cron(...)`` one is logged and left to the person who wrote it."""
    from shared.specs import load_spec
    from shared.specs import specs_dir as find_specs
    from shared.topology import rate_minutes

    due = []
    for path in sorted(find_specs(specs_dir).glob("*.yaml")):
        spec = load_spec(path.stem, specs_dir)
        minutes = rate_minutes(spec.drift.schedule)
        if minutes is None:
            log.warning(
                "%s: drift.schedule %s is not played by the timer", path.stem, spec.drift.schedule
            )
            continue
        last = drift_history(lineage, path.stem, limit=1)
        if not last or (now - last[0].created_at).total_seconds() >= minutes * minute_seconds:
            due.append(path.stem)
    return due


@dataclass(frozen=True)
class DriftOutcome:
    check_id: str
    dataset: str
    verdict: DriftVerdict
    model_version: str | None
    summary: ObjectRef
    report: ObjectRef | None
    action: Action  # what this check did: none, alert only, or the policy's action
    cooldown_until: datetime | None
    alert_id: str | None
    note: str | None
    repeated: bool = False  # a redelivered check that had already finished: nothing redone

    def as_dict(self) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "dataset": self.dataset,
            "model_version": self.model_version,
            **self.verdict.model_dump(mode="json"),
            "summary": self.summary.uri,
            "report": self.report.uri if self.report else None,
            "action": self.action,
            "cooldown_until": self.cooldown_until.isoformat() if self.cooldown_until else None,
            "alert_id": self.alert_id,
            "note": self.note,
        }


class DriftService:
    """Runs one dataset's drift check. See the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        bus: EventBus,
        lineage: LineageStore,
        registry: ModelRegistry,
        metrics: MetricsSink,
        alerts: AlertChannel,
        *,
        capture_container: str,
        reports_container: str,
        specs_dir: str | Path | None = None,
        report_sample_rows: int = 5000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._bus = bus
        self._lineage = lineage
        self._registry = registry
        self._metrics = metrics
        self._alerts = alerts
        self._capture = capture_container
        self._reports = reports_container
        self._specs = specs_dir
        self._sample_rows = report_sample_rows
        self._clock = clock

    # --- the data -----------------------------------------------------------------

    def _reference(self, champion: ModelVersion, kinds: dict[str, ColumnKind]) -> pd.DataFrame:
        curated = champion.lineage.get("curated")
        if not curated:
            raise DhowError(
                f"model v{champion.version} of {champion.dataset} does not say what it was "
                "trained on, so there is no reference to compare with",
                reason=Reason.NO_REFERENCE,
                hint="retrain it (`dhow train DATASET`): newer versions record their data",
            )
        data = ObjectRef.from_uri(curated)
        version = DatasetVersion.from_key(data.key)
        if version is None:
            raise DhowError(
                f"model v{champion.version} of {champion.dataset} was trained on {curated}, "
                "which is not a validated dataset version's curated data, so there is no "
                "reference beside it to compare with",
                reason=Reason.NO_REFERENCE,
                hint="retrain it (`dhow train DATASET`) on data that validation curated",
            )
        ref = ObjectRef(container=data.container, key=version.reference_key)
        with tempfile.TemporaryDirectory(prefix="dhow-drift-") as tmp:
            path = Path(tmp) / "reference.parquet"
            try:
                self._store.download(ref, path)
            except ObjectMissing as exc:
                raise DhowError(
                    f"the reference sample of model v{champion.version} is missing: {ref.uri}",
                    reason=Reason.NO_REFERENCE,
                    hint="validation writes it beside the curated data; re-upload the "
                    "training data, or retrain, to make a new one",
                ) from exc
            return pd.read_parquet(path, columns=list(kinds))

    def _current(
        self, dataset: str, kinds: dict[str, ColumnKind], start: datetime, end: datetime
    ) -> tuple[pd.DataFrame, int]:
        """The window's captured inputs, and how many of them were flagged out of the
        spec's domain (they are tested with the rest)."""
        rows = read_window(self._store, self._capture, dataset, start, end, list(kinds))
        frame = pd.DataFrame.from_records([r["inputs"] for r in rows], columns=list(kinds))
        for col, kind in kinds.items():
            if kind == "num":
                frame[col] = pd.to_numeric(frame[col], errors="coerce")
        return frame, sum(1 for r in rows if out_of_domain(r))

    # --- the policy ---------------------------------------------------------------

    def _take_action(
        self, spec: DatasetSpec, check_id: str, now: datetime
    ) -> tuple[bool, datetime | None]:
        """Whether this check may act on the policy now; if not, until when it cools."""
        cooldown = timedelta(hours=spec.drift.cooldown_hours)
        attrs = {"last_action_at": now.isoformat(), "check_id": check_id}
        for _ in range(3):  # a lost race re-reads the row, up to three tries in all
            row = self._lineage.get(spec.name, POLICY_RECORD)
            if row is not None and row.attributes.get("check_id") == check_id:
                # This check took the cooldown before it crashed: its action is still owed.
                return True, None
            if row is None:
                fresh = DriftPolicyRecord(
                    dataset=spec.name,
                    record_id=POLICY_RECORD,
                    status=spec.drift.policy,
                    attributes=attrs,
                )
                if self._lineage.put_if_absent(fresh):
                    return True, None
                continue
            until = datetime.fromisoformat(row.attributes["last_action_at"]) + cooldown
            if now < until:
                return False, until
            taken = row.model_copy(
                update={"status": spec.drift.policy, "attributes": attrs, "updated_at": now}
            )
            if self._lineage.replace(taken, row.revision):
                return True, None
        raise DhowError(
            "the drift policy's cooldown row kept changing under this check",
            reason=Reason.DRIFT_POLICY_CONTENDED,
            hint="another check is acting on this dataset; this one is retried",
        )

    def _retrain_would_repeat(
        self, spec: DatasetSpec, champion: ModelVersion, correlation: str
    ) -> str | None:
        """Why the retrain policy must not act (its data is the champion's), or None.

        What a retrain would learn from (the newest validated version and what the spec's
        learn_from adds) against what the champion learnt from: the same set would train
        the same model again, and a rollout of it would change nothing."""
        try:
            newest = latest_validated(self._lineage, spec.name, correlation)
        except DhowError:
            return None  # nothing validated: train-launch answers that itself
        data = training_data(self._lineage, spec.training.learn_from, newest)
        if data.fingerprint != version_fingerprint(champion.lineage):
            return None
        return (
            f"{NO_NEW_DATA}: no data was validated since model v{champion.version} was "
            "trained, so a retrain would learn the same rows; upload new data to retrain"
        )

    # --- outputs ------------------------------------------------------------------

    def _metric_points(self, dataset: str, verdict: DriftVerdict) -> list[MetricPoint]:
        dims = {"Dataset": dataset}
        points = [
            MetricPoint(
                name="CurrentRows", value=verdict.current_rows, unit="Count", dimensions=dims
            ),
            MetricPoint(
                name="InsufficientData",
                value=float(verdict.verdict == "insufficient_data"),
                dimensions=dims,
            ),
        ]
        if verdict.verdict == "insufficient_data":
            return points
        points += [
            MetricPoint(
                name="DatasetDrift", value=float(verdict.verdict == "drift"), dimensions=dims
            ),
            MetricPoint(
                name="DriftShare",
                value=100 * (verdict.drift_share or 0.0),
                unit="Percent",
                dimensions=dims,
            ),
            MetricPoint(
                name="DriftedColumns",
                value=len(verdict.drifted_columns),
                unit="Count",
                dimensions=dims,
            ),
        ]
        for c in verdict.columns:
            col = {**dims, "Column": c.column, "Test": c.stattest}
            points.append(MetricPoint(name="ColumnStatistic", value=c.statistic, dimensions=col))
            points.append(MetricPoint(name="ColumnDrifted", value=float(c.drifted), dimensions=col))
        return points

    def _alert_text(
        self,
        dataset: str,
        verdict: DriftVerdict,
        report: ObjectRef | None,
        summary: ObjectRef,
        action: Action,
        policy: str,
        until: datetime | None,
        model_version: str | None,
        skipped: str | None = None,
    ) -> tuple[str, str]:
        by = {c.column: c for c in verdict.columns}
        lines = [
            f"Drift in dataset {dataset} (model v{model_version}): "
            f"{len(verdict.drifted_columns)} of {len(verdict.columns)} columns drifted "
            f"({(verdict.drift_share or 0):.0%}, threshold {verdict.drift_share_threshold:.0%}); "
            f"{verdict.current_rows} captured rows against {verdict.reference_rows} "
            "reference rows.",
            *(
                [
                    f"{verdict.out_of_domain_rows} of the captured rows were served outside "
                    "the spec's bounds or categories (serving.out_of_domain: accept)."
                ]
                if verdict.out_of_domain_rows
                else []
            ),
            "",
            "Drifted columns:",
            *(
                f"  - {c}: {by[c].stattest} = {by[c].statistic:.4g} (threshold {by[c].threshold:g})"
                for c in verdict.drifted_columns
            ),
            "",
            f"Report:  {report.uri if report else '(none)'}",
            f"Summary: {summary.uri}",
            "",
        ]
        if action in ("retrain", "rollback"):
            lines.append(f"Policy: {policy}; the {action} has been requested.")
        elif skipped:
            lines.append(f"Policy: {policy}; skipped: {skipped}.")
        elif policy != "alert":
            lines.append(
                f"Policy: {policy}, cooling down until {until:%Y-%m-%d %H:%M} UTC; "
                "nothing was done this time."
                if until
                else f"Policy: {policy}; nothing was done."
            )
        else:
            lines.append("Policy: alert only.")
        cols = ", ".join(verdict.drifted_columns)
        return f"[dhow] drift in {dataset}: {cols}", "\n".join(lines)

    # --- the check ----------------------------------------------------------------

    def _start(self, row: LineageRecord) -> LineageRecord:
        """The check's row: created now, or the one a crashed delivery of it left."""
        if self._lineage.put_if_absent(row):
            return row
        existing = self._lineage.get(row.dataset, row.record_id)
        if existing is None:  # deleted in between; let the retry start clean
            raise WorkInProgress(f"drift check {row.record_id} of {row.dataset} changed under us")
        return existing

    def _step(self, row: LineageRecord, **attributes: Any) -> LineageRecord:
        """Record a step done, so a redelivery does not do it again. A conditional write:
        of two deliveries of one check at once, the second stops here and is retried."""
        moved = row.model_copy(
            update={"attributes": {**row.attributes, **attributes}, "updated_at": self._clock()}
        )
        if not self._lineage.replace(moved, row.revision):
            raise WorkInProgress(
                f"another delivery of drift check {row.record_id} of {row.dataset} moved it on",
                hint="the message will be retried after its visibility timeout",
            )
        return moved.model_copy(update={"revision": row.revision + 1})

    def _finished(self, row: LineageRecord) -> DriftOutcome:
        """The outcome of a check that is done, read back from its row and summary."""
        a = row.attributes
        summary = ObjectRef.from_uri(str(a["summary"]))
        doc = json.loads(b"".join(self._store.iter_chunks(summary)))
        until = a.get("cooldown_until")
        return DriftOutcome(
            check_id=str(a["check_id"]),
            dataset=row.dataset,
            # a summary written before a field existed takes its default
            verdict=DriftVerdict.model_validate(
                {k: doc[k] for k in DriftVerdict.model_fields if k in doc}
            ),
            model_version=a.get("model_version"),
            summary=summary,
            report=ObjectRef.from_uri(a["report"]) if a.get("report") else None,
            action=a["action"],
            cooldown_until=datetime.fromisoformat(until) if until else None,
            alert_id=a.get("alert_id"),
            note=a.get("note"),
            repeated=True,
        )

    def check(
        self,
        dataset: str,
        requested_by: str = "schedule",
        scheduled_at: datetime | None = None,
    ) -> DriftOutcome:
        """Run one check of the window that ends at ``scheduled_at`` (the schedule's time
        for this run; else the current minute). Safe to repeat: a redelivery of the same
        request is the same check, and finishes it (or answers it) without acting twice."""
        spec = load_spec(dataset, self._specs)
        d = spec.drift
        now = self._clock()
        end = window_end(scheduled_at, now)
        start = end - timedelta(hours=d.window_hours)
        check_id = drift_check_id(dataset, start, end, requested_by)
        correlation = f"drift-{dataset}-{check_id}"
        row = self._start(
            DriftRecord(
                dataset=dataset,
                record_id=drift_record_id(check_id),
                status=CHECKING,
                attributes={
                    "check_id": check_id,
                    "requested_by": requested_by,
                    "correlation_id": correlation,
                    "window": {"start": start.isoformat(), "end": end.isoformat()},
                },
                created_at=now,
                updated_at=now,
            )
        )
        if row.status in VERDICTS:
            return self._finished(row)
        kinds = feature_kinds(spec)
        champion = self._registry.champion(dataset)
        current, flagged = self._current(dataset, kinds, start, end)
        note = None
        if champion is None:
            note = "no approved model serves this dataset yet"
            reference = pd.DataFrame(columns=list(kinds))
        else:
            reference = self._reference(champion, kinds)
        verdict = compare(
            reference,
            current,
            kinds,
            drift_share=d.drift_share,
            stattests=d.stattests,
            thresholds=d.thresholds,
            min_rows=d.min_rows,
        ).model_copy(update={"out_of_domain_rows": flagged})
        if verdict.verdict == "insufficient_data" and note is None:
            note = (
                f"{verdict.current_rows} rows captured in {d.window_hours} h, "
                f"fewer than the {d.min_rows} the spec asks for"
            )
        model_version = str(champion.version) if champion else None

        # The cooldown before anything is written: the report and the alert say what was
        # done. A crash after it is harmless, since the cooldown stays this check's.
        action: Action = "none"
        until = None
        skipped: str | None = None
        if verdict.verdict == "drift":
            action = "alert"
            if d.policy == "retrain" and champion is not None:
                # Before the cooldown: a skipped retrain is no action, and new data can
                # retrain at the next check.
                skipped = self._retrain_would_repeat(spec, champion, correlation)
                if skipped:
                    note = skipped
            if d.policy != "alert" and skipped is None:
                acted, until = self._take_action(spec, check_id, now)
                if acted:
                    action = d.policy

        # Report and summary under the check's own keys: a redelivery rewrites the same two.
        report = None
        if verdict.verdict != "insufficient_data":
            report = ObjectRef(container=self._reports, key=drift_report_key(dataset, check_id))
            # evidently is imported here only: a check without a verdict never pays for it.
            from shared.drift_report import REPORT_CONTENT_TYPE, REPORT_DISPOSITION, render_html

            page = render_html(
                reference, current, kinds, verdict, f"Drift check of {dataset}", self._sample_rows
            )
            # Served as HTML and downloaded, never opened in the storage's origin.
            self._store.put_bytes(
                report,
                page,
                {"dataset": dataset, "check_id": check_id},
                content_type=REPORT_CONTENT_TYPE,
                content_disposition=REPORT_DISPOSITION,
            )
        summary = ObjectRef(container=self._reports, key=drift_summary_key(dataset, check_id))
        outcome = DriftOutcome(
            check_id=check_id,
            dataset=dataset,
            verdict=verdict,
            model_version=model_version,
            summary=summary,
            report=report,
            action=action,
            cooldown_until=until,
            alert_id=None,
            note=note,
        )
        doc = {
            **outcome.as_dict(),
            "checked_at": now.isoformat(),
            "window": {"start": start.isoformat(), "end": end.isoformat()},
            "policy": d.policy,
            "requested_by": requested_by,
            "spec_version": spec.spec_version,
        }
        self._store.put_bytes(
            summary,
            json.dumps(doc, indent=2).encode(),
            {"dataset": dataset},
            content_type="application/json",
        )

        if not row.attributes.get("metrics_sent"):
            try:
                self._metrics.put(METRICS_NAMESPACE, self._metric_points(dataset, verdict))
            except Exception:
                # The verdict, report and alert matter more than a graph: go on.
                log.exception("drift metrics for %s were not recorded", dataset)
            row = self._step(row, metrics_sent=True)

        alert_id: str | None = row.attributes.get("alert_id")
        if verdict.verdict == "drift" and alert_id is None:
            subject, text = self._alert_text(
                dataset, verdict, report, summary, action, d.policy, until, model_version,
                skipped,
            )  # fmt: skip
            alert_id = self._alerts.send(
                subject,
                text,
                {"dataset": dataset, "verdict": verdict.verdict, "check_id": check_id},
            )
            row = self._step(row, alert_id=alert_id)
        outcome = replace(outcome, alert_id=alert_id)

        # What both events say of this check; their ids are the check's, so a redelivery
        # that sends them again sends the same events, which their consumers claim by id.
        about: dict[str, Any] = {
            "dataset": dataset,
            "correlation_id": correlation,
            "model_version": model_version,
            "drifted_columns": verdict.drifted_columns,
            "report": report,
            "check_id": check_id,
            "summary": summary,
        }
        self._bus.publish(
            DriftChecked(
                event_id=f"drift-checked-{dataset}-{check_id}",
                verdict=verdict.verdict,
                drift_share=verdict.drift_share,
                current_rows=verdict.current_rows,
                **about,
            )
        )
        if verdict.verdict == "drift":
            self._bus.publish(
                DriftDetected(
                    event_id=f"drift-detected-{dataset}-{check_id}",
                    drift_share=verdict.drift_share or 0.0,
                    action="alert" if action == "alert" else d.policy,
                    policy=d.policy,
                    cooldown_until=until,
                    **about,
                )
            )
        done = row.model_copy(
            update={
                "status": verdict.verdict,
                "attributes": {
                    **row.attributes,
                    "model_version": model_version,
                    "drifted_columns": verdict.drifted_columns,
                    "drift_share": verdict.drift_share,
                    "current_rows": verdict.current_rows,
                    "out_of_domain_rows": verdict.out_of_domain_rows,
                    "reference_rows": verdict.reference_rows,
                    "summary": summary.uri,
                    "report": report.uri if report else None,
                    "action": action,
                    "policy": d.policy,
                    "cooldown_until": until.isoformat() if until else None,
                    "alert_id": alert_id,
                    "note": note,
                    # A retrain policy that did not retrain, and why (no_new_data).
                    "skipped": {"action": "retrain", "reason": NO_NEW_DATA} if skipped else None,
                },
                "updated_at": self._clock(),
            }
        )
        # Losing this race means another delivery of the same check finished it: both did
        # the same check, and the events they sent have the same ids.
        self._lineage.replace(done, row.revision)
        return outcome
