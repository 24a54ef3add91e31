"""Train-launch: a validated dataset version becomes one training job.

On ``DatasetValidated`` it reads the spec's training settings, builds the job
request (what the job learns from travels as ``dhow_*`` hyperparameters,
``shared.training_facts``, so
the job's own state-change event is enough for register), and asks the
launcher for it. The launcher is idempotent by job name, so a duplicate event
starts nothing. When no listed GPU type has quota, the answer is a
``TrainingCompleted`` of status Failed that names the quota to raise: retrying
would not help until someone raises it.

What a run learns from is the spec's ``training.learn_from``: the validated version
that triggered it (``latest``, the default), the newest ``last`` N, or every version
validated ``since`` a day; never a version validated after the one announced, so a
redelivery resolves the same set. The set's sha256s and their one fingerprint go in the
training row and the job's hyperparameters, and so into the registered version's
lineage. A drift policy's retrain whose set is the champion's own (no upload since) is
skipped and recorded (``no_new_data``): it would train the same model again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from shared.errors import DhowError
from shared.events import (
    DatasetValidated,
    DriftDetected,
    ObjectRef,
    TrainingCompleted,
    TrainingLaunched,
)
from shared.lineage import LineageKind, TrainRecord, TrainSkippedRecord
from shared.ports import EventBus, LineageRecord, LineageStore, TrainingJobRequest, TrainingLauncher
from shared.reasons import Reason
from shared.specs import LearnFrom, SpecCatalog
from shared.trainer import TRAINER_VERSION
from shared.training_facts import TrainingFacts

Backend = Literal["sagemaker", "azureml", "local"]


NO_NEW_DATA = Reason.NO_NEW_DATA


def _refusal_event_id(reason: Reason, fingerprint: str, run_tag: str) -> str:
    """The id of the failed ``TrainingCompleted`` that answers a refused launch: one per
    reason, data and run, so a redelivery re-publishes the same event."""
    what = "too-many-inputs" if reason == Reason.TOO_MANY_TRAINING_INPUTS else reason
    return f"{what}-{fingerprint[:16]}-{run_tag}"


def data_fingerprint(sha256s: Iterable[str]) -> str:
    """One digest of a set of curated versions: the same set, in any order, the same one."""
    return hashlib.sha256("\n".join(sorted(set(sha256s))).encode()).hexdigest()


DATA_VERSION_DIGITS = 12


def data_versions(sha256s: Iterable[str]) -> str:
    """The versions a run learnt from, oldest first, as its model version's lineage keeps
    them: 12 hex digits each (the job's display name's), comma-joined."""
    return ",".join(sha[:DATA_VERSION_DIGITS] for sha in sha256s)


def version_fingerprint(lineage: Mapping[str, Any]) -> str | None:
    """What a model version (or its register row) learnt from: its recorded fingerprint;
    for one trained before learn_from existed, its one curated version's."""
    if lineage.get("data_fingerprint"):
        return str(lineage["data_fingerprint"])
    sha = lineage.get("sha256")
    return data_fingerprint([str(sha)]) if sha else None


def _validated_rows(lineage: LineageStore, dataset: str) -> list[LineageRecord]:
    """Each validated version once (a retried validation is one version), oldest first."""
    newest: dict[str, LineageRecord] = {}
    for r in lineage.list(dataset):
        if (
            r.kind != LineageKind.VALIDATE
            or r.status != "validated"
            or not r.attributes.get("sha256")
        ):
            continue
        sha = str(r.attributes["sha256"])
        if sha not in newest or r.updated_at > newest[sha].updated_at:
            newest[sha] = r
    return sorted(newest.values(), key=lambda r: r.updated_at)


def _as_event(row: LineageRecord, correlation_id: str) -> DatasetValidated:
    a = row.attributes
    return DatasetValidated(
        dataset=row.dataset,
        correlation_id=correlation_id,
        sha256=str(a["sha256"]),
        rows=int(a.get("rows") or 0),
        spec_version=str(a["spec_version"]),
        curated=ObjectRef.from_uri(str(a["curated"])),
    )


def latest_validated(lineage: LineageStore, dataset: str, correlation_id: str) -> DatasetValidated:
    """The newest validated version of a dataset, as the event that announced it, for a
    retrain (by hand or by a drift policy) under a new ``correlation_id``."""
    validated = _validated_rows(lineage, dataset)
    if not validated:
        raise DhowError(
            f"{dataset} has no validated version to train on",
            reason=Reason.NOTHING_TO_TRAIN,
            hint=f"upload one: `dhow upload FILE --dataset {dataset} --wait`",
        )
    return _as_event(validated[-1], correlation_id)


def _day(at: datetime) -> Any:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).date()


@dataclass(frozen=True)
class TrainingData:
    """The curated versions one run learns from, oldest first; the last is the newest."""

    versions: tuple[DatasetValidated, ...]

    @property
    def sha256s(self) -> tuple[str, ...]:
        return tuple(v.sha256 for v in self.versions)

    @property
    def fingerprint(self) -> str:
        return data_fingerprint(self.sha256s)

    @property
    def inputs(self) -> tuple[ObjectRef, ...]:
        return tuple(v.curated for v in self.versions)


def training_data(
    lineage: LineageStore, learn_from: LearnFrom, newest: DatasetValidated
) -> TrainingData:
    """The versions ``learn_from`` names, up to and including ``newest``: none validated
    after it, so a redelivery of its event resolves the same set."""
    if learn_from.latest:
        return TrainingData((newest,))
    rows = _validated_rows(lineage, newest.dataset)
    anchor = next((r for r in rows if r.attributes["sha256"] == newest.sha256), None)
    older = [
        r
        for r in rows
        if r.attributes["sha256"] != newest.sha256
        and (anchor is None or r.updated_at <= anchor.updated_at)
    ]
    if learn_from.last is not None:
        older = older[len(older) - (learn_from.last - 1) :] if learn_from.last > 1 else []
    elif learn_from.since is not None:
        since = learn_from.since
        older = [r for r in older if _day(r.updated_at) >= since]
    return TrainingData((*(_as_event(r, newest.correlation_id) for r in older), newest))


def champion_fingerprint(lineage: LineageStore, dataset: str, model_version: str) -> str | None:
    """What model ``model_version`` learnt from, from its register row (train-launch has
    no registry port; register writes the version's number on the row it completes)."""
    for r in lineage.list(dataset):
        if (
            r.kind == LineageKind.REGISTER
            and str(r.attributes.get("model_version")) == model_version
        ):
            return version_fingerprint(r.attributes)
    return None


@dataclass(frozen=True)
class TrainLaunchOutcome:
    status: Literal["launched", "duplicate", "no_capacity", "refused", "skipped"]
    job_name: str | None = None
    reason: str | None = None


def training_request(
    event: DatasetValidated,
    specs: SpecCatalog | None = None,
    instance_type: str | None = None,
    run_tag: str = "",
    data: TrainingData | None = None,
) -> TrainingJobRequest:
    """The request for one validated version (also used by `dhow train`); ``data`` is what
    it learns from (default: that version alone). The job is built from the spec the
    version was validated under (``event.spec_version``), which is also its label."""
    spec = (specs or SpecCatalog()).get(event.dataset, event.spec_version)
    t = spec.training
    data = data or TrainingData((event,))
    identifiers = ",".join(spec.identifiers)
    hps = {k: str(v) for k, v in t.hyperparameters.items()}
    hps |= {
        "drop_columns": identifiers,
        # The trainer dedupes a union of versions by these (its rows otherwise).
        "dedupe_on": identifiers,
    }
    hps |= TrainingFacts(
        data_fingerprint=data.fingerprint,
        dataset=event.dataset,
        sha256=event.sha256,
        spec_version=event.spec_version,
        trainer_version=TRAINER_VERSION,
        curated=event.curated.uri,
        correlation_id=event.correlation_id,
    ).hyperparameters()
    return TrainingJobRequest(
        dataset=event.dataset,
        sha256=event.sha256,
        spec_version=event.spec_version,
        trainer_version=TRAINER_VERSION,
        curated=event.curated,
        target=spec.target,
        task=spec.task,
        instance_types=(instance_type,) if instance_type else tuple(t.instance_types),
        hyperparameters=hps,
        use_spot=t.use_spot,
        max_runtime_s=t.max_runtime_s,
        correlation_id=event.correlation_id,
        run_tag=run_tag,
        entrypoint=t.entrypoint,
        image=t.image,
        inputs=data.inputs if len(data.versions) > 1 else (),
        data_sha256s=data.sha256s,
    )


class TrainLaunchService:
    def __init__(
        self,
        launcher: TrainingLauncher,
        bus: EventBus,
        lineage: LineageStore,
        *,
        backend: Backend,
        specs: SpecCatalog | None = None,
    ) -> None:
        self._launcher = launcher
        self._bus = bus
        self._lineage = lineage
        self._backend: Backend = backend
        self._specs = specs or SpecCatalog()

    def on_drift(self, event: DriftDetected) -> TrainLaunchOutcome:
        """A drift policy's retrain: the latest validated version (and what the spec's
        learn_from adds), tagged with the check (one check launches one job, however often
        its event is delivered); skipped, and recorded, when that is the champion's data."""
        validated = latest_validated(self._lineage, event.dataset, event.correlation_id)
        tag = f"drift-{event.check_id or event.event_id}"
        spec = self._specs.get(validated.dataset, validated.spec_version)
        data = training_data(self._lineage, spec.training.learn_from, validated)
        champion = (
            champion_fingerprint(self._lineage, event.dataset, event.model_version)
            if event.model_version
            else None
        )
        if champion is not None and champion == data.fingerprint:
            self._lineage.put_if_absent(
                TrainSkippedRecord(
                    dataset=event.dataset,
                    record_id=f"train_skipped:{tag}",
                    status="skipped",
                    attributes={
                        "reason": NO_NEW_DATA,
                        "detail": f"no data validated since model v{event.model_version} "
                        "was trained: a retrain would learn the same rows",
                        "data_sha256s": list(data.sha256s),
                        "data_fingerprint": data.fingerprint,
                        "model_version": event.model_version,
                        "correlation_id": event.correlation_id,
                        "run_tag": tag,
                        "requested_by": "drift",
                    },
                )
            )
            return TrainLaunchOutcome(status="skipped", reason=NO_NEW_DATA)
        return self.handle(validated, run_tag=tag, requested_by="drift", data=data)

    def handle(
        self,
        event: DatasetValidated,
        instance_type: str | None = None,
        run_tag: str = "",
        requested_by: str | None = None,
        reason: str | None = None,
        data: TrainingData | None = None,
    ) -> TrainLaunchOutcome:
        """Launch training; ``run_tag`` and ``requested_by`` (the principal the cloud
        authenticated) mark a manual retrain, ``reason`` is the person's why; ``data``
        (default: the spec's learn_from, up to ``event``'s version) what it learns from."""
        if data is None:
            spec = self._specs.get(event.dataset, event.spec_version)
            data = training_data(self._lineage, spec.training.learn_from, event)
        req = training_request(event, self._specs, instance_type, run_tag, data)
        try:
            launched = self._launcher.launch(req)
        except DhowError as exc:
            # Answered, not retried, unless the reason is the platform's: nothing else
            # changes until someone acts (raises a quota, asks the spec's learn_from for
            # fewer uploads than the job has channels, fixes a setting).
            if exc.retried:
                raise
            refused = exc.reason != Reason.GPU_QUOTA_ZERO
            self._bus.publish(
                TrainingCompleted(
                    event_id=_refusal_event_id(exc.reason, data.fingerprint, run_tag)
                    if refused
                    else f"no-capacity-{event.sha256[:16]}",
                    dataset=event.dataset,
                    correlation_id=event.correlation_id,
                    job_name="(not launched)",
                    status="Failed",
                    reason=f"{exc.message} ({exc.hint})",
                )
            )
            return TrainLaunchOutcome(
                status="refused" if refused else "no_capacity", reason=exc.reason
            )
        if not launched.created:
            return TrainLaunchOutcome(status="duplicate", job_name=launched.job_name)
        self._lineage.put_if_absent(
            TrainRecord(
                dataset=event.dataset,
                record_id=f"train:{launched.job_name}",
                status="launched",
                attributes={
                    "job_name": launched.job_name,
                    "instance_type": launched.instance_type,
                    "backend": self._backend,
                    "sha256": event.sha256,
                    "spec_version": event.spec_version,
                    "curated": event.curated.uri,
                    # What it learns from: every curated version, oldest first.
                    "data_sha256s": list(data.sha256s),
                    "data_curated": [ref.uri for ref in data.inputs],
                    "data_fingerprint": data.fingerprint,
                    "trainer_version": TRAINER_VERSION,
                    "skipped": list(launched.skipped),
                    "correlation_id": event.correlation_id,
                    "run_tag": run_tag,
                    "requested_by": requested_by,
                    "reason": reason,
                },
            )
        )
        self._bus.publish(
            TrainingLaunched(
                event_id=f"launched-{launched.job_name}",
                dataset=event.dataset,
                correlation_id=event.correlation_id,
                sha256=event.sha256,
                spec_version=event.spec_version,
                job_name=launched.job_name,
                instance_type=launched.instance_type or "",
                backend=self._backend,
            )
        )
        return TrainLaunchOutcome(status="launched", job_name=launched.job_name)
