"""The facts a training job carries (``dhow_*`` hyperparameters) are one typed model,
encoded for the job in one place and decoded from its end event in one place: the job
gets the strings it always got, and register reads jobs launched before a fact existed."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import EventParseError
from shared.events import DatasetValidated, ObjectRef
from shared.services.train_launch import data_fingerprint, training_request
from shared.specs import load_spec
from shared.trainer import TRAINER_VERSION
from shared.training_facts import TrainingFacts

ROOT = Path(__file__).resolve().parents[2]
SHA = "ab" * 32
CURATED = ObjectRef(container="c", key=f"datasets/customers/sha256={SHA}/data.parquet")
# The version validate announced (train-launch builds the job from that spec).
SPEC_VERSION = load_spec("customers").spec_version
EVENT = DatasetValidated(
    dataset="customers",
    correlation_id="u-1",
    sha256=SHA,
    rows=400,
    spec_version=SPEC_VERSION,
    curated=CURATED,
)


def test_the_job_gets_the_hyperparameters_it_always_got() -> None:
    req = training_request(EVENT)
    # The keys and strings train-launch wrote by hand before the model, in their order.
    expected = {
        "dhow_data_fingerprint": data_fingerprint([SHA]),
        "dhow_dataset": "customers",
        "dhow_sha256": SHA,
        "dhow_spec_version": SPEC_VERSION,
        "dhow_trainer_version": TRAINER_VERSION,
        "dhow_curated": CURATED.uri,
        "dhow_correlation_id": "u-1",
    }
    dhow = {k: v for k, v in req.hyperparameters.items() if k.startswith("dhow_")}
    assert list(dhow.items()) == list(expected.items())
    # Every backend hands the trainer the same dict: the request's, target and task.
    assert req.job_hyperparameters == {**req.hyperparameters, "target": "churned", "task": req.task}


def test_what_is_encoded_is_what_register_decodes() -> None:
    facts = TrainingFacts(
        data_fingerprint="f" * 64,
        dataset="customers",
        sha256=SHA,
        spec_version="1+x",
        trainer_version=TRAINER_VERSION,
        curated=CURATED.uri,
        correlation_id="u-1",
    )
    hps = {"n_estimators": "200", "target": "churned", **facts.hyperparameters()}
    assert TrainingFacts.from_job("job-1", hps) == facts
    assert facts.lineage() == {
        "sha256": SHA,
        "spec_version": "1+x",
        "trainer_version": TRAINER_VERSION,
        "curated": CURATED.uri,
        "correlation_id": "u-1",
        "data_fingerprint": "f" * 64,
    }


def test_a_job_from_before_a_fact_reads_it_empty() -> None:
    # A job launched before learn_from has no dhow_data_fingerprint (nor, older, more).
    facts = TrainingFacts.from_job("old", {"dhow_dataset": "customers", "dhow_sha256": SHA})
    assert (facts.dataset, facts.sha256, facts.data_fingerprint) == ("customers", SHA, "")


def test_a_job_dhow_did_not_launch_is_refused_with_a_hint() -> None:
    with pytest.raises(EventParseError, match="no dhow_dataset hyperparameter") as err:
        TrainingFacts.from_job("someone-elses", {"n_estimators": "10"})
    assert err.value.hint


@pytest.mark.parametrize(
    "path",
    ["shared/services/train_launch.py", "shared/services/register.py"],
)
def test_no_service_spells_a_dhow_hyperparameter(path: str) -> None:
    assert '"dhow_' not in (ROOT / path).read_text()
    assert 'f"dhow_' not in (ROOT / path).read_text()
