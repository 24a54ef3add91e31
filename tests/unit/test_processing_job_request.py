"""The exact SageMaker CreateProcessingJob request (SageMaker cannot run here), its name
against SageMaker's own rules, and the SageMaker role against what the job does."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from infra.aws.iam import AwsScope, _jobs_arns, sagemaker_role_policy
from shared.adapters.aws import (
    ProcessingJobConfig,
    SageMakerValidationJobs,
    aws_client,
    processing_job_name,
)
from shared.cloud_facts import value
from shared.events import ObjectRef
from shared.identifiers import family_head
from shared.jobs.validate import run as run_job
from shared.ports import ValidationJobRequest
from shared.settings import Settings
from shared.topology import build_topology, processing_job_prefix

REQ = ValidationJobRequest(
    dataset="customers",
    sha256="ab12" * 16,
    spec_version="3+1a2b3c4d",
    source=ObjectRef(container="dhow-prod-raw", key="datasets/customers/big.csv"),
    staged=ObjectRef(
        container="dhow-prod-staging", key=f"datasets/customers/sha256={'ab12' * 16}/data.csv"
    ),
    size_bytes=5 * 1024**3,
    correlation_id="u-7",
)
CFG = ProcessingJobConfig(
    image_uri="123456789012.dkr.ecr.me-central-1.amazonaws.com/dhow-processing:0.1.0",
    role_arn="arn:aws:iam::123456789012:role/dhow-prod-processing",
    name_prefix="dhow-prod",
    kms_key_id="arn:aws:kms:me-central-1:123456789012:key/1111-2222",
    subnets=("subnet-a", "subnet-b"),
    security_groups=("sg-1",),
    environment=(("DHOW_STAGE", "prod"),),
)
STAGED_URI = f"s3://dhow-prod-staging/datasets/customers/sha256={'ab12' * 16}/data.csv"
EXPECTED = {
    "ProcessingJobName": "dhow-prod-validate-customers-ab12ab12ab12-bc9b3538",
    "RoleArn": CFG.role_arn,
    "AppSpecification": {
        "ImageUri": CFG.image_uri,
        "ContainerEntrypoint": ["python", "-m", "shared.jobs.validate"],
        "ContainerArguments": [
            "--dataset",
            "customers",
            "--sha256",
            "ab12" * 16,
            "--staged",
            STAGED_URI,
            "--source",
            "s3://dhow-prod-raw/datasets/customers/big.csv",
            "--size-bytes",
            str(5 * 1024**3),
            "--correlation-id",
            "u-7",
            "--input",
            "/opt/ml/processing/input/staged/data.csv",
        ],
    },
    "ProcessingInputs": [
        {
            "InputName": "staged",
            "S3Input": {
                "S3Uri": STAGED_URI,
                "LocalPath": "/opt/ml/processing/input/staged",
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
                "S3DataDistributionType": "FullyReplicated",
            },
        }
    ],
    "ProcessingResources": {
        "ClusterConfig": {
            "InstanceCount": 1,
            "InstanceType": "ml.m5.4xlarge",
            "VolumeSizeInGB": 100,
            "VolumeKmsKeyId": CFG.kms_key_id,
        }
    },
    "StoppingCondition": {"MaxRuntimeInSeconds": 14400},
    "Environment": {"DHOW_STAGE": "prod"},
    "Tags": [
        {"Key": "dhow:dataset", "Value": "customers"},
        {"Key": "dhow:sha256", "Value": "ab12" * 16},
        {"Key": "dhow:spec-version", "Value": "3+1a2b3c4d"},
    ],
    "NetworkConfig": {
        "EnableInterContainerTrafficEncryption": True,
        "VpcConfig": {"Subnets": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]},
    },
}


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    return aws_client("sagemaker", Settings())


def test_create_processing_job_request_is_exact(client) -> None:  # type: ignore[no-untyped-def]
    assert client.meta.region_name == "me-central-1"
    with Stubber(client) as stub:
        stub.add_response("create_processing_job", {"ProcessingJobArn": "arn:x"}, EXPECTED)
        assert SageMakerValidationJobs(client, CFG).launch(REQ) == EXPECTED["ProcessingJobName"]
        stub.assert_no_pending_responses()


def test_a_redelivery_finds_the_job_already_running(client) -> None:  # type: ignore[no-untyped-def]
    with Stubber(client) as stub:
        stub.add_client_error(
            "create_processing_job", "ResourceInUse", "Job already exists", expected_params=EXPECTED
        )
        assert SageMakerValidationJobs(client, CFG).launch(REQ) == EXPECTED["ProcessingJobName"]


def test_other_errors_are_not_swallowed(client) -> None:  # type: ignore[no-untyped-def]
    with Stubber(client) as stub:
        stub.add_client_error("create_processing_job", "ResourceLimitExceeded", "quota")
        with pytest.raises(ClientError):
            SageMakerValidationJobs(client, CFG).launch(REQ)


def is_glob_match(pattern: str, arn: str) -> bool:
    """IAM's wildcard match of a Resource, as the IAM linter parliament implements it."""
    with warnings.catch_warnings():
        # parliament's import warns (pkg_resources deprecated, its data files left open).
        warnings.simplefilter("ignore")
        from parliament import is_glob_match as match  # type: ignore[import-untyped]
    return bool(match(pattern, arn))


def _name_rule() -> tuple[int, str]:
    """SageMaker's own rule for ProcessingJobName, from botocore's service model."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    request = model.operation_model("CreateProcessingJob").input_shape
    assert request is not None
    shape = request.members["ProcessingJobName"]
    return int(shape.metadata["max"]), str(shape.metadata["pattern"])


def test_job_names_follow_sagemakers_name_rule() -> None:
    rule = value("aws.sagemaker.processing_job_name")
    assert _name_rule() == (rule["max_length"], rule["pattern"])  # the table is botocore's
    longest_stage = "s" * 21  # shared.settings.STAGE_RE allows 2 to 21 characters
    for stage in ("t1", "prod", longest_stage):
        for dataset in ("customers", "x" * 63, "churn_2024_q1", "a"):
            req = REQ.model_copy(update={"dataset": dataset})
            name = processing_job_name(req, family_head(stage))
            assert len(name) <= rule["max_length"], name
            assert re.fullmatch(rule["pattern"], name), name
            assert name.startswith(processing_job_prefix(stage)), name


def test_stages_never_share_a_job() -> None:
    # Same bytes, same spec, two stages: two jobs, so neither adopts the other's.
    assert processing_job_name(REQ, family_head("prod")) != processing_job_name(
        REQ, family_head("staging")
    )
    # A dataset cut to fit still gets a name of its own.
    a = REQ.model_copy(update={"dataset": "x" * 62 + "a"})
    b = REQ.model_copy(update={"dataset": "x" * 62 + "b"})
    assert processing_job_name(a, family_head("prod")) != processing_job_name(
        b, family_head("prod")
    )


def test_the_validate_role_reaches_only_its_own_stages_jobs() -> None:
    scope = AwsScope("me-central-1", "123456789012", "prod")
    [arn] = _jobs_arns("processing_jobs", scope)
    jobs = "arn:aws:sagemaker:me-central-1:123456789012:processing-job"
    other = processing_job_name(REQ, family_head("staging"))
    assert is_glob_match(arn, f"{jobs}/{processing_job_name(REQ, family_head('prod'))}")
    assert not is_glob_match(arn, f"{jobs}/{other}")


def test_the_input_lands_where_the_job_reads_it() -> None:
    rule = value("aws.sagemaker.processing_s3_input")
    request: dict[str, Any] = EXPECTED
    [inp] = request["ProcessingInputs"]
    s3 = inp["S3Input"]
    assert s3["LocalPath"].startswith(rule["local_path_prefix"])
    assert (s3["S3DataType"], s3["S3InputMode"]) == (rule["data_type"], rule["input_mode"])
    # An S3Prefix input that is the whole key puts the object under LocalPath by its name.
    args = request["AppSpecification"]["ContainerArguments"]
    given = args[args.index("--input") + 1]
    assert given == f"{s3['LocalPath']}/{s3['S3Uri'].rsplit('/', 1)[-1]}"


class RecordingStore:
    """Records every storage call the job makes, as (IAM action, ARN)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _rec(self, action: str, ref: Any) -> None:
        self.calls.append((action, f"arn:aws:s3:::{ref.container}/{ref.key}"))

    def upload_file(self, ref: Any, path: Path, metadata: Any = None) -> None:
        self._rec("s3:PutObject", ref)

    def put_bytes(self, ref: Any, data: bytes, metadata: Any = None, **headers: Any) -> None:
        self._rec("s3:PutObject", ref)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the job called {name}: not a call it needs")


def _allowed(policy: dict[str, Any], action: str, arn: str) -> bool:
    return any(
        s["Effect"] == "Allow"
        and action in s["Action"]
        and any(
            is_glob_match(r, arn)
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        )
        for s in policy["Statement"]
    )


@pytest.mark.parametrize("good", [True, False])
def test_the_sagemaker_role_allows_what_the_job_does(tmp_path: Path, good: bool) -> None:
    from shared.settings import Settings

    sample = Path(__file__).resolve().parents[2] / "localstack/samples/customers.csv"
    data = sample.read_bytes() if good else b"customer_id,age\nx,y\n"
    local = tmp_path / "staged" / "data.csv"
    local.parent.mkdir()
    local.write_bytes(data)
    topo = build_topology("prod")
    staged = REQ.staged.model_copy(update={"container": topo.bucket("staging").name})
    store = RecordingStore()
    result = run_job(
        store,  # type: ignore[arg-type]
        Settings(stage="prod"),
        dataset="customers",
        sha256=REQ.sha256,
        staged=staged,
        given=local.parent,
    )
    assert result.ok is good
    policy = sagemaker_role_policy(
        topo, AwsScope("me-central-1", "123456789012", "prod"), key_arn="arn:k"
    )
    # SageMaker itself reads the input as the role (an S3Prefix input lists, then gets).
    calls = [*store.calls, ("s3:GetObject", f"arn:aws:s3:::{staged.container}/{staged.key}")]
    calls.append(("s3:ListBucket", f"arn:aws:s3:::{staged.container}"))
    for action, arn in calls:
        assert _allowed(policy, action, arn), (action, arn)
    # ... and nothing the job no longer does: no lineage, no events, no staged delete.
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert not {a for a in actions if a.split(":")[0] in ("dynamodb", "events")}
    assert "s3:DeleteObject" not in actions


# --- a job's state, asked for when its end event never came --------------------------------


def _statuses() -> list[str]:
    """DescribeProcessingJob's ProcessingJobStatus values, from botocore's service model."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    out = model.operation_model("DescribeProcessingJob").output_shape
    assert out is not None
    return list(out.members["ProcessingJobStatus"].enum)


def _described(status: str, **extra: Any) -> dict[str, Any]:
    """A DescribeProcessingJob answer with its required members (Stubber checks them)."""
    return {
        "ProcessingJobName": EXPECTED["ProcessingJobName"],
        "ProcessingJobArn": "arn:aws:sagemaker:me-central-1:123456789012:processing-job/x",
        "ProcessingJobStatus": status,
        "ProcessingResources": EXPECTED["ProcessingResources"],
        "AppSpecification": EXPECTED["AppSpecification"],
        "CreationTime": "2026-11-22T10:00:00Z",
        **extra,
    }


def test_the_port_knows_every_status_sagemaker_reports() -> None:
    from typing import get_args

    from shared.ports import ValidationJobState

    fact = value("aws.sagemaker.processing_job_status")
    assert sorted(fact["statuses"]) == sorted(_statuses())  # the table is botocore's
    port = set(get_args(ValidationJobState.model_fields["status"].annotation))
    assert set(_statuses()) <= port


@pytest.mark.parametrize("status", _statuses())
def test_a_jobs_state_is_read_with_describe_processing_job(client, status: str) -> None:  # type: ignore[no-untyped-def]
    name = str(EXPECTED["ProcessingJobName"])
    failure = {"FailureReason": "ClientError: out of memory"} if status == "Failed" else {}
    with Stubber(client) as stub:
        stub.add_response(
            "describe_processing_job", _described(status, **failure), {"ProcessingJobName": name}
        )
        state = SageMakerValidationJobs(client, CFG).state(name)
        stub.assert_no_pending_responses()
    assert state.status == status
    assert state.failure_reason == (failure.get("FailureReason"))


def test_a_job_sagemaker_does_not_know_is_missing(client) -> None:  # type: ignore[no-untyped-def]
    with Stubber(client) as stub:
        stub.add_client_error("describe_processing_job", "ResourceNotFound", "no such job")
        assert (
            SageMakerValidationJobs(client, CFG).state("dhow-prod-validate-x").status == "Missing"
        )


def test_a_stuck_job_is_stopped_by_name_and_its_bound_is_the_requests_own(client) -> None:  # type: ignore[no-untyped-def]
    name = str(EXPECTED["ProcessingJobName"])
    jobs = SageMakerValidationJobs(client, CFG)
    # One definition: the bound the sweep waits for is what the launch asks SageMaker for.
    assert jobs.max_runtime_s == EXPECTED["StoppingCondition"]["MaxRuntimeInSeconds"]  # type: ignore[index]
    bounds = value("aws.sagemaker.processing_job_status")["max_runtime_s"]
    model = botocore.session.get_session().get_service_model("sagemaker")
    cond = model.shape_for("ProcessingStoppingCondition").members["MaxRuntimeInSeconds"]
    assert (bounds["min"], bounds["max"]) == (cond.metadata["min"], cond.metadata["max"])
    assert bounds["min"] <= jobs.max_runtime_s <= bounds["max"]
    with Stubber(client) as stub:
        stub.add_response("stop_processing_job", {}, {"ProcessingJobName": name})
        # Stopped already (the sweep raced its end): SageMaker refuses, nothing to do.
        stub.add_client_error("stop_processing_job", "ValidationException", "not in progress")
        jobs.stop(name)
        jobs.stop(name)
        stub.assert_no_pending_responses()


def test_a_retry_is_a_new_job_with_a_name_of_its_own(client) -> None:  # type: ignore[no-untyped-def]
    rule = value("aws.sagemaker.processing_job_name")
    retry = REQ.model_copy(update={"attempt": 2})
    first, second = processing_job_name(REQ, "dhow-prod"), processing_job_name(retry, "dhow-prod")
    assert second == first + "-r2"  # the first attempt keeps its name
    assert re.fullmatch(rule["pattern"], second)
    assert len(second) <= rule["max_length"]
    long = retry.model_copy(update={"dataset": "x" * 63, "attempt": 99})
    assert len(processing_job_name(long, "dhow-" + "s" * 21)) <= rule["max_length"]
    with Stubber(client) as stub:
        stub.add_response(
            "create_processing_job",
            {"ProcessingJobArn": "arn:x"},
            {**EXPECTED, "ProcessingJobName": second},
        )
        assert SageMakerValidationJobs(client, CFG).launch(retry) == second
