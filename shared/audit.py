"""The audit trail: every action the platform or a person took, in one time-ordered log.

Each entry is derived from the lineage rows the functions and the CLI already write, one
entry per action: an upload, its ingest, a validation verdict, a change of spec, a
training launch (by the pipeline, a drift policy or a person), the gate, the
registration, a rollout's start and end, a rollback, a drift check and the policy action
it took. Each says who did it, what they did, to which version, why, and when.

Who, and how Dhow knows it (``principal_source``):

- ``platform``: one of Dhow's functions acted on its own, named ``dhow:<function>``;
- ``storage``: the principal the storage event names for an upload, authenticated by
  the cloud (ingest's ``uploaded_by``);
- ``claimed``: only the name an upload's metadata gives (the uploader wrote it);
- ``sts`` / ``entra``: a person's CLI action, as AWS STS (GetCallerIdentity's ARN) or
  Microsoft Entra (the token's ``oid`` and name) authenticated the caller;
- ``local``: the OS user on the local platform, which authenticates no one;
- ``unverified``: a name recorded before the CLI asked the cloud (older rows);
- ``unrecorded``: nobody is on record (a spec's author is in version control, not here).

The rows an entry comes from are append-only once finished (``FINISHED_STATUSES``; the
lineage store refuses to write over them), so the trail cannot be rewritten by the
platform's own writes. State rows that move on by design (the serving router, the drift
cooldown, the drift timer, the registry's versions) are not entries: what moved them is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.errors import DhowError
from shared.layout import DatasetVersion
from shared.lineage import LineageKind, LineageRecord, is_finished
from shared.ports import LineageStore
from shared.reasons import Reason

AuditKind = Literal[
    "upload",
    "ingest",
    "validation",
    "spec_change",
    "training_launch",
    "manual_retrain",
    "gate",
    "registration",
    "rollout",
    "rollback",
    "drift_check",
    "policy_action",
    "other",
]
AUDIT_KINDS: tuple[str, ...] = AuditKind.__args__  # type: ignore[attr-defined]
PrincipalSource = Literal[
    "platform", "storage", "claimed", "sts", "entra", "local", "unverified", "unrecorded"
]

# The prefixes the CLI writes its caller's principal with (dhow_cli.identity.caller_principal),
# so a recorded principal says how it was authenticated.
STS_PREFIX, ENTRA_PREFIX, LOCAL_PREFIX, PLATFORM_PREFIX = "arn:", "entra:", "local:", "dhow:"
# Kinds of rows that are state, not actions (see the module docstring).
STATE_KINDS = frozenset(
    {
        LineageKind.SERVING,
        LineageKind.DRIFT_POLICY,
        LineageKind.DRIFT_TIMER,
        LineageKind.MODEL_VERSION,
    }
)
CSV_COLUMNS = (
    "at",
    "dataset",
    "kind",
    "action",
    "principal",
    "principal_source",
    "version",
    "reason",
    "status",
    "finished",
    "record_id",
    "correlation_id",
)


class AuditTooLarge(DhowError):
    """More lineage rows than one audit reads at once."""

    reason = Reason.AUDIT_TOO_LARGE


class AuditEntry(BaseModel):
    """One action: who did what, to which version, why and when."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    dataset: str
    kind: AuditKind
    action: str  # what happened, in a word or two ("ingested", "started v3 canary")
    principal: str
    principal_source: PrincipalSource
    # The dataset version (shared.layout.DatasetVersion.version) or the model version (vN).
    version: str | None = None
    reason: str | None = None  # the reason code, or the person's --reason
    status: str  # the row's status
    finished: bool  # the row is final: it will not change
    record_id: str  # the lineage row this entry is read from (the evidence)
    correlation_id: str | None = None

    def csv_row(self) -> dict[str, str]:
        d = self.model_dump(mode="json")
        return {c: "" if d[c] is None else str(d[c]) for c in CSV_COLUMNS}


class AuditFilter(BaseModel):
    """Which entries to keep: each given field narrows the trail."""

    model_config = ConfigDict(frozen=True)

    dataset: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    principal: str | None = None  # a part of the principal, any case
    kinds: frozenset[str] = frozenset()

    def keeps(self, e: AuditEntry) -> bool:
        return (
            (self.dataset is None or e.dataset == self.dataset)
            and (self.since is None or e.at >= self.since)
            and (self.until is None or e.at <= self.until)
            and (self.principal is None or self.principal.lower() in e.principal.lower())
            and (not self.kinds or e.kind in self.kinds)
        )


def platform_principal(function: str) -> str:
    """A function's own identity, as the trail names it."""
    return f"{PLATFORM_PREFIX}{function}"


def principal_source(principal: str) -> PrincipalSource:
    """How a principal the CLI recorded was authenticated, read from its prefix."""
    if principal.startswith(STS_PREFIX):
        return "sts"
    if principal.startswith(ENTRA_PREFIX):
        return "entra"
    if principal.startswith(LOCAL_PREFIX):
        return "local"
    if principal.startswith(PLATFORM_PREFIX):
        return "platform"
    return "unverified"


def _s(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _at(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=fallback.tzinfo)
    return fallback


class _Entries:
    """The entries of one row; ``make`` fills in what every entry of the row shares."""

    def __init__(self, row: LineageRecord) -> None:
        self.row = row
        self.out: list[AuditEntry] = []

    def make(
        self,
        kind: AuditKind,
        action: str,
        principal: str,
        source: PrincipalSource,
        *,
        at: datetime | None = None,
        version: str | None = None,
        reason: str | None = None,
    ) -> None:
        r = self.row
        self.out.append(
            AuditEntry(
                at=at or r.updated_at,
                dataset=r.dataset,
                kind=kind,
                action=action,
                principal=principal,
                principal_source=source,
                version=version,
                reason=reason,
                status=r.status,
                finished=is_finished(r.kind, r.status),
                record_id=r.record_id,
                correlation_id=_s(r.attributes.get("correlation_id")),
            )
        )


def _requester(value: Any, platform: str) -> tuple[str, PrincipalSource]:
    """Who asked for an action: the person the CLI recorded, else the function itself."""
    who = _s(value)
    if who is None or who in ("schedule", "drift"):
        return platform_principal(platform), "platform"
    return who, principal_source(who)


def entries_of(row: LineageRecord) -> list[AuditEntry]:
    """The actions one lineage row records (none for a state row)."""
    a, e = row.attributes, _Entries(row)
    sha = _s(a.get("sha256"))
    # Only ingest rows record "version"; the others name the dataset version by its sha256.
    version = _s(a.get("version")) or (DatasetVersion(row.dataset, sha).version if sha else None)
    reason = _s(a.get("reason"))
    if row.kind in STATE_KINDS:
        return []
    if row.kind == LineageKind.INGEST:
        by, claimed = _s(a.get("uploaded_by")), _s(a.get("claimed_uploader") or a.get("uploader"))
        who: tuple[str, PrincipalSource] = (
            (by, "storage") if by else (claimed, "claimed") if claimed else ("", "unrecorded")
        )
        e.make(
            "upload",
            f"uploaded {a.get('source') or ''}".strip(),
            *who,
            at=_at(a.get("uploaded_at"), row.created_at),
            version=version,
            reason=f"claims to be {claimed}" if by and claimed and claimed != by else None,
        )
        e.make("ingest", row.status, platform_principal("ingest"), "platform", version=version)
    elif row.kind == LineageKind.INGEST_REJECTED:
        e.make("ingest", "rejected", platform_principal("ingest"), "platform", reason=reason)
    elif row.kind == LineageKind.VALIDATE:
        job = _s(a.get("job_name"))
        action = row.status + (f" (job {job})" if job else "")
        spec = _s(a.get("spec_version"))
        e.make(
            "validation",
            action,
            platform_principal("validate"),
            "platform",
            version=f"{version}@{spec}" if spec else version,
            reason=reason,
        )
    elif row.kind == LineageKind.TRAIN:
        who = _requester(a.get("requested_by"), "train-launch")
        manual = who[1] != "platform"
        why = reason or (
            f"drift policy ({a.get('run_tag')})"
            if a.get("requested_by") == "drift"
            else None
            if manual
            else "dataset validated"
        )
        e.make(
            "manual_retrain" if manual else "training_launch",
            f"launched {a.get('job_name')} on {a.get('instance_type')}",
            *who,
            at=row.created_at,
            version=version,
            reason=why,
        )
    elif row.kind == LineageKind.REGISTER:
        model = f"v{a['model_version']}" if a.get("model_version") is not None else None
        gate = _s(a.get("gate")) or reason
        e.make(
            "gate",
            row.status,
            platform_principal("register"),
            "platform",
            version=model or version,
            reason=gate,
        )
        if model is not None:
            e.make(
                "registration",
                f"registered {model} {'Approved' if row.status == 'approved' else 'Rejected'}",
                platform_principal("register"),
                "platform",
                version=model,
                reason=gate,
            )
    elif row.kind == LineageKind.DEPLOY:
        model = f"v{a.get('model_version')}"
        prev = a.get("previous_version")
        e.make(
            "rollout",
            f"started {model} ({a.get('strategy') or 'rollout'}, from "
            f"{'v' + str(prev) if prev is not None else 'nothing'})",
            platform_principal("deploy"),
            "platform",
            at=row.created_at,
            version=model,
        )
        if is_finished(row.kind, row.status):
            e.make(
                "rollout",
                row.status,
                platform_principal("deploy"),
                "platform",
                at=_at(a.get("ended_at"), row.updated_at),
                version=model,
                reason=reason,
            )
    elif row.kind == LineageKind.ROLLBACK:
        who = _requester(a.get("requested_by"), "deploy")
        e.make(
            "rollback",
            f"v{a.get('from_version')} -> v{a.get('to_version')}",
            *who,
            at=row.created_at,
            version=f"v{a.get('to_version')}",
            reason=_s(a.get("why")),
        )
    elif row.kind == LineageKind.DRIFT_ACTION:
        # Done: its rollback row is the entry. Otherwise the policy's rollback is on
        # record only here (it failed, or is under way).
        if row.status != "done":
            e.make(
                "rollback",
                f"drift policy rollback {row.status}",
                platform_principal("deploy"),
                "platform",
                reason=reason or f"drift check {a.get('check_id')}",
            )
    elif row.kind == LineageKind.DRIFT:
        who = _requester(a.get("requested_by"), "drift-check")
        model = f"v{a['model_version']}" if a.get("model_version") is not None else None
        cols = a.get("drifted_columns") or []
        e.make(
            "drift_check",
            row.status,
            *who,
            version=model,
            reason=f"drift in {', '.join(cols)}" if cols else _s(a.get("note")),
        )
        if a.get("action") in ("retrain", "rollback"):
            e.make(
                "policy_action",
                f"{a['action']} requested",
                platform_principal("drift-check"),
                "platform",
                version=model,
                reason=f"policy {a.get('policy')}: drift in {', '.join(cols)}",
            )
    else:
        e.make("other", f"{row.kind} {row.status}", "", "unrecorded", reason=reason)
    return e.out


def spec_changes(rows: Iterable[LineageRecord]) -> list[AuditEntry]:
    """A spec change, as the first validation under a new ``spec_version`` shows it.

    Specs deploy with the stack, not through a function: who changed one is in version
    control, and the trail says when the platform first used it."""
    out: list[AuditEntry] = []
    last: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: (r.dataset, r.created_at)):
        spec = _s(row.attributes.get("spec_version"))
        if row.kind != LineageKind.VALIDATE or spec is None or spec == "none":
            continue
        before = last.get(row.dataset)
        last[row.dataset] = spec
        if before is None or before == spec:
            continue
        e = _Entries(row)
        e.make(
            "spec_change",
            f"spec {before} -> {spec}",
            "",
            "unrecorded",
            at=row.created_at,
            version=spec,
            reason="first validation under the new spec",
        )
        out.extend(e.out)
    return out


class AuditTrail:
    """Reads the trail from the lineage store: one dataset's rows, or every row by a
    paged scan, bounded by ``max_rows`` (past it, the read stops with ``AuditTooLarge``
    rather than answer from part of the table)."""

    def __init__(self, lineage: LineageStore, *, max_rows: int = 200_000, page_size: int = 500):
        self._lineage = lineage
        self._max = max_rows
        self._page = page_size

    def _rows(self, dataset: str | None) -> Iterator[LineageRecord]:
        if dataset is not None:
            yield from self._lineage.list(dataset)
            return
        cursor: str | None = None
        read = 0
        while True:
            page = self._lineage.scan(cursor, self._page)
            read += len(page.records)
            if read > self._max:
                raise AuditTooLarge(
                    f"the lineage table has more than {self._max} rows",
                    hint="narrow the audit to one dataset with --dataset",
                )
            yield from page.records
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def entries(self, flt: AuditFilter | None = None) -> list[AuditEntry]:
        """The entries that ``flt`` keeps, oldest first."""
        flt = flt or AuditFilter()
        rows = list(self._rows(flt.dataset))
        found = [x for r in rows for x in entries_of(r)] + spec_changes(rows)
        kept = [x for x in found if flt.keeps(x)]
        return sorted(kept, key=lambda x: (x.at, x.dataset, x.record_id, x.kind))


def to_csv(entries: Iterable[AuditEntry]) -> str:
    """The entries as CSV, one row each, with a header (for a spreadsheet or an auditor)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for x in entries:
        writer.writerow(x.csv_row())
    return buf.getvalue()
