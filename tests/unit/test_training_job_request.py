"""The exact SageMaker CreateTrainingJob request, the GPU quota pre-flight and idempotency.

SageMaker and Service Quotas cannot run here; botocore's Stubber checks every
request we send against the parameters we expect, and botocore's own validator judges
each CreateTrainingJob request against the service model. Which instance types may name
a volume key is judged by the SageMaker SDK's own rule (sagemaker-core).
"""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from sagemaker.core.common_utils import instance_supports_kms

from shared.adapters.aws import aws_client
from shared.adapters.sagemaker_training import (
    GpuQuotaUnavailable,
    SageMakerTrainingLauncher,
    TooManyTrainingInputs,
    TrainingJobConfig,
    has_instance_storage,
    trainer_code_key,
    training_job_name,
)
from shared.cloud_facts import fact, value
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
    code_s3_uri="s3://dhow-prod-models/code/trainer/0123456789abcdef/sourcedir.tar.gz",
    kms_key_id="arn:aws:kms:me-central-1:123456789012:key/abcd",
    subnets=("subnet-a", "subnet-b"),
    security_groups=("sg-train",),
    region="me-central-1",
)
NAME = training_job_name(REQ, "dhow-prod")


TRAIN_CHANNEL = {
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


def expected(instance_type: str) -> dict[str, Any]:
    # ml.g5 and ml.g4dn have local NVMe storage: no VolumeKmsKeyId (SageMaker refuses it).
    return {
        "TrainingJobName": NAME,
        "AlgorithmSpecification": {"TrainingImage": CFG.image_uri, "TrainingInputMode": "File"},
        "RoleArn": CFG.role_arn,
        # Script mode, every value JSON-encoded as the SDK's Framework estimator sends them.
        "HyperParameters": {
            "max_depth": '"6"',
            "target": '"churned"',
            "task": '"classification"',
            "sagemaker_program": '"trainer.py"',
            "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"',
            "sagemaker_container_log_level": "20",
            "sagemaker_job_name": json.dumps(NAME),
            "sagemaker_region": '"me-central-1"',
        },
        "InputDataConfig": [
            TRAIN_CHANNEL,
            {
                "ChannelName": "code",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": CFG.code_s3_uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            },
        ],
        "OutputDataConfig": {
            "S3OutputPath": "s3://dhow-prod-models/models/customers/",
            "KmsKeyId": CFG.kms_key_id,
        },
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 50},
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
    # A whole image of one's own runs its own entrypoint: no script mode, no code channel.
    body["HyperParameters"] = {"max_depth": "6", "target": "churned", "task": "classification"}
    body["InputDataConfig"] = [TRAIN_CHANNEL]
    sm_stub.add_response("create_training_job", {"TrainingJobArn": "arn:x"}, body)
    SageMakerTrainingLauncher(sm, sq, CFG).launch(own)


SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")


def launcher() -> SageMakerTrainingLauncher:
    settings = Settings()
    sm, sq = aws_client("sagemaker", settings), aws_client("service-quotas", settings)
    return SageMakerTrainingLauncher(sm, sq, CFG)


@pytest.mark.parametrize("instance_type", ["ml.g5.xlarge", "ml.g4dn.xlarge", "ml.m5.xlarge"])
def test_the_request_is_valid_for_botocore_s_model_of_create_training_job(
    instance_type: str,
) -> None:
    # botocore's validator, with the operation's own input shape: unknown or missing
    # members, wrong types and too-short values are refused by the model, not by us.
    params = launcher().request(REQ, instance_type)
    validate_parameters(params, SAGEMAKER.operation_model("CreateTrainingJob").input_shape)
    assert (
        params["ResourceConfig"]["InstanceType"] in SAGEMAKER.shape_for("TrainingInstanceType").enum
    )


def test_script_mode_runs_our_trainer_from_the_code_channel() -> None:
    mode = fact("aws.sagemaker.xgboost_script_mode").value
    params = launcher().request(REQ, "ml.g5.xlarge")
    # The container JSON-decodes each hyperparameter (sagemaker-containers
    # _env.read_hyperparameters); without sagemaker_program it would run the built-in
    # algorithm, which needs num_round and refuses target and task.
    hps = {k: json.loads(v) for k, v in params["HyperParameters"].items()}
    assert hps[mode["program_param"]] == "trainer.py"
    assert hps[mode["submit_directory_param"]] == mode["container_sourcedir"]
    assert (hps["target"], hps["task"], hps["max_depth"]) == ("churned", "classification", "6")
    assert "num_round" not in hps
    # SageMaker mounts channel <name> at /opt/ml/input/data/<name>: the code channel is
    # where sagemaker_submit_directory points, and it carries the stack's archive.
    code = next(c for c in params["InputDataConfig"] if c["ChannelName"] == mode["code_channel"])
    assert (
        mode["container_sourcedir"]
        == f"/opt/ml/input/data/{mode['code_channel']}/" + (mode["archive"])
    )
    assert code["DataSource"]["S3DataSource"]["S3Uri"] == CFG.code_s3_uri
    assert params["EnableNetworkIsolation"] is True
    assert trainer_code_key().endswith("/sourcedir.tar.gz")


def test_an_ebs_only_instance_keeps_the_stack_key_on_its_volume() -> None:
    rule = fact("aws.sagemaker.training_volume_kms_refused_on_instance_storage")
    with_nvme = launcher().request(REQ, "ml.g5.xlarge")["ResourceConfig"]
    ebs_only = launcher().request(REQ, "ml.m5.xlarge")["ResourceConfig"]
    assert rule.value not in with_nvme
    assert ebs_only[rule.value] == CFG.kms_key_id


def _instance_types() -> list[str]:
    names = ("TrainingInstanceType", "ProductionVariantInstanceType")
    return sorted({t for n in names for t in SAGEMAKER.shape_for(n).enum})


def test_instance_storage_families_agree_with_the_sagemaker_sdk() -> None:
    # The SDK's own rule for which instance types refuse a KMS volume key, over every
    # training and endpoint instance type botocore's model knows.
    families = fact("aws.sagemaker.instance_storage_families")
    assert families.value["family_prefixes"]
    disagree = [t for t in _instance_types() if has_instance_storage(t) == instance_supports_kms(t)]
    assert disagree == []
    assert has_instance_storage("ml.g5.xlarge")
    assert has_instance_storage("ml.g4dn.xlarge")
    assert not has_instance_storage("ml.m5.xlarge")


def _valid_for_botocore(shape_name: str, name: str) -> bool:
    """Whether ``name`` is within the length and pattern botocore's sagemaker model gives
    the shape (botocore's validator checks neither, so the test reads them itself)."""
    meta = SAGEMAKER.shape_for(shape_name).metadata
    return len(name) <= meta["max"] and re.fullmatch(meta["pattern"], name) is not None


def test_distinct_runs_of_a_long_dataset_on_a_long_stage_never_share_a_job_name() -> None:
    rule = value("aws.sagemaker.resource_name")
    assert SAGEMAKER.shape_for("TrainingJobName").metadata["max"] == rule["max_length"]
    assert SAGEMAKER.shape_for("TrainingJobName").metadata["pattern"] == rule["pattern"]
    prefix = "dhow-" + "s" * 21  # the longest stage settings accept
    long = REQ.model_copy(update={"dataset": "customer_churn_" + "x" * 48})  # 63, with "_"
    # More runs than two hex digits of an id can tell apart (256): all must differ.
    names = {
        training_job_name(long.model_copy(update={"run_tag": f"retrain-{i}"}), prefix)
        for i in range(300)
    }
    assert len(names) == 300
    assert all(_valid_for_botocore("TrainingJobName", n) for n in names)
    assert all(n.startswith(f"{prefix}-customer-churn-") for n in names)  # the rule's prefix
    # Two long datasets sharing a prefix, with the same data, are two jobs.
    other = long.model_copy(update={"dataset": "customer_churn_" + "x" * 47 + "y"})
    assert training_job_name(other, prefix) != training_job_name(long, prefix)


def _versions(n: int) -> TrainingJobRequest:
    """REQ learning from ``n`` curated versions (oldest first), as train-launch sends it."""
    shas = [f"{i:02x}" * 32 for i in range(n - 1)] + [SHA]
    refs = tuple(
        ObjectRef(container="dhow-prod-curated", key=f"datasets/customers/sha256={s}/data.parquet")
        for s in shas
    )
    return REQ.model_copy(update={"inputs": refs, "data_sha256s": tuple(shas)})


def test_a_run_on_several_versions_has_a_channel_for_each() -> None:
    """One S3Prefix channel per curated version (train, train_1, ...) besides the code
    channel, within CreateTrainingJob's channel limit as botocore's model states it."""
    rule = value("aws.sagemaker.training_input_channels")
    shape = SAGEMAKER.operation_model("CreateTrainingJob").input_shape
    assert shape is not None
    channels: Any = shape.members["InputDataConfig"]
    assert channels.metadata["max"] == rule["max"]
    name: Any = channels.member.members["ChannelName"]
    assert [name.metadata["min"], name.metadata["max"]] == rule["name_length"]
    assert name.metadata["pattern"] == rule["name_pattern"]

    req = _versions(3)
    params = launcher().request(req, "ml.g5.xlarge")
    validate_parameters(params, shape)
    data = [c for c in params["InputDataConfig"] if c["ChannelName"] != "code"]
    assert [c["ChannelName"] for c in data] == ["train", "train_1", "train_2"]
    assert [c["DataSource"]["S3DataSource"]["S3Uri"] for c in data] == [
        f"s3://{r.container}/{r.key}" for r in req.inputs
    ]
    assert all(re.fullmatch(rule["name_pattern"], c["ChannelName"]) for c in data)
    # The whole request stays as it was for a run on one version.
    assert launcher().request(REQ, "ml.g5.xlarge") == expected("ml.g5.xlarge")


def test_more_versions_than_channels_are_refused_before_the_call() -> None:
    room = value("aws.sagemaker.training_input_channels")["max"] - 1  # the code channel
    launcher().request(_versions(room), "ml.g5.xlarge")  # the most that fit
    with pytest.raises(TooManyTrainingInputs) as err:
        launcher().request(_versions(room + 1), "ml.g5.xlarge")
    assert err.value.reason == "too_many_training_inputs"
    assert "learn_from" in (err.value.hint or "")


def test_a_run_on_several_versions_is_another_job_than_one_on_its_newest() -> None:
    many, one = _versions(3), REQ
    assert training_job_name(many, "dhow-prod") != training_job_name(one, "dhow-prod")
    assert training_job_name(many, "dhow-prod") == training_job_name(_versions(3), "dhow-prod")
    assert _valid_for_botocore("TrainingJobName", training_job_name(many, "dhow-prod"))


def test_the_trainer_reads_each_channel_by_the_toolkit_s_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The channel names the request sends, as the training toolkit turns them into
    variables (fact aws.sagemaker.training_channel_environment), are what the trainer reads,
    in the request's order."""
    from shared.adapters.sagemaker_training import train_channel_names
    from shared.trainer import train_channels

    rule = value("aws.sagemaker.training_channel_environment")
    names = train_channel_names(4)
    for name in names:
        monkeypatch.setenv(rule["prefix"] + name.upper(), rule["folder"].format(channel=name))
    assert [str(p) for p in train_channels()] == [rule["folder"].format(channel=n) for n in names]
