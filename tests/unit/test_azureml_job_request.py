"""The exact Azure ML command job body (Azure ML cannot run here)."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.azure_ml import (
    AzureMLJobConfig,
    AzureMLTrainingConfig,
    AzureMLTrainingLauncher,
    AzureMLValidationJobs,
    azureml_job_name,
)
from shared.adapters.sagemaker_training import training_job_name
from shared.events import ObjectRef
from shared.ports import TrainingJobRequest, ValidationJobRequest

SHA = "cd34" * 16
REQ = ValidationJobRequest(
    dataset="customers",
    sha256=SHA,
    spec_version="3+1a2b3c4d",
    source=ObjectRef(container="dhow-prod-raw", key="datasets/customers/big.csv"),
    staged=ObjectRef(
        container="dhow-prod-staging", key=f"datasets/customers/sha256={SHA}/data.csv"
    ),
    size_bytes=5 * 1024**3,
    correlation_id="u-7",
)
CFG = AzureMLJobConfig(
    compute="azureml:dhow-prod-cpu",
    environment="azureml:dhow-processing:3",
    staging_datastore="dhowprodstaging",
    environment_variables=(("DHOW_CLOUD", "azure"), ("DHOW_STAGE", "prod")),
)
NAME = "dhow-validate-customers-cd34cd34cd34-3-1a2b3c4d"
EXPECTED = {
    "name": NAME,
    "properties": {
        "jobType": "Command",
        "displayName": "validate customers cd34cd34cd34",
        "experimentName": "dhow-validate",
        "command": (
            f"python -m shared.jobs.validate --dataset customers --sha256 {SHA}"
            f" --staged dhow-prod-staging/datasets/customers/sha256={SHA}/data.csv"
            " --source dhow-prod-raw/datasets/customers/big.csv"
            f" --size-bytes {5 * 1024**3} --correlation-id u-7 --input ${{{{inputs.staged}}}}"
        ),
        "computeId": "azureml:dhow-prod-cpu",
        "environmentId": "azureml:dhow-processing:3",
        "environmentVariables": {"DHOW_CLOUD": "azure", "DHOW_STAGE": "prod"},
        "identity": {"identityType": "Managed"},
        "inputs": {
            "staged": {
                "jobInputType": "uri_file",
                "uri": f"azureml://datastores/dhowprodstaging/paths/datasets/customers/sha256={SHA}"
                "/data.csv",
            }
        },
        "outputs": {},
        "properties": {},
        "isArchived": False,
        "tags": {
            "dhow:dataset": "customers",
            "dhow:sha256": SHA,
            "dhow:spec-version": "3+1a2b3c4d",
        },
    },
}


class RecordingJobs:
    """Stands in for MLClient.jobs: records what would be sent."""

    def __init__(self, existing: set[str] | None = None) -> None:
        self.existing = existing or set()
        self.sent: list[dict[str, Any]] = []

    def get(self, name: str) -> Any:
        if name not in self.existing:
            raise ResourceNotFoundError(f"job {name} not found")
        return {"name": name}

    def create_or_update(self, job: Any) -> Any:
        self.sent.append(job._to_rest_object().as_dict())
        return job


def test_command_job_body_is_exact() -> None:
    jobs = RecordingJobs()
    assert AzureMLValidationJobs(jobs, CFG).launch(REQ) == NAME
    assert jobs.sent == [EXPECTED]


def test_a_redelivery_finds_the_job_and_sends_nothing() -> None:
    jobs = RecordingJobs(existing={NAME})
    assert AzureMLValidationJobs(jobs, CFG).launch(REQ) == NAME
    assert jobs.sent == []


def test_job_name_is_deterministic() -> None:
    assert azureml_job_name(REQ) == azureml_job_name(REQ.model_copy()) == NAME


TRAIN_REQ = TrainingJobRequest(
    dataset="customers",
    sha256=SHA,
    spec_version="1+x",
    trainer_version="0.1.0",
    curated=ObjectRef(
        container="dhow-prod-curated", key=f"datasets/customers/sha256={SHA}/data.parquet"
    ),
    target="churned",
    task="classification",
    instance_types=("gpu",),
    hyperparameters={"n_estimators": "200"},
    correlation_id="u-1",
)
TRAIN_CFG = AzureMLTrainingConfig(
    compute="azureml:dhow-prod-gpu",
    environment="azureml:dhow-train:1",
    curated_datastore="dhowprodcurated",
    models_datastore="dhowprodmodels",
    name_prefix="dhow-prod",
)
TRAIN_NAME = training_job_name(TRAIN_REQ, "dhow-prod")
TRAIN_EXPECTED = {
    "name": TRAIN_NAME,
    "properties": {
        "jobType": "Command",
        "displayName": "train customers cd34cd34cd34",
        "experimentName": "dhow-train",
        "command": "SM_CHANNEL_TRAIN=${{inputs.train}} SM_MODEL_DIR=${{outputs.model}} "
        "SM_OUTPUT_DATA_DIR=${{outputs.output}} SM_OUTPUT_DIR=${{outputs.output}} "
        "python -m shared.trainer",
        "computeId": "azureml:dhow-prod-gpu",
        "environmentId": "azureml:dhow-train:1",
        "environmentVariables": {
            "SM_HPS": '{"n_estimators": "200", "target": "churned", "task": "classification"}',
            "SM_NUM_GPUS": "1",
        },
        "identity": {"identityType": "Managed"},
        "inputs": {
            "train": {
                "jobInputType": "uri_file",
                "uri": f"azureml://datastores/dhowprodcurated/paths/datasets/customers/sha256={SHA}"
                "/data.parquet",
            }
        },
        "outputs": {
            "model": {
                "jobOutputType": "uri_folder",
                "uri": f"azureml://datastores/dhowprodmodels/paths/models/customers/"
                f"{TRAIN_NAME}/model/",
            },
            "output": {
                "jobOutputType": "uri_folder",
                "uri": f"azureml://datastores/dhowprodmodels/paths/models/customers/"
                f"{TRAIN_NAME}/output/",
            },
        },
        "properties": {},
        "isArchived": False,
        "tags": {
            "dhow:dataset": "customers",
            "dhow:sha256": SHA,
            "dhow:spec-version": "1+x",
            "dhow:trainer-version": "0.1.0",
            "dhow:correlation-id": "u-1",
        },
    },
}


def test_gpu_training_job_body_is_exact() -> None:
    jobs = RecordingJobs()
    out = AzureMLTrainingLauncher(jobs, TRAIN_CFG).launch(TRAIN_REQ)
    assert (out.job_name, out.created, out.instance_type) == (
        TRAIN_NAME,
        True,
        "azureml:dhow-prod-gpu",
    )
    assert jobs.sent == [TRAIN_EXPECTED]


def test_a_duplicate_training_request_starts_nothing() -> None:
    jobs = RecordingJobs(existing={TRAIN_NAME})
    out = AzureMLTrainingLauncher(jobs, TRAIN_CFG).launch(TRAIN_REQ)
    assert (out.created, jobs.sent) == (False, [])


def test_bring_your_own_trainer_and_environment() -> None:
    own = TRAIN_REQ.model_copy(
        update={"entrypoint": "acme.churn_trainer", "image": "azureml:acme-train:4"}
    )
    body = AzureMLTrainingLauncher(RecordingJobs(), TRAIN_CFG).request(own)._to_rest_object()
    props = body.as_dict()["properties"]
    assert props["command"].endswith("python -m acme.churn_trainer")
    assert props["environmentId"] == "azureml:acme-train:4"
