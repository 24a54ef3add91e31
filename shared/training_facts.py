"""What a training job learnt from, carried in the job itself.

A training job's end event (SageMaker's "Training Job State Change", Azure ML's
``RunStatusChanged`` with the run's tags) carries the job's hyperparameters and little
else, so train-launch writes the facts register needs into them, as ``dhow_<field>``
strings beside the trainer's own. ``TrainingFacts`` is those facts typed: encoded to the
job's hyperparameters here (``hyperparameters``) and decoded here (``from_job``), so the
two ends cannot drift apart. The trainer ignores every ``dhow_*`` key.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from shared.errors import EventParseError

HYPERPARAMETER_PREFIX = "dhow_"


class TrainingFacts(BaseModel):
    """The data, spec and trainer of one training job (a model version's lineage).

    Every field but ``dataset`` may be empty in a job launched before it was recorded
    (``data_fingerprint`` before ``training.learn_from``): register reads such a job as
    it always did. The field order is the order of the job's hyperparameters.
    """

    model_config = ConfigDict(frozen=True)

    # One fixed-size digest of the set of curated versions learnt from: the list itself is
    # on the training row, since the hyperparameters also travel as one Azure ML run tag
    # (fact azure.ml.run_tag_limits), which a long list would overflow.
    data_fingerprint: str = ""
    dataset: str
    sha256: str = ""
    spec_version: str = ""
    trainer_version: str = ""
    curated: str = ""  # the URI of the announced version's curated Parquet
    correlation_id: str = ""

    def hyperparameters(self) -> dict[str, str]:
        """The ``dhow_*`` hyperparameters of the job, every value a string."""
        return {f"{HYPERPARAMETER_PREFIX}{k}": v for k, v in self.model_dump().items()}

    @classmethod
    def from_job(cls, job_name: str, hyperparameters: Mapping[str, str]) -> TrainingFacts:
        """The facts a finished job's hyperparameters carry; a job without a
        ``dhow_dataset`` was not launched by train-launch, and is refused."""
        facts = {
            k: hyperparameters[f"{HYPERPARAMETER_PREFIX}{k}"]
            for k in cls.model_fields
            if f"{HYPERPARAMETER_PREFIX}{k}" in hyperparameters
        }
        if not facts.get("dataset"):
            raise EventParseError(
                f"training job {job_name} has no {HYPERPARAMETER_PREFIX}dataset hyperparameter",
                hint="only jobs launched by Dhow's train-launch are registered",
            )
        return cls.model_validate(facts)

    def lineage(self) -> dict[str, str]:
        """What a model version's lineage (and its register row) keeps of the facts."""
        return {k: getattr(self, k) for k in LINEAGE_KEYS}


# The facts a model version's lineage keeps (all but its dataset, which keys it anyway),
# in the order its rows have always listed them.
LINEAGE_KEYS = (
    "sha256",
    "spec_version",
    "trainer_version",
    "curated",
    "correlation_id",
    "data_fingerprint",
)
