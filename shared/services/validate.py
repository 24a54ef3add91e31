"""Validate: a staged dataset version becomes curated data, or a quarantined file with a report.

On ``DatasetIngested``: load the dataset's spec, claim the work in lineage
(redeliveries do nothing), and either hand a file above the inline limit to a
managed job, or download it, validate it in chunks and then

- pass: write ``curated/.../data.parquet``, ``reference.parquet`` (the drift
  reference sample) and ``profile.json``; emit ``DatasetValidated``;
- fail: move the staged file to the quarantine bucket, write
  ``<key>.report.json`` beside it, emit ``DatasetRejected``.

The raw upload is never touched: nothing is ever dropped.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from shared.events import DatasetIngested, DatasetRejected, DatasetValidated, ObjectRef
from shared.ports import (
    EventBus,
    LineageRecord,
    LineageStore,
    ObjectStore,
    ValidationJobLauncher,
    ValidationJobRequest,
)
from shared.services.claims import Claim, claim, complete
from shared.specs import SpecInvalid, UnknownDataset, load_spec
from shared.topology import DATASETS_PREFIX
from shared.validation import ValidationReport, validate_file

log = logging.getLogger(__name__)

# Above this, a file is validated by a managed job (see README, "Validation"):
# Lambda's /tmp holds at most 10 GiB for the download plus the curated copy, and
# at the measured throughput 2 GiB of CSV validates in well under its 15 minutes.
DEFAULT_INLINE_MAX_BYTES = 2 * 1024**3
DEFAULT_CHUNK_ROWS = 100_000


def validate_record_id(sha256: str) -> str:
    return f"validate:{sha256}"


@dataclass(frozen=True)
class ValidateOutcome:
    status: Literal["validated", "rejected", "duplicate", "handed_off"]
    report: ValidationReport | None = None
    job_name: str | None = None


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
        specs_dir: str | Path | None = None,
        inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        claim_seconds: int = 900,
        jobs: ValidationJobLauncher | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._lineage = lineage
        self._curated = curated_container
        self._quarantine = quarantine_container
        self._specs = specs_dir
        self._inline_max = inline_max_bytes
        self._chunk_rows = chunk_rows
        self._claim = timedelta(seconds=claim_seconds)
        self._jobs = jobs

    def handle(self, event: DatasetIngested, *, local_copy: Path | None = None) -> ValidateOutcome:
        """Validate the staged file (or ``local_copy`` of it, inside a managed job)."""
        base = f"{DATASETS_PREFIX}{event.dataset}/sha256={event.sha256}"
        try:
            spec = load_spec(event.dataset, self._specs)
            spec_version = spec.spec_version
        except UnknownDataset as exc:
            spec, spec_version = None, "none"
            unknown: UnknownDataset | None = exc
        else:
            unknown = None
        row = LineageRecord(
            dataset=event.dataset,
            record_id=validate_record_id(event.sha256),
            kind="validate",
            status="claimed",
            attributes={
                "sha256": event.sha256,
                "spec_version": spec_version,
                "source": event.source.uri,
                "staged": event.staged.uri,
                "ingest_record": f"ingest:{event.sha256}",
                "correlation_id": event.correlation_id,
            },
        )
        # Inside the managed job (``local_copy``), the handed-off row is ours to finish.
        in_job = local_copy is not None
        claimed = claim(
            self._lineage,
            row,
            self._claim,
            done_statuses={"validated", "rejected"}
            if in_job
            else {"validated", "rejected", "handed_off"},
            handover_statuses=frozenset({"handed_off"}) if in_job else frozenset(),
        )
        if claimed.done:
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
            return self._reject(event, base, report, claimed)
        assert spec is not None
        if local_copy is None and event.size_bytes > self._inline_max:
            return self._hand_off(event, spec_version, claimed)
        with tempfile.TemporaryDirectory(prefix="dhow-validate-") as tmp:
            work = Path(tmp)
            path = local_copy or work / f"staged.{event.format}"
            if local_copy is None:
                self._store.download(event.staged, path)
            run = validate_file(
                path,
                event.format,
                spec,
                chunk_rows=self._chunk_rows,
                out_dir=work,
                seed=int(event.sha256[:8], 16),
            )
            if not run.report.ok:
                return self._reject(event, base, run.report, claimed)
            assert run.curated is not None
            curated = ObjectRef(container=self._curated, key=f"{base}/data.parquet")
            meta = {"sha256": event.sha256, "spec_version": spec_version}
            self._store.upload_file(curated, run.curated, meta)
            reference = None
            if run.reference is not None:
                reference = ObjectRef(container=self._curated, key=f"{base}/reference.parquet")
                self._store.upload_file(reference, run.reference, meta)
            profile = ObjectRef(container=self._curated, key=f"{base}/profile.json")
            self._store.put_bytes(profile, json.dumps(run.profile, indent=2).encode(), meta)
        self._bus.publish(
            DatasetValidated(
                event_id=f"validated-{event.sha256[:32]}",
                dataset=event.dataset,
                correlation_id=event.correlation_id,
                sha256=event.sha256,
                rows=run.report.rows_checked,
                spec_version=spec_version,
                curated=curated,
                reference_profile=reference,
            )
        )
        complete(
            self._lineage,
            claimed,
            "validated",
            curated=curated.uri,
            reference=reference.uri if reference else None,
            profile=profile.uri,
            rows=run.report.rows_checked,
        )
        return ValidateOutcome(status="validated", report=run.report)

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
            )
        )
        # The job re-runs this service with the file at hand; it owns the row from now on.
        complete(self._lineage, claimed, "handed_off", job_name=job)
        log.info("validation handed to managed job %s", job)
        return ValidateOutcome(status="handed_off", job_name=job)

    def _reject(
        self, event: DatasetIngested, base: str, report: ValidationReport, claimed: Claim
    ) -> ValidateOutcome:
        quarantined = ObjectRef(container=self._quarantine, key=f"{base}/data.{event.format}")
        report_ref = ObjectRef(container=self._quarantine, key=f"{quarantined.key}.report.json")
        # Move = copy, then delete; a retry after a crash finds the copy already there.
        if self._store.exists(event.staged):
            if not self._store.exists(quarantined):
                self._store.copy(
                    event.staged,
                    quarantined,
                    {"sha256": event.sha256, "reason": report.reason or ""},
                )
            self._store.delete(event.staged)
        self._store.put_bytes(
            report_ref, report.model_dump_json(indent=2).encode(), {"sha256": event.sha256}
        )
        assert report.reason is not None
        self._bus.publish(
            DatasetRejected(
                event_id=f"rejected-{event.sha256[:32]}",
                dataset=event.dataset,
                correlation_id=event.correlation_id,
                stage="validate",
                reason=report.reason,
                message=f"{report.message}; {report.hint}" if report.hint else report.message,
                source=event.source,
                sha256=event.sha256,
                quarantined=quarantined,
                report=report_ref,
            )
        )
        complete(
            self._lineage,
            claimed,
            "rejected",
            reason=report.reason,
            quarantined=quarantined.uri,
            report=report_ref.uri,
            failure_count=report.failure_count,
        )
        return ValidateOutcome(status="rejected", report=report)
