"""The exact SageMaker CreateProcessingJob request (SageMaker cannot run here)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from shared.adapters.aws import (
    ProcessingJobConfig,
    SageMakerValidationJobs,
    aws_client,
    processing_job_name,
)
from shared.events import ObjectRef
from shared.ports import ValidationJobRequest
from shared.settings import Settings

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
    kms_key_id="arn:aws:kms:me-central-1:123456789012:key/1111-2222",
    subnets=("subnet-a", "subnet-b"),
    security_groups=("sg-1",),
    environment=(("DHOW_STAGE", "prod"),),
)
STAGED_URI = f"s3://dhow-prod-staging/datasets/customers/sha256={'ab12' * 16}/data.csv"
EXPECTED = {
    "ProcessingJobName": "dhow-validate-customers-ab12ab12ab12-3-1a2b3c4d",
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
            "/opt/ml/processing/input/data",
        ],
    },
    "ProcessingInputs": [
        {
            "InputName": "staged",
            "S3Input": {
                "S3Uri": STAGED_URI,
                "LocalPath": "/opt/ml/processing/input",
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


def test_job_names_fit_sagemaker_limits() -> None:
    long = REQ.model_copy(update={"dataset": "x" * 63})
    name = processing_job_name(long)
    assert len(name) <= 63
    assert not name.endswith("-")
