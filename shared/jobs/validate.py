"""`python -m shared.jobs.validate`: validation of a file too large for the function,
inside a managed job (SageMaker Processing, Azure ML).

The job's network reaches storage and nothing else (on AWS, a VPC whose only way out
is the S3 gateway endpoint), so the job does only what needs storage: it validates the
copy of the staged object that the job service put on local disk (``--input``), writes
the curated copy, or the quarantined copy with its report, and leaves a small result
JSON at ``job_result_ref``. The validate function reads that result when the job's end
comes back as an event, and does the lineage, the events and the staged delete.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path, PurePosixPath

from shared.errors import DhowError
from shared.events import ObjectRef
from shared.ports import ObjectStore
from shared.reasons import Reason
from shared.services.ingest import format_of
from shared.services.validate import (
    StagedFileValidator,
    ValidationResult,
    job_result_ref,
)
from shared.settings import Settings
from shared.specs import UnknownDataset, load_spec
from shared.topology import build_topology
from shared.validation import ValidationReport

log = logging.getLogger(__name__)
# SageMaker copies the first 1 KB of this file into the job's ExitMessage.
EXIT_MESSAGE = Path("/opt/ml/output/message")


class StagedCopyMissing(DhowError):
    """The job service did not put the staged object where the job was told to look."""

    reason = Reason.STAGED_COPY_MISSING


def local_copy(given: Path, staged: ObjectRef) -> Path:
    """The staged object's local copy: ``given`` itself, or the file of the staged key's
    name inside it when the job service hands over a folder."""
    if given.is_file():
        return given
    candidate = given / PurePosixPath(staged.key).name
    if candidate.is_file():
        return candidate
    found = sorted(str(p) for p in given.rglob("*")) if given.is_dir() else []
    raise StagedCopyMissing(
        f"no local copy of {staged.uri} at {given}",
        hint=f"the job's input must land at {given} or {candidate}; found {found[:10]}",
    )


def run(
    store: ObjectStore,
    settings: Settings,
    *,
    dataset: str,
    sha256: str,
    staged: ObjectRef,
    given: Path,
) -> ValidationResult:
    """Validate the local copy, write its outputs and the result; storage calls only."""
    fmt = format_of(staged.key)
    if fmt is None:
        raise StagedCopyMissing(
            f"unsupported staged key {staged.key!r}", hint="stage files through ingest"
        )
    topo = build_topology(settings.stage)
    files = StagedFileValidator(
        store,
        curated_container=topo.bucket("curated").name,
        quarantine_container=topo.bucket("quarantine").name,
        chunk_rows=settings.validate_chunk_rows,
    )
    path = local_copy(given, staged)
    try:
        spec = load_spec(dataset, settings.specs_dir)
    except UnknownDataset as exc:
        report = ValidationReport(
            dataset=dataset,
            spec_version="none",
            ok=False,
            reason=exc.reason,
            message=exc.message,
            hint=exc.hint,
        )
        result = files.quarantine(report, sha256, staged, path)
    else:
        result = files.validate(dataset, sha256, fmt, spec, path, staged)
    # Written last: its presence says every output above is in place.
    store.put_bytes(
        job_result_ref(staged, dataset, sha256),
        result.model_dump_json(indent=2).encode(),
        {"sha256": sha256},
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.jobs.validate", description=__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--sha256", required=True)
    p.add_argument("--staged", required=True, help="s3://bucket/key or container/key")
    p.add_argument("--source", required=True, help="the raw upload (for the job's record)")
    p.add_argument("--size-bytes", type=int, required=True)
    p.add_argument("--correlation-id", required=True)
    p.add_argument("--input", type=Path, required=True, help="local copy (file or directory)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from shared.wiring import build_ports

    settings = Settings.from_env()
    # Only the store is used; the lineage client is built but never called, and the job
    # is given no bus settings (it publishes nothing: the sweep announces its end).
    store = build_ports(settings, publishing=False).store
    try:
        result = run(
            store,
            settings,
            dataset=args.dataset,
            sha256=args.sha256,
            staged=ObjectRef.from_uri(args.staged),
            given=args.input,
        )
    except DhowError as exc:
        if EXIT_MESSAGE.parent.is_dir():
            EXIT_MESSAGE.write_text(f"[{exc.reason}] {exc}"[:1024])
        raise
    log.info("validation finished: %s", "validated" if result.ok else f"rejected ({result.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
