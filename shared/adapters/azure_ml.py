"""Azure ML adapters: validation too large for a function, as a command job on a CPU
cluster; and training, as a command job on a GPU cluster.

Kept apart from ``shared.adapters.azure`` because azure-ai-ml takes seconds to
import and only a stack that hands work off to Azure ML needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from azure.ai.ml import Input, Output
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import CommandJob, ManagedIdentityConfiguration
from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.sagemaker_training import training_job_name
from shared.ports import (
    LaunchedTraining,
    TrainingJobRequest,
    TrainingLauncher,
    ValidationJobLauncher,
    ValidationJobRequest,
)


class JobOperations(Protocol):
    """The part of ``MLClient.jobs`` we use (injected, as every SDK client is)."""

    def get(self, name: str) -> Any: ...

    def create_or_update(self, job: CommandJob) -> Any: ...


@dataclass(frozen=True)
class AzureMLJobConfig:
    """Deploy-time facts of the workspace the job runs in; all set by the stack."""

    compute: str
    environment: str
    staging_datastore: str
    experiment: str = "dhow-validate"
    environment_variables: tuple[tuple[str, str], ...] = ()


def submit_once(jobs: JobOperations, job: CommandJob) -> bool:
    """Submit ``job`` unless one of its (deterministic) name exists; True if submitted."""
    assert job.name is not None
    try:
        jobs.get(job.name)
    except ResourceNotFoundError:
        jobs.create_or_update(job)
        return True
    return False


def azureml_job_name(request: ValidationJobRequest) -> str:
    """Deterministic, so a redelivery finds the job instead of starting a second one."""
    spec = request.spec_version.replace("+", "-")
    return f"dhow-validate-{request.dataset[:20]}-{request.sha256[:12]}-{spec}"[:255]


class AzureMLValidationJobs(ValidationJobLauncher):
    """``ValidationJobLauncher`` on Azure ML command jobs."""

    def __init__(self, jobs: JobOperations, config: AzureMLJobConfig) -> None:
        self._jobs = jobs
        self._cfg = config

    def request(self, req: ValidationJobRequest) -> CommandJob:
        """The job entity; its ``_to_rest_object()`` is the body sent (tested exactly)."""
        cfg = self._cfg
        staged = f"{req.staged.container}/{req.staged.key}"
        return CommandJob(
            name=azureml_job_name(req),
            display_name=f"validate {req.dataset} {req.sha256[:12]}",
            experiment_name=cfg.experiment,
            command=(
                "python -m shared.jobs.validate"
                f" --dataset {req.dataset} --sha256 {req.sha256}"
                f" --staged {staged}"
                f" --source {req.source.container}/{req.source.key}"
                f" --size-bytes {req.size_bytes} --correlation-id {req.correlation_id}"
                " --input ${{inputs.staged}}"
            ),
            inputs={
                "staged": Input(
                    type=AssetTypes.URI_FILE,
                    path=f"azureml://datastores/{cfg.staging_datastore}/paths/{req.staged.key}",
                )
            },
            environment=cfg.environment,
            compute=cfg.compute,
            environment_variables=dict(cfg.environment_variables),
            # The job writes curated/quarantine blobs and lineage as the workspace's
            # managed identity; no key travels with it.
            identity=ManagedIdentityConfiguration(),
            tags={
                "dhow:dataset": req.dataset,
                "dhow:sha256": req.sha256,
                "dhow:spec-version": req.spec_version,
            },
        )

    def launch(self, request: ValidationJobRequest) -> str:
        job = self.request(request)
        submit_once(self._jobs, job)
        return str(job.name)


@dataclass(frozen=True)
class AzureMLTrainingConfig:
    """Deploy-time facts of the GPU cluster training runs on; all set by the stack."""

    compute: str  # a GPU cluster (low priority when the stack's spec asks)
    environment: str
    curated_datastore: str
    models_datastore: str
    name_prefix: str  # dhow-<stage>
    gpus_per_node: int = 1
    experiment: str = "dhow-train"


class AzureMLTrainingLauncher(TrainingLauncher):
    """``TrainingLauncher`` on Azure ML: the same trainer, under its SageMaker-style variables."""

    def __init__(self, jobs: JobOperations, config: AzureMLTrainingConfig) -> None:
        self._jobs = jobs
        self._cfg = config

    def request(self, req: TrainingJobRequest) -> CommandJob:
        """The job entity; its ``_to_rest_object()`` is the body sent (tested exactly)."""
        cfg = self._cfg
        name = training_job_name(req, cfg.name_prefix)
        hps = json.dumps(
            {**req.hyperparameters, "target": req.target, "task": req.task}, sort_keys=True
        )
        return CommandJob(
            name=name,
            display_name=f"train {req.dataset} {req.sha256[:12]}",
            experiment_name=cfg.experiment,
            # The trainer reads SageMaker's variables; Azure ML fills in the paths.
            command=(
                "SM_CHANNEL_TRAIN=${{inputs.train}} SM_MODEL_DIR=${{outputs.model}} "
                "SM_OUTPUT_DATA_DIR=${{outputs.output}} SM_OUTPUT_DIR=${{outputs.output}} "
                f"python -m {req.entrypoint or 'shared.trainer'}"
            ),
            inputs={
                # The curated file itself: its folder also holds the drift reference sample.
                "train": Input(
                    type=AssetTypes.URI_FILE,
                    path=f"azureml://datastores/{cfg.curated_datastore}/paths/{req.curated.key}",
                )
            },
            outputs={
                "model": Output(
                    type=AssetTypes.URI_FOLDER,
                    path=f"azureml://datastores/{cfg.models_datastore}/paths/"
                    f"models/{req.dataset}/{name}/model/",
                ),
                "output": Output(
                    type=AssetTypes.URI_FOLDER,
                    path=f"azureml://datastores/{cfg.models_datastore}/paths/"
                    f"models/{req.dataset}/{name}/output/",
                ),
            },
            environment=req.image or cfg.environment,
            compute=cfg.compute,
            environment_variables={"SM_HPS": hps, "SM_NUM_GPUS": str(cfg.gpus_per_node)},
            identity=ManagedIdentityConfiguration(),
            tags={
                "dhow:dataset": req.dataset,
                "dhow:sha256": req.sha256,
                "dhow:spec-version": req.spec_version,
                "dhow:trainer-version": req.trainer_version,
                "dhow:correlation-id": req.correlation_id,
            },
        )

    def launch(self, request: TrainingJobRequest) -> LaunchedTraining:
        job = self.request(request)
        created = submit_once(self._jobs, job)
        return LaunchedTraining(
            job_name=str(job.name),
            created=created,
            instance_type=self._cfg.compute if created else None,
        )
