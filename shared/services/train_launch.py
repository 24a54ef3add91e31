"""Train-launch: a validated dataset version becomes one training job.

On ``DatasetValidated`` it reads the spec's training settings, builds the job
request (what the job learns from travels as ``dhow_*`` hyperparameters, so
the job's own state-change event is enough for register), and asks the
launcher for it. The launcher is idempotent by job name, so a duplicate event
starts nothing. When no listed GPU type has quota, the answer is a
``TrainingCompleted`` of status Failed that names the quota to raise: retrying
would not help until someone raises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.errors import DhowError
from shared.events import (
    DatasetValidated,
    DriftDetected,
    ObjectRef,
    TrainingCompleted,
    TrainingLaunched,
)
from shared.ports import EventBus, LineageRecord, LineageStore, TrainingJobRequest, TrainingLauncher
from shared.specs import load_spec
from shared.trainer import TRAINER_VERSION

Backend = Literal["sagemaker", "azureml", "local"]


def latest_validated(lineage: LineageStore, dataset: str, correlation_id: str) -> DatasetValidated:
    """The newest validated version of a dataset, as the event that announced it, for a
    retrain (by hand or by a drift policy) under a new ``correlation_id``."""
    validated = [
        r for r in lineage.list(dataset) if r.kind == "validate" and r.status == "validated"
    ]
    if not validated:
        raise DhowError(
            f"{dataset} has no validated version to train on",
            reason="nothing_to_train",
            hint=f"upload one: `dhow upload FILE --dataset {dataset} --wait`",
        )
    a = max(validated, key=lambda r: r.updated_at).attributes
    return DatasetValidated(
        dataset=dataset,
        correlation_id=correlation_id,
        sha256=str(a["sha256"]),
        rows=int(a.get("rows") or 0),
        spec_version=str(a["spec_version"]),
        curated=ObjectRef.from_uri(str(a["curated"])),
    )


@dataclass(frozen=True)
class TrainLaunchOutcome:
    status: Literal["launched", "duplicate", "no_capacity"]
    job_name: str | None = None


def training_request(
    event: DatasetValidated,
    specs_dir: str | Path | None = None,
    instance_type: str | None = None,
    run_tag: str = "",
) -> TrainingJobRequest:
    """The request for one validated version (also used by `dhow train`)."""
    spec = load_spec(event.dataset, specs_dir)
    t = spec.training
    unique = [name for name, col in spec.dataframe_schema.columns.items() if col.unique]
    hps = {k: str(v) for k, v in t.hyperparameters.items()}
    hps |= {
        "drop_columns": ",".join(unique),
        "dhow_dataset": event.dataset,
        "dhow_sha256": event.sha256,
        "dhow_spec_version": event.spec_version,
        "dhow_trainer_version": TRAINER_VERSION,
        "dhow_curated": event.curated.uri,
        "dhow_correlation_id": event.correlation_id,
    }
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
    )


class TrainLaunchService:
    def __init__(
        self,
        launcher: TrainingLauncher,
        bus: EventBus,
        lineage: LineageStore,
        *,
        backend: Backend,
        specs_dir: str | Path | None = None,
    ) -> None:
        self._launcher = launcher
        self._bus = bus
        self._lineage = lineage
        self._backend: Backend = backend
        self._specs = specs_dir

    def on_drift(self, event: DriftDetected) -> TrainLaunchOutcome:
        """A drift policy's retrain: the latest validated version, tagged with the check
        (one check launches one job, however often its event is delivered)."""
        validated = latest_validated(self._lineage, event.dataset, event.correlation_id)
        return self.handle(
            validated, run_tag=f"drift-{event.check_id or event.event_id}", requested_by="drift"
        )

    def handle(
        self,
        event: DatasetValidated,
        instance_type: str | None = None,
        run_tag: str = "",
        requested_by: str | None = None,
        reason: str | None = None,
    ) -> TrainLaunchOutcome:
        """Launch training; ``run_tag`` and ``requested_by`` (the principal the cloud
        authenticated) mark a manual retrain, ``reason`` is the person's why."""
        req = training_request(event, self._specs, instance_type, run_tag)
        try:
            launched = self._launcher.launch(req)
        except DhowError as exc:
            if exc.reason != "gpu_quota_zero":
                raise
            self._bus.publish(
                TrainingCompleted(
                    event_id=f"no-capacity-{event.sha256[:16]}",
                    dataset=event.dataset,
                    correlation_id=event.correlation_id,
                    job_name="(not launched)",
                    status="Failed",
                    reason=f"{exc.message} ({exc.hint})",
                )
            )
            return TrainLaunchOutcome(status="no_capacity")
        if not launched.created:
            return TrainLaunchOutcome(status="duplicate", job_name=launched.job_name)
        self._lineage.put_if_absent(
            LineageRecord(
                dataset=event.dataset,
                record_id=f"train:{launched.job_name}",
                kind="train",
                status="launched",
                attributes={
                    "job_name": launched.job_name,
                    "instance_type": launched.instance_type,
                    "backend": self._backend,
                    "sha256": event.sha256,
                    "spec_version": event.spec_version,
                    "curated": event.curated.uri,
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
