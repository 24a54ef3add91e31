"""Register: a finished training job becomes a model version, approved or rejected by the gate.

On a training job's end state:

- Failed or Stopped: ``TrainingCompleted`` with the status and the job's own
  failure reason; nothing is registered, nothing crashes.
- Completed: ``TrainingCompleted``, then the model artifact is opened and its
  metrics read. The gate (from the spec's ``training.gate``) asks for an
  absolute minimum of the gate metric and, when a champion exists, at most
  ``max_regression`` worse than the champion **scored on the challenger's own
  holdout rows** (so both are judged on the same data); and it refuses a challenger
  that learnt from exactly the champion's curated versions (``same_data_as_champion``):
  the same rows under the same spec and trainer make the same model, and deploying it
  would be a rollout that changes nothing. The version is
  registered with its lineage either way, Approved or Rejected, and
  ``ModelApproved`` or ``ModelRejected`` says why.

What the job learnt from travels in its hyperparameters (``dhow_*``), which
SageMaker's state-change event carries, so this step needs no lookup.

Delivered at least once: the work is claimed per training job (``register:<job>``), and
a redelivery after a crash finishes it without doing a step twice. ``TrainingCompleted``
is marked sent on the claim row; the model version is found by its job (the registry
keeps ``job_name`` in each version's lineage) before a new one is made, so a retry after
the registry write neither registers a second version nor gates the model again (it
would be judged against itself, the champion it has just become); its event id is the
version's, so a retry after the event went out sends the same event, which deploy claims.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from shared.artifacts import ARTIFACT_SHA256, fetch_model
from shared.errors import EventParseError, WorkInProgress
from shared.events import ModelApproved, ModelRejected, ObjectRef, TrainingCompleted
from shared.lineage import RegisterRecord
from shared.ports import (
    EventBus,
    LineageStore,
    ModelRegistry,
    ModelVersion,
    ObjectStore,
)
from shared.reasons import Reason
from shared.services.claims import Claim, claim, complete
from shared.specs import SpecCatalog
from shared.training_facts import TrainingFacts
from shared.triggers import TrainingJobEnded

log = logging.getLogger(__name__)


GATE_CHAMPION = "gate_champion_version"
SAME_DATA = Reason.SAME_DATA_AS_CHAMPION


@dataclass(frozen=True)
class GateResult:
    approved: bool
    reason: str
    champion_version: int | None
    champion_score: float | None
    code: str | None = None  # a refusal's reason code (same_data_as_champion)


@dataclass(frozen=True)
class RegisterOutcome:
    status: Literal["approved", "rejected", "failed", "duplicate"]
    model_version: int | None = None
    gate: GateResult | None = None


class RegisterService:
    """Gates and registers the model of one finished training job. See the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        bus: EventBus,
        lineage: LineageStore,
        registry: ModelRegistry,
        *,
        specs: SpecCatalog | None = None,
        claim_seconds: int = 900,
    ) -> None:
        self._store = store
        self._bus = bus
        self._lineage = lineage
        self._registry = registry
        self._specs = specs or SpecCatalog()
        self._claim = timedelta(seconds=claim_seconds)

    def handle(self, ended: TrainingJobEnded) -> RegisterOutcome:
        learnt = TrainingFacts.from_job(ended.job_name, ended.hyperparameters)
        dataset = learnt.dataset
        facts = learnt.lineage()
        correlation = facts["correlation_id"] or ended.job_name
        row = RegisterRecord(
            dataset=dataset,
            record_id=f"register:{ended.job_name}",
            status="claimed",
            attributes={
                **facts,
                "job_name": ended.job_name,
                "job_status": ended.status,
                "instance_type": ended.instance_type,
                "artifact": ended.artifact,
            },
        )
        claimed = claim(
            self._lineage, row, self._claim, done_statuses={"approved", "rejected", "failed"}
        )
        if claimed.done:
            return RegisterOutcome(status="duplicate")
        artifact = ObjectRef.from_uri(ended.artifact) if ended.artifact else None
        if not claimed.record.attributes.get("completed_sent"):
            self._publish_completed(ended, dataset, correlation, artifact)
            claimed = self._step(claimed, completed_sent=True)
        if ended.status != "Completed" or artifact is None:
            complete(self._lineage, claimed, "failed", reason=ended.failure_reason)
            return RegisterOutcome(status="failed")

        existing = self.version_of_job(dataset, ended.job_name)
        if existing is not None:
            # A retry after the registry write: announce the version made then, as it was
            # judged then (re-gating would compare the model with itself as champion).
            return self._announce(existing, ended.job_name, correlation, claimed)
        return self._gate_and_register(ended, dataset, facts, correlation, artifact, claimed)

    def version_of_job(self, dataset: str, job_name: str) -> ModelVersion | None:
        """The version a training job was registered as, if it was."""
        return next(
            (v for v in self._registry.versions(dataset) if v.lineage.get("job_name") == job_name),
            None,
        )

    def _step(self, claimed: Claim, **attributes: object) -> Claim:
        """Record a step done on the claim row, so a redelivery does not do it again."""
        record = claimed.record
        # A fresh updated_at also renews the claim: its holder is alive and moving on.
        moved = record.model_copy(
            update={
                "attributes": {**record.attributes, **attributes},
                "updated_at": datetime.now(UTC),
            }
        )
        if not self._lineage.replace(moved, record.revision):
            raise WorkInProgress(
                f"another delivery took over register of {record.dataset} {record.record_id}",
                hint="the message will be retried after its visibility timeout",
            )
        return Claim(moved.model_copy(update={"revision": record.revision + 1}), done=False)

    def _publish_completed(
        self, ended: TrainingJobEnded, dataset: str, correlation: str, artifact: ObjectRef | None
    ) -> None:
        self._bus.publish(
            TrainingCompleted(
                event_id=f"completed-{ended.job_name}",
                dataset=dataset,
                correlation_id=correlation,
                job_name=ended.job_name,
                status="Completed"
                if ended.status == "Completed"
                else "Stopped"
                if ended.status == "Stopped"
                else "Failed",
                reason=ended.failure_reason,
                model_artifact=artifact if ended.status == "Completed" else None,
            )
        )

    def _gate_and_register(
        self,
        ended: TrainingJobEnded,
        dataset: str,
        facts: dict[str, str],
        correlation: str,
        artifact: ObjectRef,
        claimed: Claim,
    ) -> RegisterOutcome:
        # Imported here: only a completed job needs pandas and scikit-learn.
        import pandas as pd

        from shared.trainer import LOWER_IS_BETTER, score_on

        # The gate of the spec the model was trained under, as train-launch labelled it.
        gate = self._specs.get(dataset, facts["spec_version"]).training.gate
        champion = self._registry.champion(dataset)
        with tempfile.TemporaryDirectory(prefix="dhow-register-") as tmp:
            model_dir, artifact_sha256 = fetch_model(
                self._store, artifact, Path(tmp) / "challenger"
            )
            metrics = {
                k: float(v) for k, v in json.loads((model_dir / "metrics.json").read_text()).items()
            }
            champion_score = None
            if champion is not None:
                holdout = pd.read_parquet(model_dir / "holdout.parquet")
                champ_dir, _ = fetch_model(
                    self._store,
                    ObjectRef.from_uri(champion.artifact),
                    Path(tmp) / "champion",
                    champion.lineage.get(ARTIFACT_SHA256),
                )
                champion_score = score_on(champ_dir, holdout)[gate.metric]
        if gate.metric not in metrics:
            raise EventParseError(
                f"the model's metrics have no {gate.metric!r}",
                hint=f"the spec's gate metric must be one of {', '.join(sorted(metrics))}",
            )
        result = self._same_data(facts, champion) or self._judge(
            metrics[gate.metric],
            gate.metric,
            gate.minimum,
            gate.max_regression,
            champion_score,
            champion.version if champion else None,
            lower_is_better=gate.metric in LOWER_IS_BETTER,
        )
        version = self._registry.register(
            dataset,
            artifact=ended.artifact or "",
            image=ended.image or "",
            metrics={
                **metrics,
                **(
                    {f"champion_{gate.metric}_same_holdout": champion_score}
                    if champion_score is not None
                    else {}
                ),
            },
            lineage={
                **facts,
                "job_name": ended.job_name,
                "instance_type": ended.instance_type or "",
                "data_versions": self._data_versions(dataset, ended.job_name),
                # What serve checks the artifact against before it loads it.
                ARTIFACT_SHA256: artifact_sha256,
                # Whom the gate judged it against, for a retry's event to say the same.
                **(
                    {GATE_CHAMPION: str(result.champion_version)} if result.champion_version else {}
                ),
            },
            status="Approved" if result.approved else "Rejected",
            reason=result.reason,
        )
        return self._announce(version, ended.job_name, correlation, claimed, result, metrics)

    def _announce(
        self,
        version: ModelVersion,
        job_name: str,
        correlation: str,
        claimed: Claim,
        result: GateResult | None = None,
        metrics: dict[str, float] | None = None,
    ) -> RegisterOutcome:
        """``ModelApproved`` or ``ModelRejected`` for ``version``, then the claim is done."""
        dataset = version.dataset
        if result is None:  # a retry: what the registry recorded of the first judgement
            judged = version.lineage.get(GATE_CHAMPION)
            result = GateResult(
                approved=version.status == "Approved",
                reason=version.status_reason or "",
                champion_version=int(judged) if judged else None,
                champion_score=None,
            )
        if metrics is None:
            metrics = {k: v for k, v in version.metrics.items() if not k.startswith("champion_")}
        event_id = f"model-{dataset}-{version.version}"
        champion_version = str(result.champion_version) if result.champion_version else None
        if result.approved:
            self._bus.publish(
                ModelApproved(
                    event_id=event_id,
                    dataset=dataset,
                    correlation_id=correlation,
                    model_version=str(version.version),
                    job_name=job_name,
                    metrics=metrics,
                    champion_version=champion_version,
                )
            )
        else:
            self._bus.publish(
                ModelRejected(
                    event_id=event_id,
                    dataset=dataset,
                    correlation_id=correlation,
                    model_version=str(version.version),
                    job_name=job_name,
                    metrics=metrics,
                    champion_version=champion_version,
                    reason=result.reason,
                )
            )
        complete(
            self._lineage,
            claimed,
            "approved" if result.approved else "rejected",
            model_version=version.version,
            gate=result.reason,
        )
        return RegisterOutcome(
            status="approved" if result.approved else "rejected",
            model_version=version.version,
            gate=result,
        )

    def _data_versions(self, dataset: str, job_name: str) -> str:
        """The versions the job learnt from, from its training row (train-launch's), short:
        the most a SageMaker job learns from fits one model-package metadata value (fact
        aws.sagemaker.model_package_metadata_limits). Empty for a job without the row."""
        from shared.services.train_launch import data_versions

        row = self._lineage.get(dataset, f"train:{job_name}")
        return data_versions(row.attributes.get("data_sha256s") or []) if row else ""

    @staticmethod
    def _same_data(facts: dict[str, str], champion: ModelVersion | None) -> GateResult | None:
        """A refusal when the challenger learnt from exactly the champion's versions, under
        the same spec and trainer. Only a job that records its data (launched since
        learn_from) is judged so; a champion from before is taken at its one version."""
        from shared.services.train_launch import version_fingerprint

        if champion is None or not facts.get("data_fingerprint"):
            return None
        same_recipe = all(
            facts.get(k) == champion.lineage.get(k) for k in ("spec_version", "trainer_version")
        )
        if not same_recipe or facts["data_fingerprint"] != version_fingerprint(champion.lineage):
            return None
        return GateResult(
            False,
            f"{SAME_DATA}: trained on exactly the data of champion v{champion.version} "
            "with the same spec and trainer, so it would change nothing; upload new data, "
            "or widen the spec's training.learn_from",
            champion.version,
            None,
            code=SAME_DATA,
        )

    @staticmethod
    def _judge(
        value: float,
        metric: str,
        minimum: float,
        max_regression: float,
        champion_score: float | None,
        champion_version: int | None,
        *,
        lower_is_better: bool,
    ) -> GateResult:
        sign = -1.0 if lower_is_better else 1.0
        if sign * value < sign * minimum:
            word = "above the maximum" if lower_is_better else "below the minimum"
            return GateResult(
                False,
                f"{metric} {value:.4f} is {word} {minimum:.4f}",
                champion_version,
                champion_score,
            )
        if champion_score is not None and sign * (champion_score - value) > max_regression:
            return GateResult(
                False,
                f"{metric} {value:.4f} is worse than champion v{champion_version}'s "
                f"{champion_score:.4f} on the same holdout by more than {max_regression}",
                champion_version,
                champion_score,
            )
        against = (
            (f"; champion v{champion_version} scores {champion_score:.4f} on the same holdout")
            if champion_score is not None
            else "; no champion yet"
        )
        return GateResult(
            True, f"{metric} {value:.4f} passes the gate{against}", champion_version, champion_score
        )
