"""Ingest: turn an uploaded object into a content-addressed, recorded dataset version.

Steps, for one object under ``datasets/<name>/`` of the raw bucket:

1. refuse keys that escape the prefix, bad dataset names, empty or oversized
   objects and unsupported formats, recording the reason; the object is left
   where it is, untouched;
2. take the SHA-256 that storage verified at upload when it covers the whole
   object (S3's FULL_OBJECT checksum), else stream the bytes once to compute it
   (memory stays bounded; the function is sized for the largest upload);
3. claim the version in the lineage store, so a second delivery of the same
   bytes (S3 delivers at least once) is recognised and does nothing;
4. copy server-side to ``datasets/<name>/sha256=<hash>/data.<ext>`` in staging;
5. publish ``DatasetIngested``, then mark the lineage row done.

A crash between 3 and 5 leaves the row ``claimed``; the next delivery takes the
claim over once it is older than ``claim_seconds`` (derived from the queue's retry
schedule: ``shared.topology.claim_window_s``) and finishes the work.

Every read of the object and the copy are pinned to the bytes the event announced
(``ObjectPin``): to its version where the bucket keeps versions (S3), else to its ETag
with If-Match (Blob storage). An overwrite between two reads then cannot put one
upload's bytes under another's hash: on S3 the announced version is ingested whole; on
Azure the read fails, the outcome is ``superseded`` (``object_changed``) with nothing
staged, and the upload that replaced it is ingested from its own event.

Who uploaded is recorded twice, apart: ``uploaded_by``, the principal the storage event
names (authenticated by the cloud), and ``claimed_uploader``, what the object's metadata
says (written by the uploader, so only a claim).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared.constants import DATASET_NAME_PATTERN
from shared.errors import ObjectMissing
from shared.events import DatasetIngested, DatasetRejected, ObjectRef
from shared.identifiers import checked_correlation_id
from shared.layout import DatasetVersion
from shared.lineage import IngestRecord, IngestRejectedRecord
from shared.ports import (
    EventBus,
    LineageRecord,
    LineageStore,
    ObjectChanged,
    ObjectInfo,
    ObjectPin,
    ObjectStore,
)
from shared.reasons import Reason
from shared.services.claims import claim, complete, renewing
from shared.topology import DATASETS_PREFIX
from shared.triggers import ObjectCreated

log = logging.getLogger(__name__)

DatasetFormat = Literal["csv", "parquet", "jsonl"]
FORMATS_BY_SUFFIX: dict[str, DatasetFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_DATASET_RE = re.compile(DATASET_NAME_PATTERN)
# AWS's "safe" key characters plus space, '=' and '+'; nothing that a shell,
# URL or path join could read as a separator.
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9!_.*'()=+,-][A-Za-z0-9 !_.*'()=+,-]*$")
_PARQUET_MAGIC = b"PAR1"
UPLOAD_ID_META = "dhow_upload_id"
UPLOADER_META = "dhow_uploaded_by"


@dataclass(frozen=True)
class IngestOutcome:
    """What ingest did with one object; ``status`` is what a user or test looks at."""

    status: Literal["ingested", "duplicate", "rejected", "missing", "superseded"]
    dataset: str
    reason: Reason | None = None
    sha256: str | None = None
    staged: ObjectRef | None = None


def ingest_record_id(sha256: str) -> str:
    """The lineage row of one dataset version: its bytes are its identity."""
    return f"ingest:{sha256}"


def seen_before(lineage: LineageStore, dataset: str, sha256: str) -> LineageRecord | None:
    """The ingest row of these bytes if ingest has seen them (under any file name), else
    None. A new upload of bytes whose row is ``ingested`` does nothing (a duplicate),
    unless their validation is tried again (``revalidates``)."""
    return lineage.get(dataset, ingest_record_id(sha256))


def first_validation(lineage: LineageStore, dataset: str, sha256: str) -> LineageRecord | None:
    """The row of the first attempt at validating these bytes, or None."""
    # shared.services.validate.validate_record_id(sha256), attempt 1 (not imported: that
    # module brings pandas and pyarrow into ingest's cold start).
    return lineage.get(dataset, f"validate:{sha256}")


def revalidates(validation: LineageRecord | None) -> bool:
    """Whether a new upload of bytes already ingested is validated again, given their
    first validation's row: only when its managed job failed for a platform reason
    (``failed``); a ``rejected`` file stays rejected, and a passed one is a duplicate."""
    return validation is not None and validation.status == "failed"


def dataset_of(key: str) -> tuple[str | None, Reason | None]:
    """``(dataset, None)`` for a well-formed key, or ``(None, reason)``."""
    if not key.startswith(DATASETS_PREFIX) or "\\" in key:
        return None, Reason.KEY_OUTSIDE_PREFIX
    parts = key[len(DATASETS_PREFIX) :].split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        return None, Reason.KEY_OUTSIDE_PREFIX
    if any(not _SEGMENT_RE.match(p) for p in parts[1:]) or "%" in key:
        # Percent signs could decode to '/' or '..' somewhere downstream.
        return None, Reason.KEY_OUTSIDE_PREFIX
    if not _DATASET_RE.match(parts[0]):
        return None, Reason.INVALID_DATASET_NAME
    return parts[0], None


def format_of(key: str) -> DatasetFormat | None:
    lowered = key.lower()
    for suffix, fmt in FORMATS_BY_SUFFIX.items():
        if lowered.endswith(suffix):
            return fmt
    return None


def _sniff_matches(fmt: DatasetFormat, head: bytes) -> bool:
    """A cheap look at the first bytes; the full parse is validation's job."""
    if fmt == "parquet":
        return head.startswith(_PARQUET_MAGIC)
    if head.startswith(_PARQUET_MAGIC) or b"\x00" in head:
        return False  # binary bytes in a text format
    if fmt == "jsonl":
        return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")
    return True


class IngestService:
    """Checks, hashes, stages and records one uploaded object. See the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        bus: EventBus,
        lineage: LineageStore,
        *,
        staging_container: str,
        max_upload_bytes: int,
        claim_seconds: int = 900,
    ) -> None:
        self._store = store
        self._bus = bus
        self._lineage = lineage
        self._staging = staging_container
        self._max_bytes = max_upload_bytes
        self._claim = timedelta(seconds=claim_seconds)

    def handle(self, obj: ObjectCreated) -> IngestOutcome:
        dataset, reason = dataset_of(obj.key)
        if dataset is None:
            assert reason is not None
            return self._reject(obj, "_unsorted", reason, f"key {obj.key!r} is not accepted", None)
        try:
            info = self._store.head(
                obj.ref, pin=ObjectPin(version_id=obj.version_id, etag=obj.etag)
            )
        except ObjectMissing:
            # Deleted (or overwritten and then deleted) before we got to it:
            # there is nothing left to ingest, and retrying will not change that.
            log.warning("object vanished before ingest", extra={"key": obj.key})
            return IngestOutcome(status="missing", dataset=dataset)
        except ObjectChanged as exc:
            return self._superseded(obj, dataset, exc)
        # What HEAD saw is what every later read must see. The event's version or ETag
        # wins; HEAD's fills in what the event did not carry (a test, a hand-made event).
        pin = ObjectPin(version_id=obj.version_id or info.version_id, etag=obj.etag or info.etag)
        try:
            return self._checked(obj, dataset, info, pin)
        except ObjectChanged as exc:
            return self._superseded(obj, dataset, exc)

    def _superseded(self, obj: ObjectCreated, dataset: str, exc: ObjectChanged) -> IngestOutcome:
        # Not a rejection: the bytes this event announced are gone, and the upload that
        # replaced them has its own event, which gets its own answer. Nothing was staged.
        log.warning(
            "object overwritten during ingest",
            extra={"dataset": dataset, "key": obj.key, "reason": exc.reason},
        )
        return IngestOutcome(status="superseded", dataset=dataset, reason=exc.reason)

    def _checked(
        self, obj: ObjectCreated, dataset: str, info: ObjectInfo, pin: ObjectPin
    ) -> IngestOutcome:
        fmt = format_of(obj.key)
        if info.size == 0:
            return self._reject(obj, dataset, Reason.EMPTY_OBJECT, "the object is empty", info)
        if info.size > self._max_bytes:
            return self._reject(
                obj,
                dataset,
                Reason.OBJECT_TOO_LARGE,
                f"{info.size} bytes is over the limit of {self._max_bytes}",
                info,
            )
        if fmt is None:
            return self._reject(
                obj,
                dataset,
                Reason.UNSUPPORTED_FORMAT,
                f"{obj.key!r} has no supported extension",
                info,
            )
        if not _sniff_matches(fmt, self._store.read_prefix(obj.ref, 512, pin=pin)):
            return self._reject(
                obj, dataset, Reason.FORMAT_MISMATCH, f"content does not look like {fmt}", info
            )
        # Storage checked this hash against the bytes at upload: a 5 GiB upload that
        # carries one is not read again.
        sha = info.sha256 or self._sha256(obj.ref, pin)
        return self._ingest(obj, dataset, fmt, info, sha, pin)

    def _sha256(self, ref: ObjectRef, pin: ObjectPin) -> str:
        digest = hashlib.sha256()
        for chunk in self._store.iter_chunks(ref, pin=pin):
            digest.update(chunk)
        return digest.hexdigest()

    def _ingest(
        self,
        obj: ObjectCreated,
        dataset: str,
        fmt: DatasetFormat,
        info: ObjectInfo,
        sha: str,
        pin: ObjectPin,
    ) -> IngestOutcome:
        now = datetime.now(UTC)
        claimed_uploader = info.metadata.get(UPLOADER_META)
        uploaded_by = obj.uploader
        # Kept for readers of the old field; uploaded_by is the one to trust.
        uploader = claimed_uploader or uploaded_by
        # The uploader sets this id; it reaches the managed jobs' commands, so only the
        # plain form passes (shared.identifiers).
        correlation = (
            checked_correlation_id(info.metadata.get(UPLOAD_ID_META), source=UPLOAD_ID_META)
            or f"sha256-{sha[:16]}"
        )
        version = DatasetVersion(dataset, sha)
        staged = ObjectRef(container=self._staging, key=version.staged_key(fmt))
        row = IngestRecord(
            dataset=dataset,
            record_id=ingest_record_id(sha),
            status="claimed",
            attributes={
                "version": version.version,
                "sha256": sha,
                "size_bytes": info.size,
                "format": fmt,
                "source": obj.ref.uri,
                "source_etag": info.etag,
                "source_version_id": pin.version_id,
                "staged": staged.uri,
                "uploader": uploader,
                "uploaded_by": uploaded_by,
                "claimed_uploader": claimed_uploader,
                "correlation_id": correlation,
                "uploaded_at": obj.event_time.isoformat() if obj.event_time else None,
            },
            created_at=now,
            updated_at=now,
        )
        claimed = claim(
            self._lineage,
            row,
            self._claim,
            done_statuses={"ingested"},
            # An attempt whose source was overwritten under it holds nothing back.
            handover_statuses=frozenset({"superseded"}),
        )
        retry = self._revalidation(claimed.record, sha, obj, info, pin) if claimed.done else ""
        if claimed.done and not retry:
            log.info("duplicate delivery", extra={"dataset": dataset, "sha256": sha})
            return IngestOutcome(status="duplicate", dataset=dataset, sha256=sha, staged=staged)
        # After a takeover, the first delivery's facts stand (a retry answers its own upload).
        if not retry:
            correlation = str(claimed.record.attributes.get("correlation_id") or correlation)
        first = claimed.record.attributes
        uploader = first.get("uploader") or uploader
        uploaded_by = first.get("uploaded_by", uploaded_by)
        claimed_uploader = first.get("claimed_uploader", claimed_uploader)

        # A copy of a large upload can outlast a window sized to Azure's 30 s retries.
        with renewing(self._lineage, claimed, self._claim):
            if not self._store.exists(staged):
                try:
                    self._store.copy(
                        obj.ref,
                        staged,
                        metadata={"sha256": sha, "source": obj.ref.uri, "dataset": dataset},
                        source_pin=pin,
                    )
                except ObjectChanged:
                    # The claim is handed back, so that the same bytes uploaded again (under
                    # any key) are ingested at once rather than after the claim window.
                    complete(self._lineage, claimed, "superseded")
                    raise
        self._bus.publish(
            DatasetIngested(
                # Derived from the bytes, so consumers can de-duplicate a re-publish; a
                # retry's from its upload too, so validate tells it from a redelivery.
                event_id=f"ingest-{sha[:32]}{retry}",
                dataset=dataset,
                correlation_id=correlation,
                sha256=sha,
                size_bytes=info.size,
                format=fmt,
                source=obj.ref,
                staged=staged,
                uploader=uploader,
                uploaded_by=uploaded_by,
                claimed_uploader=claimed_uploader,
            )
        )
        if not claimed.done:  # a retry's row was finished by the first upload
            complete(self._lineage, claimed, "ingested")
        return IngestOutcome(status="ingested", dataset=dataset, sha256=sha, staged=staged)

    def _revalidation(
        self, first: LineageRecord, sha: str, obj: ObjectCreated, info: ObjectInfo, pin: ObjectPin
    ) -> str:
        """For bytes already ingested: the event id suffix of a new upload of them whose
        validation's managed job failed for a platform reason (``failed``; a ``rejected``
        file stays rejected), which validate retries as a new attempt; "" for a duplicate
        (a redelivery of the upload that was ingested, or bytes with any other answer)."""
        if not revalidates(first_validation(self._lineage, first.dataset, sha)):
            return ""
        upload = (obj.ref.uri, pin.version_id, info.etag)
        seen = first.attributes
        if upload == (seen.get("source"), seen.get("source_version_id"), seen.get("source_etag")):
            return ""
        return "-" + hashlib.sha256("\n".join(map(str, upload)).encode()).hexdigest()[:12]

    def _reject(
        self,
        obj: ObjectCreated,
        dataset: str,
        reason: Reason,
        message: str,
        info: ObjectInfo | None,
    ) -> IngestOutcome:
        etag = info.etag if info else (obj.etag or "")
        ident = hashlib.sha256(f"{obj.key}\n{etag}".encode()).hexdigest()[:32]
        correlation = (info.metadata.get(UPLOAD_ID_META) if info else None) or f"reject-{ident}"
        hint = reason.hint
        row = IngestRejectedRecord(
            dataset=dataset,
            record_id=f"rejected:{ident}",
            status="rejecting",
            attributes={
                "reason": reason,
                "message": message,
                "hint": hint,
                "source": obj.ref.uri,
                "source_etag": etag,
                "size_bytes": info.size if info else obj.size,
                "correlation_id": correlation,
            },
        )
        # "rejecting" until the event is out, so a crash before publishing is
        # finished by the retry instead of leaving the uploader without an answer.
        existing = (
            None if self._lineage.put_if_absent(row) else self._lineage.get(dataset, row.record_id)
        )
        current = existing or row
        if current.status == "rejecting":
            self._bus.publish(
                DatasetRejected(
                    event_id=f"reject-{ident}",
                    dataset=dataset,
                    correlation_id=correlation,
                    stage="ingest",
                    reason=reason,
                    message=f"{message}; {hint}",
                    source=obj.ref,
                )
            )
            self._lineage.replace(
                current.model_copy(update={"status": "rejected", "updated_at": datetime.now(UTC)}),
                current.revision,
            )
        log.warning("upload rejected", extra={"dataset": dataset, "reason": reason, "key": obj.key})
        return IngestOutcome(status="rejected", dataset=dataset, reason=reason)
