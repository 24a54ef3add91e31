"""The exact SageMaker CreateTrainingJob request, the GPU quota pre-flight and idempotency.

SageMaker and Service Quotas cannot run here; botocore's Stubber checks every
request we send against the API model and against the parameters we expect.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.stub import Stubber

from shared.adapters.aws import aws_client
from shared.adapters.sagemaker_training import (
    GpuQuotaUnavailable,
    SageMakerTrainingLauncher,
    TrainingJobConfig,
    training_job_name,
)
from shared.events import ObjectRef
from shared.ports import TrainingJobRequest
from shared.settings import Settings

SHA = "9f86" * 16
REQ = TrainingJobRequest(
    dataset="customers",
    sha256=SHA,
    spec_version="1+186971cb",
    trainer_version="0.1.0",
    curated=ObjectRef(
        container="dhow-prod-curated", key=f"datasets/customers/sha256={SHA}/data.parquet"
    ),
    target="churned",
    task="classification",
    instance_types=("ml.g5.xlarge", "ml.g4dn.xlarge"),
    hyperparameters={"max_depth": "6"},
    use_spot=True,
    max_runtime_s=3600,
    correlation_id="u-1",
)
CFG = TrainingJobConfig(
    image_uri="1234.dkr.ecr.me-central-1.amazonaws.com/sagemaker-xgboost:1.7-1",
    role_arn="arn:aws:iam::123456789012:role/dhow-prod-training",
    name_prefix="dhow-prod",
    output_s3_uri="s3://dhow-prod-models/models",
    checkpoint_s3_uri="s3://dhow-prod-models/checkpoints",
    kms_key_id="arn:aws:kms:me-central-1:123456789012:key/abcd",
    subnets=("subnet-a", "subnet-b"),
    security_groups=("sg-train",),
    region="me-central-1",
)
NAME = training_job_name(REQ, "dhow-prod")


def expected(instance_type: str) -> dict[str, Any]:
    return {
        "TrainingJobName": NAME,
        "AlgorithmSpecification": {"TrainingImage": CFG.image_uri, "TrainingInputMode": "File"},
        "RoleArn": CFG.role_arn,
        "HyperParameters": {"max_depth": "6", "target": "churned", "task": "classification"},
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://dhow-prod-curated/datasets/customers/sha256={SHA}/data.parquet",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "application/x-parquet",
                "InputMode": "File",
            }
        ],
        "OutputDataConfig": {
            "S3OutputPath": "s3://dhow-prod-models/models/customers/",
            "KmsKeyId": CFG.kms_key_id,
        },
        "ResourceConfig": {
            "InstanceType": instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": 50,
            "VolumeKmsKeyId": CFG.kms_key_id,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "VpcConfig": {"SecurityGroupIds": ["sg-train"], "Subnets": ["subnet-a", "subnet-b"]},
        "EnableNetworkIsolation": True,
        "EnableInterContainerTrafficEncryption": True,
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {
            "S3Uri": f"s3://dhow-prod-models/checkpoints/{NAME}/",
            "LocalPath": "/opt/ml/checkpoints",
        },
        "Tags": [
            {"Key": "dhow:dataset", "Value": "customers"},
            {"Key": "dhow:sha256", "Value": SHA},
            {"Key": "dhow:spec-version", "Value": "1+186971cb"},
            {"Key": "dhow:trainer-version", "Value": "0.1.0"},
            {"Key": "dhow:correlation-id", "Value": "u-1"},
        ],
    }


def quotas(**values: float) -> dict[str, Any]:
    """A ListServiceQuotas page: spot training quotas by instance type."""
    return {
        "Quotas": [
            {
                "QuotaName": f"{t.replace('_', '.')} for spot training job usage",
                "QuotaCode": f"L-{i:08X}",
                "Value": v,
                "ServiceCode": "sagemaker",
            }
            for i, (t, v) in enumerate(values.items())
        ]
        + [
            {
                "QuotaName": "ml.g5.xlarge for training job usage",
                "QuotaCode": "L-ONDEMAND",
                "Value": 4.0,
                "ServiceCode": "sagemaker",
            }
        ]
    }


@pytest.fixture
def clients() -> Any:
    settings = Settings()
    sm, sq = aws_client("sagemaker", settings), aws_client("service-quotas", settings)
    assert sm.meta.region_name == sq.meta.region_name == "me-central-1"
    with Stubber(sm) as sm_stub, Stubber(sq) as sq_stub:
        yield sm, sq, sm_stub, sq_stub
        sm_stub.assert_no_pending_responses()
        sq_stub.assert_no_pending_responses()


def not_found(stub: Stubber) -> None:
    stub.add_client_error(
        "describe_training_job",
        "ValidationException",
        "Requested resource not found.",
        expected_params={"TrainingJobName": NAME},
    )


def test_gpu_spot_request_is_exact(clients: Any) -> None:
    sm, sq, sm_stub, sq_stub = clients
    not_found(sm_stub)
    sq_stub.add_response(
        "list_service_quotas", quotas(ml_g5_xlarge=2.0), {"ServiceCode": "sagemaker"}
    )
    sm_stub.add_response(
        "create_training_job", {"TrainingJobArn": "arn:x"}, expected("ml.g5.xlarge")
    )
    out = SageMakerTrainingLauncher(sm, sq, CFG).launch(REQ)
    assert (out.job_name, out.instance_type, out.created) == (NAME, "ml.g5.xlarge", True)


def test_zero_quota_falls_back_to_the_next_listed_type(clients: Any) -> None:
    sm, sq, sm_stub, sq_stub = clients
    not_found(sm_stub)
    sq_stub.add_response(
        "list_service_quotas",
        quotas(ml_g5_xlarge=0.0, ml_g4dn_xlarge=1.0),
        {"ServiceCode": "sagemaker"},
    )
    sm_stub.add_response(
        "create_training_job", {"TrainingJobArn": "arn:x"}, expected("ml.g4dn.xlarge")
    )
    out = SageMakerTrainingLauncher(sm, sq, CFG).launch(REQ)
    assert out.instance_type == "ml.g4dn.xlarge"
    assert out.skipped == (
        "ml.g5.xlarge: quota 'ml.g5.xlarge for spot training job usage' (L-00000000) is 0",
    )


def test_zero_quota_everywhere_names_the_quotas_to_raise(clients: Any) -> None:
    sm, sq, sm_stub, sq_stub = clients
    not_found(sm_stub)
    sq_stub.add_response(
        "list_service_quotas",
        quotas(ml_g5_xlarge=0.0, ml_g4dn_xlarge=0.0),
        {"ServiceCode": "sagemaker"},
    )
    with pytest.raises(GpuQuotaUnavailable) as info:
        SageMakerTrainingLauncher(sm, sq, CFG).launch(REQ)
    assert info.value.reason == "gpu_quota_zero"
    assert "'ml.g5.xlarge for spot training job usage' (L-00000000)" in info.value.message
    assert "'ml.g4dn.xlarge for spot training job usage' (L-00000001)" in info.value.message
    assert "Service Quotas (me-central-1)" in info.value.hint


def test_a_duplicate_event_finds_the_job_and_launches_nothing(clients: Any) -> None:
    sm, sq, sm_stub, _ = clients
    sm_stub.add_response(
        "describe_training_job",
        {
            "TrainingJobName": NAME,
            "TrainingJobArn": "arn:x",
            "AlgorithmSpecification": {"TrainingInputMode": "File"},
            "ModelArtifacts": {"S3ModelArtifacts": "s3://m/model.tar.gz"},
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training",
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": "2026-11-22T12:00:00Z",
        },
        {"TrainingJobName": NAME},
    )
    out = SageMakerTrainingLauncher(sm, sq, CFG).launch(REQ)
    assert (out.created, out.instance_type) == (False, None)


def test_name_changes_with_spec_or_trainer_but_not_with_delivery() -> None:
    def name(**update: str) -> str:
        return training_job_name(REQ.model_copy(update=update), "dhow-prod")

    assert name(correlation_id="another-upload") == NAME
    assert name(spec_version="2+0") != NAME
    assert name(trainer_version="0.2.0") != NAME
    assert NAME.startswith("dhow-prod-customers-")
    assert len(NAME) <= 63


def test_a_spec_image_replaces_the_default_training_image(clients: Any) -> None:
    sm, sq, sm_stub, sq_stub = clients
    own = REQ.model_copy(update={"image": "1234.dkr.ecr.me-central-1.amazonaws.com/own:2"})
    not_found(sm_stub)
    sq_stub.add_response(
        "list_service_quotas", quotas(ml_g5_xlarge=2.0), {"ServiceCode": "sagemaker"}
    )
    body = expected("ml.g5.xlarge")
    body["AlgorithmSpecification"]["TrainingImage"] = own.image
    sm_stub.add_response("create_training_job", {"TrainingJobArn": "arn:x"}, body)
    SageMakerTrainingLauncher(sm, sq, CFG).launch(own)
