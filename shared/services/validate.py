"""Validate: a staged dataset version becomes curated data, or a quarantined file with a report.

On ``DatasetIngested``: load the dataset's spec, claim the work in lineage
(redeliveries do nothing), and either hand a file above the inline limit to a
managed job, or download it, validate it in chunks and then

- pass: write ``curated/.../data.parquet``, ``reference.parquet`` (the drift
  reference sample) and ``profile.json``; emit ``DatasetValidated``;
- fail: copy the file to the quarantine bucket, write ``<key>.report.json``
  beside it, emit ``DatasetRejected``, then delete the staged copy.

The work is split where the managed job's network ends. ``StagedFileValidator``
needs storage only: it validates a local file and writes the curated or the
quarantined copy. A managed job (``python -m shared.jobs.validate``) runs just
that, in a network whose only way out is storage, and leaves a small
``ValidationResult`` at ``job_result_ref``. The function does the rest (lineage,
events, the staged delete): inline at once, or when the job's end comes back as
an event (``ValidateService.finish_job``), which also answers the uploader when
the job failed or was stopped. An end event can be lost (a rule disabled, delivery given
up, a job stuck): ``ValidateService.sweep``, on a schedule, asks the platform for the state
of every job still ``handed_off`` and settles it as its end event would have.

The raw upload is never touched: nothing is ever dropped.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.errors import ObjectMissing
from shared.events import DatasetIngested, DatasetRejected, DatasetValidated, ObjectRef
from shared.layout import DatasetVersion
from shared.lineage import LineageKind, ValidateRecord
from shared.ports import (
    EventBus,
    LineageStore,
    ObjectStore,
    ValidationJobEnded,
    ValidationJobLauncher,
    ValidationJobRequest,
    ValidationJobState,
    validation_attempt_of,
)
from shared.reasons import Reason
from shared.services import claims
from shared.services.claims import Claim, claim, complete, renewing
from shared.specs import DatasetSpec, SpecCatalog, SpecInvalid, UnknownDataset
from shared.validation import FileFormat, ValidationReport, validate_file

log = logging.getLogger(__name__)

# Above this, a file is validated by a managed job (see README, "Validation"): the
# function's /tmp is sized for the download plus the curated copy of a file this large
# (shared.topology.validate_tmp_mb), and 2 GiB of CSV validates well within 15 minutes.
DEFAULT_INLINE_MAX_BYTES = 2 * 1024**3
DEFAULT_CHUNK_ROWS = 100_000

# A managed job that ended without a result is answered with one of the reasons
# VALIDATION_JOB_FAILED, _STOPPED or _NO_RESULT (platform reasons: uploading the same bytes
# again starts a new attempt, a new job; see ValidateService.handle).
_DONE = {"validated", "rejected", "failed"}
# A job that ended is settled by the sweep only this long after its hand-off, so that the
# sweep does not race the end event on its ordinary path (either one settles the row, the
# other finds it done; this only keeps them from working at the same time).
_ENDED: dict[str, Literal["Completed", "Failed", "Stopped"]] = {
    "Completed": "Completed",
    "Failed": "Failed",
    "Stopped": "Stopped",
}
LOST_END_GRACE = timedelta(minutes=15)
# A job's stopping condition is on how long it has been running (SageMaker's
# ProcessingStoppingCondition, Azure ML's limits.timeout), and the hand-off is earlier than
# that by the time its instances take to start and its input to be copied in: an
# InProgress job is stopped only once past its stopping condition plus this margin.
JOB_START_MARGIN = timedelta(minutes=30)
# An event carries at most this much of a message, the rest is in the report: with every
# character escaped as JSON can (12 bytes for a surrogate pair) and the base64 that
# Event Grid writes to a Storage queue, it stays far under the 64 KB of a queue message
# (fact azure.storage.queue_message_max_bytes) and EventBridge's 256 KB entry.
MAX_EVENT_MESSAGE_CHARS = 2000


def event_message(text: str) -> str:
    """``text`` cut to what an event may carry, saying where the rest is."""
    if len(text) <= MAX_EVENT_MESSAGE_CHARS:
        return text
    tail = " ... (cut; the report has it all)"
    return text[: MAX_EVENT_MESSAGE_CHARS - len(tail)] + tail


def validate_record_id(sha256: str, attempt: int = 1) -> str:
    """The lineage row of one attempt at validating these bytes. A retry is a row of its
    own, so the failed attempt's row (a finished entry) is never written over."""
    return f"validate:{sha256}" + (f":attempt-{attempt}" if attempt > 1 else "")


def _first_event_id(sha256: str) -> str:
    """The id ingest gives the first ``DatasetIngested`` of these bytes (rows written
    before attempts were recorded carry no ``event_id``: theirs was this one)."""
    return f"ingest-{sha256[:32]}"


def job_result_ref(staged: ObjectRef, dataset: str, sha256: str) -> ObjectRef:
    """Where a managed job leaves its ``ValidationResult``: beside the staged data, under a
    prefix of its own, so the job needs to write nothing else in the staging bucket."""
    return ObjectRef(container=staged.container, key=DatasetVersion(dataset, sha256).job_result_key)


def staged_identity(staged: ObjectRef) -> tuple[str, str] | None:
    """``(dataset, sha256)`` of a content-addressed staged key, or None for any other key."""
    version = DatasetVersion.from_staged_key(staged.key)
    return (version.dataset, version.sha256) if version else None


class ValidationResult(BaseModel):
    """What validating one staged file produced: where its outputs are and, when it was
    rejected, why. A managed job leaves this as JSON at ``job_result_ref``."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    sha256: str
    spec_version: str
    ok: bool
    rows: int = 0
    curated: ObjectRef | None = None
    reference: ObjectRef | None = None
    profile: ObjectRef | None = None
    reason: str | None = None
    message: str = ""
    hint: str = ""
    failure_count: int = 0
    quarantined: ObjectRef | None = None
    report: ObjectRef | None = None


@dataclass(frozen=True)
class ValidateOutcome:
    status: Literal["validated", "rejected", "duplicate", "handed_off", "failed", "ignored"]
    report: ValidationReport | None = None
    job_name: str | None = None
    reason: str | None = None


class StagedFileValidator:
    """Validates a local copy of a staged file and writes its curated or quarantined copy.

    Storage is all it touches, so a managed job in a network with no way out but
    storage can run it."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        curated_container: str,
        quarantine_container: str,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        self._store = store
        self._curated = curated_container
        self._quarantine = quarantine_container
        self._chunk_rows = chunk_rows

    def validate(
        self,
        dataset: str,
        sha256: str,
        fmt: FileFormat,
        spec: DatasetSpec,
        local: Path,
        staged: ObjectRef,
    ) -> ValidationResult:
        version = DatasetVersion(dataset, sha256)
        spec_version = spec.spec_version
        with tempfile.TemporaryDirectory(prefix="dhow-validate-") as tmp:
            run = validate_file(
                local,
                fmt,
                spec,
                chunk_rows=self._chunk_rows,
                out_dir=Path(tmp),
                seed=int(sha256[:8], 16),
            )
            if not run.report.ok:
                return self.quarantine(run.report, sha256, staged, local)
            assert run.curated is not None
            meta = {"sha256": sha256, "spec_version": spec_version}
            curated = ObjectRef(container=self._curated, key=version.curated_key)
            self._store.upload_file(curated, run.curated, meta)
            reference = None
            if run.reference is not None:
                reference = ObjectRef(container=self._curated, key=version.reference_key)
                self._store.upload_file(reference, run.reference, meta)
            profile = ObjectRef(container=self._curated, key=version.profile_key)
            self._store.put_bytes(
                profile,
                json.dumps(run.profile, indent=2).encode(),
                meta,
                content_type="application/json",
            )
        return ValidationResult(
            dataset=dataset,
            sha256=sha256,
            spec_version=spec_version,
            ok=True,
            rows=run.report.rows_checked,
            curated=curated,
            reference=reference,
            profile=profile,
        )

    def quarantine(
        self, report: ValidationReport, sha256: str, staged: ObjectRef, local: Path | None
    ) -> ValidationResult:
        """Copy the file to quarantine with its report beside it (the staged copy stays)."""
        assert report.reason is not None
        name = staged.key.rsplit("/", 1)[-1]
        version = DatasetVersion(report.dataset, sha256)
        quarantined = ObjectRef(container=self._quarantine, key=version.quarantined_key(name))
        report_ref = ObjectRef(container=self._quarantine, key=version.quarantine_report_key(name))
        meta = {"sha256": sha256, "reason": report.reason}
        # The bytes are on disk already: upload them rather than read them from staging again.
        if local is not None:
            self._store.upload_file(quarantined, local, meta)
        else:
            self._store.copy(staged, quarantined, meta)
        self._store.put_bytes(
            report_ref,
            report.model_dump_json(indent=2).encode(),
            {"sha256": sha256},
            content_type="application/json",
        )
        return ValidationResult(
            dataset=report.dataset,
            sha256=sha256,
            spec_version=report.spec_version,
            ok=False,
            rows=report.rows_checked,
            reason=report.reason,
            message=report.message,
            hint=report.hint,
            failure_count=report.failure_count,
            quarantined=quarantined,
            report=report_ref,
        )


@dataclass(frozen=True)
class _Work:
    """The facts of one validation that its announcement needs (from the event or the row)."""

    dataset: str
    sha256: str
    correlation_id: str
    source: ObjectRef
    staged: ObjectRef
    attempt: int = 1

    @property
    def event_suffix(self) -> str:
        # A retry's answer is an event of its own, not a repeat of the failed attempt's.
        return f"-r{self.attempt}" if self.attempt > 1 else ""


class ValidateService:
    """Validates one staged dataset version against its spec. See the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        bus: EventBus,
        lineage: LineageStore,
        *,
        curated_container: str,
        quarantine_container: str,
        specs: SpecCatalog | None = None,
        inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        claim_seconds: int = 900,
        jobs: ValidationJobLauncher | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._lineage = lineage
        self._specs = specs or SpecCatalog()
        self._inline_max = inline_max_bytes
        self._claim = timedelta(seconds=claim_seconds)
        self._jobs = jobs
        self._files = StagedFileValidator(
            store,
            curated_container=curated_container,
            quarantine_container=quarantine_container,
            chunk_rows=chunk_rows,
        )

    def handle(self, event: DatasetIngested) -> ValidateOutcome:
        """Validate the staged file of ``event`` inline, or hand it to a managed job."""
        spec: DatasetSpec | None = None
        unknown: UnknownDataset | None = None
        try:
            spec = self._specs.current(event.dataset)
        except UnknownDataset as exc:
            unknown = exc
        spec_version = spec.spec_version if spec else "none"
        attempt = 1
        claimed = self._claim_attempt(event, spec_version, attempt)
        # A managed job that failed for a platform reason ("failed", not a "rejected" file)
        # is retried when the bytes are uploaded again: ingest announces the new upload
        # with an id of its own, and each attempt is a row and a job name of its own. A
        # redelivery of the event an attempt was started by finds that attempt.
        while (
            claimed.done
            and claimed.record.status == "failed"
            and claimed.record.attributes.get("event_id", _first_event_id(event.sha256))
            != event.event_id
        ):
            attempt += 1
            claimed = self._claim_attempt(event, spec_version, attempt)
        work = _Work(
            event.dataset,
            event.sha256,
            event.correlation_id,
            event.source,
            event.staged,
            int(claimed.record.attributes.get("attempt", 1)),
        )
        if claimed.done:
            self._finish_move(claimed, work)
            return ValidateOutcome(status="duplicate")
        if unknown is not None:
            report = ValidationReport(
                dataset=event.dataset,
                spec_version="none",
                ok=False,
                reason=unknown.reason,
                message=unknown.message,
                hint=unknown.hint,
            )
            result = self._files.quarantine(report, event.sha256, event.staged, None)
            return self._announce(work, result, claimed)
        assert spec is not None
        # Kept before the work starts, for the inline path and a managed job alike: every
        # later stage reads the spec by the version this validation announces.
        self._specs.pin(spec)
        if event.size_bytes > self._inline_max:
            return self._hand_off(event, spec_version, claimed)
        # Validating up to the inline limit takes minutes, longer than a claim window
        # derived from Azure's 30 s retries: the claim is renewed while the work runs.
        with (
            renewing(self._lineage, claimed, self._claim),
            tempfile.TemporaryDirectory(prefix="dhow-staged-") as tmp,
        ):
            path = Path(tmp) / f"staged.{event.format}"
            self._store.download(event.staged, path)
            result = self._files.validate(
                event.dataset, event.sha256, event.format, spec, path, event.staged
            )
        return self._announce(work, result, claimed)

    def _claim_attempt(self, event: DatasetIngested, spec_version: str, attempt: int) -> Claim:
        row = ValidateRecord(
            dataset=event.dataset,
            record_id=validate_record_id(event.sha256, attempt),
            status="claimed",
            attributes={
                "sha256": event.sha256,
                "spec_version": spec_version,
                "source": event.source.uri,
                "staged": event.staged.uri,
                "ingest_record": f"ingest:{event.sha256}",
                "correlation_id": event.correlation_id,
                "event_id": event.event_id,
                "attempt": attempt,
            },
        )
        return claim(self._lineage, row, self._claim, done_statuses={*_DONE, "handed_off"})

    def finish_job(self, ended: ValidationJobEnded) -> ValidateOutcome:
        """A managed job ended: announce its result, or answer the uploader that it failed."""
        ident = staged_identity(ended.staged)
        if ident is None:
            log.warning("job %s did not validate a staged key; ignored", ended.job_name)
            return ValidateOutcome(status="ignored", job_name=ended.job_name)
        dataset, sha = ident
        # The job's name says which attempt it was (validation_attempt_suffix).
        attempt = validation_attempt_of(ended.job_name)
        row = self._lineage.get(dataset, validate_record_id(sha, attempt))
        recorded = row.attributes.get("job_name") if row is not None else None
        # A row still "claimed" with no job recorded is a hand-off that crashed (or is still
        # running) between launching the job and recording it: the job's end is the only
        # word that job will send, so it is kept (backing off while the claim is fresh, taking
        # it over once stale) rather than dropped, which left the row to a redelivery that
        # found the job's name again and recorded it "handed_off", done, never answered.
        unrecorded = row is not None and row.status == "claimed" and recorded is None
        if row is None or (recorded != ended.job_name and not unrecorded):
            # Not the job this version was handed to (or not one we started): not ours.
            log.warning("job %s is not the job of %s %s; ignored", ended.job_name, dataset, sha)
            return ValidateOutcome(status="ignored", job_name=ended.job_name)
        claimed = claim(
            self._lineage,
            row,
            self._claim,
            done_statuses=_DONE,
            handover_statuses=frozenset({"handed_off"}),
        )
        attrs = claimed.record.attributes
        work = _Work(
            dataset,
            sha,
            str(attrs["correlation_id"]),
            ObjectRef.from_uri(str(attrs["source"])),
            ObjectRef.from_uri(str(attrs["staged"])),
            attempt,
        )
        if claimed.done:
            self._finish_move(claimed, work)
            return ValidateOutcome(status="duplicate", job_name=ended.job_name)
        detail = ended.failure_reason or ""
        if ended.status == "Completed":
            try:
                return self._announce(work, self._read_result(work), claimed)
            except ObjectMissing:
                reason = Reason.VALIDATION_JOB_NO_RESULT
        elif ended.status == "Stopped":
            reason = Reason.VALIDATION_JOB_STOPPED
        else:
            reason = Reason.VALIDATION_JOB_FAILED
        return self._job_failed(work, claimed, ended, reason, detail)

    def sweep(self, dataset: str, now: datetime | None = None) -> list[ValidateOutcome]:
        """Settle ``dataset``'s validations still handed to a managed job, asking the
        platform rather than waiting for an end event that may never come.

        A job that ended (Completed, Failed, Stopped) is finished as its end event would
        have finished it; a job the platform does not know is answered as failed; a job
        still running past its own stopping condition (``max_runtime_s``, as the launcher
        set it) is stopped and answered as stopped. Through ``finish_job``, so whichever
        of the sweep and a late end event comes second finds the row done."""
        jobs = self._jobs
        if jobs is None:
            return []
        now = now or claims.utcnow()
        outcomes: list[ValidateOutcome] = []
        for row in self._lineage.list(dataset):
            job = row.attributes.get("job_name")
            if row.kind != LineageKind.VALIDATE or row.status != "handed_off" or not job:
                continue
            since = row.attributes.get("handed_off_at")
            age = now - (datetime.fromisoformat(since) if since else row.updated_at)
            if age < LOST_END_GRACE:
                continue
            state = jobs.state(str(job))
            ended = self._settled_state(jobs, state, age)
            if ended is None:
                continue
            staged = ObjectRef.from_uri(str(row.attributes["staged"]))
            log.warning("job %s of %s: no end event came; settled as %s", job, dataset, ended[0])
            outcomes.append(
                self.finish_job(
                    ValidationJobEnded(
                        job_name=str(job),
                        status=ended[0],
                        staged=staged,
                        failure_reason=ended[1],
                    )
                )
            )
        return outcomes

    @staticmethod
    def _settled_state(
        jobs: ValidationJobLauncher, state: ValidationJobState | None, age: timedelta
    ) -> tuple[Literal["Completed", "Failed", "Stopped"], str | None] | None:
        """The end a job's state amounts to, stopping it when past its bound; None: wait."""
        if state is None:
            return None  # the launcher cannot say: its end event is the only word
        ended = _ENDED.get(state.status)
        if ended is not None:
            return ended, state.failure_reason
        if state.status == "Missing":
            return "Failed", f"the platform has no job named {state.job_name}"
        bound = jobs.max_runtime_s
        if bound is None or age < timedelta(seconds=bound) + JOB_START_MARGIN:
            return None  # running within its bound (or stopping): its end will come
        jobs.stop(state.job_name)
        return "Stopped", (
            f"still {state.status} {int(age.total_seconds())} s after it was handed off, past "
            f"its stopping condition of {bound} s; Dhow stopped it"
        )

    def _read_result(self, work: _Work) -> ValidationResult:
        ref = job_result_ref(work.staged, work.dataset, work.sha256)
        return ValidationResult.model_validate_json(b"".join(self._store.iter_chunks(ref)))

    def _job_failed(
        self, work: _Work, claimed: Claim, ended: ValidationJobEnded, reason: Reason, detail: str
    ) -> ValidateOutcome:
        hint = reason.hint
        message = f"validation job {ended.job_name} ended {ended.status}"
        if detail:
            message += f": {detail}"
        self._bus.publish(
            DatasetRejected(
                event_id=f"rejected-{work.sha256[:32]}{work.event_suffix}",
                dataset=work.dataset,
                correlation_id=work.correlation_id,
                stage="validate",
                reason=reason,
                message=event_message(f"{message}; {hint}"),
                source=work.source,
                sha256=work.sha256,
            )
        )
        complete(self._lineage, claimed, "failed", reason=reason, message=message)
        log.warning("validation job %s ended %s", ended.job_name, ended.status)
        return ValidateOutcome(status="failed", job_name=ended.job_name, reason=reason)

    def _hand_off(
        self, event: DatasetIngested, spec_version: str, claimed: Claim
    ) -> ValidateOutcome:
        if self._jobs is None:
            raise SpecInvalid(
                f"{event.size_bytes} bytes is over the inline limit of {self._inline_max} and "
                "no managed job runner is configured",
                hint="set DHOW_VALIDATE_INLINE_MAX_BYTES higher, or deploy the processing job",
            )
        job = self._jobs.launch(
            ValidationJobRequest(
                dataset=event.dataset,
                sha256=event.sha256,
                spec_version=spec_version,
                source=event.source,
                staged=event.staged,
                size_bytes=event.size_bytes,
                correlation_id=event.correlation_id,
                attempt=int(claimed.record.attributes.get("attempt", 1)),
            )
        )
        # The job only validates and writes; its end comes back as an event (finish_job).
        complete(
            self._lineage,
            claimed,
            "handed_off",
            job_name=job,
            handed_off_at=claims.utcnow().isoformat(),
        )
        log.info("validation handed to managed job %s", job)
        return ValidateOutcome(status="handed_off", job_name=job)

    def _announce(self, work: _Work, result: ValidationResult, claimed: Claim) -> ValidateOutcome:
        """Publish the outcome and record it; a rejected file then leaves staging."""
        if result.ok:
            assert result.curated is not None
            self._bus.publish(
                DatasetValidated(
                    event_id=f"validated-{work.sha256[:32]}{work.event_suffix}",
                    dataset=work.dataset,
                    correlation_id=work.correlation_id,
                    sha256=work.sha256,
                    rows=result.rows,
                    spec_version=result.spec_version,
                    curated=result.curated,
                    reference_profile=result.reference,
                )
            )
            complete(
                self._lineage,
                claimed,
                "validated",
                spec_version=result.spec_version,
                curated=result.curated.uri,
                reference=result.reference.uri if result.reference else None,
                profile=result.profile.uri if result.profile else None,
                rows=result.rows,
            )
            return ValidateOutcome(status="validated")
        assert result.reason is not None
        message = f"{result.message}; {result.hint}" if result.hint else result.message
        self._bus.publish(
            DatasetRejected(
                event_id=f"rejected-{work.sha256[:32]}{work.event_suffix}",
                dataset=work.dataset,
                correlation_id=work.correlation_id,
                stage="validate",
                reason=result.reason,
                message=event_message(message),
                source=work.source,
                sha256=work.sha256,
                quarantined=result.quarantined,
                report=result.report,
            )
        )
        complete(
            self._lineage,
            claimed,
            "rejected",
            reason=result.reason,
            quarantined=result.quarantined.uri if result.quarantined else None,
            report=result.report.uri if result.report else None,
            failure_count=result.failure_count,
        )
        self._finish_move(claimed, work, rejected=True)
        return ValidateOutcome(status="rejected", reason=result.reason)

    def _finish_move(self, claimed: Claim, work: _Work, *, rejected: bool = False) -> None:
        # Moving to quarantine ends with the staged delete, last, so that a crash before it
        # only leaves a copy behind, which the next delivery of the same work removes.
        if rejected or claimed.record.status == "rejected":
            self._store.delete(work.staged)
