"""Azure ML adapters: validation too large for a function, as a command job on a CPU
cluster; and training, as a command job on a GPU cluster.

Kept apart from ``shared.adapters.azure`` because azure-ai-ml takes seconds to
import and only a stack that hands work off to Azure ML needs it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from azure.ai.ml import Input, Output, command
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Command, ManagedIdentityConfiguration
from azure.core.exceptions import ResourceNotFoundError

from shared import constants as c
from shared.adapters.sagemaker_training import train_channel_names, training_job_name
from shared.cloud_facts import value
from shared.errors import ConfigError
from shared.events import ObjectRef
from shared.identifiers import checked_correlation_id
from shared.job_names import validation_job_name
from shared.jobs.model_archive import MODEL_ARCHIVE
from shared.layout import model_output_prefix
from shared.ports import (
    LaunchedTraining,
    TrainingJobRequest,
    TrainingLauncher,
    ValidationJobLauncher,
    ValidationJobRequest,
    ValidationJobState,
)
from shared.settings import Settings
from shared.topology import processing_job_prefix
from shared.triggers import (
    TAG_ARTIFACT,
    TAG_COMPUTE,
    TAG_HYPERPARAMETERS,
    TAG_IMAGE,
    TAG_STAGED,
    TRAINING_EXPERIMENT,
    VALIDATION_EXPERIMENT,
)

# The package the jobs run (`python -m shared.jobs.…`, the trainer, the shipped specs).
PACKAGE_DIR = Path(__file__).resolve().parents[1]
_NOT_CODE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache")


def datastore_uri(datastore: str, path: str) -> str:
    """A path on a workspace datastore, as job inputs and outputs name it."""
    return str(value("azure.ml.datastore_uri")).format(datastore=datastore, path=path)


@cache
def staged_code() -> str:
    """The job's ``code``: a copy of the ``shared`` package alone, uploaded by azure-ai-ml
    at submission (a content-hashed code asset, so an unchanged copy is not sent twice).

    A staged folder rather than the app's root, which also holds the Functions host's
    packages (and, on a laptop, .venv and .git): azure-ai-ml uploads a folder whole but
    for what an ignore file at its root excludes (fact azure.ml.code_upload_ignore).
    """
    root = Path(tempfile.mkdtemp(prefix="dhow-azureml-code-"))
    shutil.copytree(PACKAGE_DIR, root / PACKAGE_DIR.name, ignore=_NOT_CODE)
    atexit.register(shutil.rmtree, root, True)
    return str(root)


class JobOperations(Protocol):
    """The part of ``MLClient.jobs`` we use (injected, as every SDK client is)."""

    def get(self, name: str) -> Any: ...

    def create_or_update(self, job: Command) -> Any: ...

    def begin_cancel(self, name: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class AzureMLJobConfig:
    """Deploy-time facts of the workspace the job runs in; all set by the stack."""

    compute: str
    environment: str
    staging_datastore: str
    stage: str  # the job's name carries it (azureml_job_name)
    environment_variables: tuple[tuple[str, str], ...] = ()  # validation_job_environment()
    code: str | None = None  # default: staged_code()
    # The job's limits.timeout: Azure ML cancels it after this long (as SageMaker's
    # MaxRuntimeInSeconds does), so the sweep knows when a job is past its bound.
    max_runtime_s: int = 4 * 3600


# What `python -m shared.jobs.validate` reads on Azure: ``Settings.from_env`` (the cloud,
# the stage that names its containers, the location azure_clients checks) and the data
# account build_ports reaches by identity. Nothing else travels with the job: not the
# pipeline topic (the job publishes nothing; the function announces its result).
VALIDATION_JOB_SETTINGS = (c.CLOUD, c.STAGE, c.AZURE_LOCATION, c.AZURE_STORAGE_ACCOUNT)


def validation_job_environment(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The job's environment variables: exactly ``VALIDATION_JOB_SETTINGS``, from the
    settings of the function that submits it (which the stack wrote)."""
    env = settings.to_env()
    missing = [name for name in VALIDATION_JOB_SETTINGS if not env.get(name)]
    if missing:
        raise ConfigError(
            f"the validation job would start without {', '.join(missing)}",
            hint="the stack sets them on the Function App; the job builds its storage "
            "clients from them",
        )
    return tuple(sorted((name, env[name]) for name in VALIDATION_JOB_SETTINGS))


def submit_once(jobs: JobOperations, job: Command) -> bool:
    """Submit ``job`` unless one of its (deterministic) name exists; True if submitted."""
    assert job.name is not None
    try:
        jobs.get(job.name)
    except ResourceNotFoundError:
        jobs.create_or_update(job)
        return True
    return False


_NOT_NAME = re.compile(r"[^a-z0-9-]+")


def azureml_job_name(request: ValidationJobRequest, stage: str) -> str:
    """``dhow-<stage>-validate-<dataset>-<sha12>-<tag>`` (``shared.job_names``): the
    stage in the name keeps a workspace shared by two stages from letting one adopt the
    other's job; cut to fit Azure ML's run-id rule (fact azure.ml.job_name)."""
    head = processing_job_prefix(stage)
    return validation_job_name(
        request,
        head,
        max_length=int(value("azure.ml.job_name")["max_length"]),
        not_name=_NOT_NAME,
        lower=True,
        too_long=f"no room for the dataset in an Azure ML job name under {head!r}",
    )


JobPhase = Literal["InProgress", "Stopping", "Completed", "Failed", "Stopped"]


def _azureml_states() -> dict[str, JobPhase]:
    """Azure ML's job statuses as the port's (fact azure.ml.job_status): Canceled is
    Stopped, as in its RunStatusChanged events; NotResponding is terminal and left no
    result; every other status is still on its way (InProgress)."""
    rule = value("azure.ml.job_status")
    out: dict[str, JobPhase] = {raw: cast(JobPhase, ours) for raw, ours in rule["ended"].items()}
    out.update({raw: "Stopping" for raw in rule["stopping"]})
    return out


class AzureMLValidationJobs(ValidationJobLauncher):
    """``ValidationJobLauncher`` on Azure ML command jobs."""

    def __init__(self, jobs: JobOperations, config: AzureMLJobConfig) -> None:
        self._jobs = jobs
        self._cfg = config

    def request(self, req: ValidationJobRequest) -> Command:
        """The job entity; its ``_to_rest_object()`` is the body sent (tested exactly).

        The command line runs in a shell as the workspace's identity, and the upload's
        key and id come from the uploader: every value is one quoted word (shlex), and
        the correlation id must follow its rule besides (``InvalidIdentifier``).
        """
        cfg = self._cfg
        checked_correlation_id(req.correlation_id)
        argv = [
            "python",
            "-m",
            "shared.jobs.validate",
            *("--dataset", req.dataset, "--sha256", req.sha256),
            *("--staged", req.staged.uri, "--source", req.source.uri),
            *("--size-bytes", str(req.size_bytes), "--correlation-id", req.correlation_id),
        ]
        return command(
            name=azureml_job_name(req, cfg.stage),
            display_name=f"validate {req.dataset} {req.sha256[:12]}",
            # The experiment routes the run's end to the validate queue (infra/azure).
            experiment_name=VALIDATION_EXPERIMENT,
            # Azure ML's own placeholder last: it becomes the mounted path of the input.
            command=f"{shlex.join(argv)} --input ${{{{inputs.staged}}}}",
            code=cfg.code or staged_code(),
            inputs={
                "staged": Input(
                    type=AssetTypes.URI_FILE,
                    path=datastore_uri(cfg.staging_datastore, req.staged.key),
                )
            },
            environment=cfg.environment,
            compute=cfg.compute,
            # limits.timeout: the job's stopping condition (fact azure.ml.job_timeout).
            timeout=cfg.max_runtime_s,
            environment_variables=dict(cfg.environment_variables),
            # The job reads staging and writes curated/quarantine blobs and its result as
            # its cluster's managed identity; no key travels with it.
            identity=ManagedIdentityConfiguration(),
            tags={
                "dhow:dataset": req.dataset,
                "dhow:sha256": req.sha256,
                "dhow:spec-version": req.spec_version,
                # Read back from the run's RunStatusChanged event (shared.triggers).
                TAG_STAGED: req.staged.uri,
            },
        )

    def launch(self, request: ValidationJobRequest) -> str:
        job = self.request(request)
        submit_once(self._jobs, job)
        return str(job.name)

    @property
    def max_runtime_s(self) -> int:
        return self._cfg.max_runtime_s

    def state(self, job_name: str) -> ValidationJobState:
        """``jobs.get(name).status``, read as SageMaker's statuses (fact azure.ml.job_status)."""
        try:
            job = self._jobs.get(job_name)
        except ResourceNotFoundError:
            return ValidationJobState(job_name=job_name, status="Missing")
        # The entity's status is the SDK's JobStatus (a str Enum, whose str() is its
        # name, "JobStatus.RUNNING"): its value is the status ARM sent.
        raw = str(getattr(job.status, "value", job.status))
        status = _azureml_states().get(raw, "InProgress")
        reason = None if status in {"InProgress", "Completed"} else f"Azure ML job is {raw}"
        return ValidationJobState(job_name=job_name, status=status, failure_reason=reason)

    def stop(self, job_name: str) -> None:
        # One POST .../jobs/{name}/cancel (jobs/cancel/action); polling=False: the sweep
        # reads the job's state again on its next tick rather than waiting here.
        with contextlib.suppress(ResourceNotFoundError):
            self._jobs.begin_cancel(job_name, polling=False)


@dataclass(frozen=True)
class AzureMLTrainingConfig:
    """Deploy-time facts of the GPU cluster training runs on; all set by the stack."""

    compute: str  # a GPU cluster (low priority when the stack's spec asks)
    environment: str
    curated_datastore: str
    models_datastore: str
    models_container: str  # the blob container the models datastore is bound to
    name_prefix: str  # dhow-<stage>
    gpus_per_node: int = 1
    code: str | None = None  # default: staged_code()


def training_output_key(dataset: str, job_name: str) -> str:
    """The job's output folder on the models datastore: SageMaker's and the local job's."""
    return model_output_prefix(dataset, job_name)


class AzureMLTrainingLauncher(TrainingLauncher):
    """``TrainingLauncher`` on Azure ML: the same trainer, under its SageMaker-style variables."""

    def __init__(self, jobs: JobOperations, config: AzureMLTrainingConfig) -> None:
        self._jobs = jobs
        self._cfg = config

    def request(self, req: TrainingJobRequest) -> Command:
        """The job entity; its ``_to_rest_object()`` is the body sent (tested exactly).

        The command (``shared.jobs.azureml_training``) runs the trainer and writes
        ``model.tar.gz`` into the output folder; the ``dhow:artifact`` tag names that
        blob, and the run's tags come back in its ``RunStatusChanged`` event, so register
        finds the model where it finds SageMaker's.
        """
        cfg = self._cfg
        name = training_job_name(req, cfg.name_prefix)
        hps = json.dumps(req.job_hyperparameters, sort_keys=True)
        output = training_output_key(req.dataset, name)
        artifact = ObjectRef(container=cfg.models_container, key=output + MODEL_ARCHIVE)
        environment = req.image or cfg.environment
        argv = ["python", "-m", "shared.jobs.azureml_training"]
        argv += ["--entrypoint", req.entrypoint or "shared.trainer"]
        # One uri_file input per curated version (train, train_1, ...; names Azure ML
        # accepts, fact azure.ml.job_input_names), each mounted and passed as a --train.
        names = train_channel_names(len(req.training_inputs))
        trains = " ".join(f"--train ${{{{inputs.{n}}}}}" for n in names)
        return command(
            name=name,
            display_name=f"train {req.dataset} {req.sha256[:12]}",
            # The experiment routes the run's end to register (infra/azure).
            experiment_name=TRAINING_EXPERIMENT,
            command=f"{shlex.join(argv)} {trains} --output ${{{{outputs.output}}}}",
            code=cfg.code or staged_code(),
            inputs={
                # The curated file itself: its folder also holds the drift reference sample.
                n: Input(
                    type=AssetTypes.URI_FILE,
                    path=datastore_uri(cfg.curated_datastore, ref.key),
                )
                for n, ref in zip(names, req.training_inputs, strict=True)
            },
            outputs={
                "output": Output(
                    type=AssetTypes.URI_FOLDER,
                    path=datastore_uri(cfg.models_datastore, output),
                ),
            },
            environment=environment,
            compute=cfg.compute,
            # Variables, not command words: the hyperparameters never meet the shell.
            environment_variables={"SM_HPS": hps, "SM_NUM_GPUS": str(cfg.gpus_per_node)},
            identity=ManagedIdentityConfiguration(),
            tags={
                "dhow:dataset": req.dataset,
                "dhow:sha256": req.sha256,
                "dhow:spec-version": req.spec_version,
                "dhow:trainer-version": req.trainer_version,
                "dhow:correlation-id": req.correlation_id,
                # What register reads back from the run's event (shared.triggers).
                TAG_ARTIFACT: artifact.uri,
                TAG_HYPERPARAMETERS: hps,
                TAG_COMPUTE: cfg.compute,
                TAG_IMAGE: environment,
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
