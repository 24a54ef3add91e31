"""The exact requests deploy sends to Lambda, CodeDeploy and SageMaker.

None of them can run here (LocalStack's free edition has no CodeDeploy or SageMaker,
and cannot execute Lambda without Docker); botocore's Stubber checks every call,
in order, with every parameter, and fails on any call not expected.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from shared.adapters.aws import aws_client
from shared.adapters.codedeploy import (
    DeploymentRefused,
    LambdaCodeDeployDeployer,
    LambdaServingConfig,
    deployment_config_name,
)
from shared.adapters.sagemaker_endpoint import (
    EndpointConfig,
    SageMakerEndpointDeployer,
    endpoint_names,
)
from shared.artifacts import ARTIFACT_SHA256
from shared.canary import CanaryRule, alarm_names
from shared.cloud_facts import fact, value
from shared.errors import DeploymentInProgress, WorkInProgress
from shared.events import DeploymentCompleted
from shared.ports import ApprovalStatus, DeploymentPlan, LineageRecord, ModelRegistry, ModelVersion
from shared.settings import Settings
from shared.triggers import parse_deployment_state_change
from tests.helpers import load_event

FN = "dhow-prod-serve-customers"
SHA = "0a1b2c3d" + "e" * 56
# CodeDeploy's words when a group is busy (aws/aws-sdk-java#757, CircleCI aws-ecs-orb#181).
ACTIVE_MESSAGE = f"The Deployment Group '{FN}' already has an active Deployment 'd-7XKQ2ZB1C'"


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def plan(**kw: Any) -> DeploymentPlan:
    base: dict[str, Any] = {
        "dataset": "customers",
        "model_version": 3,
        "previous_version": 2,
        "artifact": "s3://dhow-prod-models/models/customers/job-3/output/model.tar.gz",
        "artifact_sha256": SHA,
        "image": "local:shared.trainer",
        "strategy": "canary",
        "step_percent": 10,
        "interval_minutes": 5,
        "error_rate_threshold": 0.05,
        "p99_latency_ms": 2000,
        "min_requests": 20,
        "capture_sampling": 0.5,
        "instance_type": "ml.g5.xlarge",
        "instance_count": 2,
    }
    return DeploymentPlan(**{**base, **kw})


ALERTS = "arn:aws:sns:me-central-1:123456789012:dhow-prod-alerts"


def stub_alarms_pointed_at(cw: Stubber, version: str) -> None:
    """DescribeAlarms of the two alarms, then each one's full PutMetricAlarm for
    ``version`` with the actions the stack gave it (PutMetricAlarm overwrites all)."""
    assert fact("aws.cloudwatch.put_metric_alarm_overwrites").value == "overwrite"
    names = list(alarm_names(FN))
    cw.add_response(
        "describe_alarms",
        {"MetricAlarms": [{"AlarmName": n, "AlarmActions": [ALERTS]} for n in names]},
        {"AlarmNames": names, "AlarmTypes": ["MetricAlarm"]},
    )
    for alarm in CanaryRule(20, 0.05, 2000).alarms(FN, version):
        cw.add_response(
            "put_metric_alarm",
            {},
            {
                **alarm,
                "ActionsEnabled": True,
                "AlarmActions": [ALERTS],
                "OKActions": [],
                "InsufficientDataActions": [],
            },
        )


def test_lambda_canary_publishes_a_version_and_asks_codedeploy_to_shift_the_alias() -> None:
    settings = Settings(stage="prod")
    lam, cd = aws_client("lambda", settings), aws_client("codedeploy", settings)
    cw = aws_client("cloudwatch", settings)
    deployer = LambdaCodeDeployDeployer(
        lam, cd, LambdaServingConfig(name_prefix="dhow-prod"), sleep=lambda _s: None, cloudwatch=cw
    )
    env = {"DHOW_SERVE_DATASET": "customers", "DHOW_SERVE_MODEL_VERSION": "2"}
    appspec = {
        "Resources": [
            {
                FN: {
                    "Properties": {
                        "Alias": "live",
                        "CurrentVersion": "7",
                        "Name": FN,
                        "TargetVersion": "8",
                    },
                    "Type": "AWS::Lambda::Function",
                }
            }
        ],
        "version": 0.0,
    }
    content = json.dumps(appspec, sort_keys=True)
    with Stubber(lam) as ls, Stubber(cd) as cs, Stubber(cw) as ws:
        ls.add_response(
            "get_function_configuration",
            {"RevisionId": "r1", "Environment": {"Variables": env}},
            {"FunctionName": FN},
        )
        ls.add_response(
            "update_function_configuration",
            {"RevisionId": "r2"},
            {
                "FunctionName": FN,
                "Environment": {"Variables": {**env, "DHOW_SERVE_MODEL_VERSION": "3"}},
                "RevisionId": "r1",
            },
        )
        ls.add_response(
            "get_function_configuration",
            {"RevisionId": "r2", "LastUpdateStatus": "InProgress"},
            {"FunctionName": FN},
        )
        ls.add_response(
            "get_function_configuration",
            {"RevisionId": "r3", "LastUpdateStatus": "Successful"},
            {"FunctionName": FN},
        )
        ls.add_response(
            "publish_version",
            {"Version": "8"},
            {
                "FunctionName": FN,
                "Description": f"dhow customers model v3 sha256 {SHA[:12]}",
                "RevisionId": "r3",
            },
        )
        ls.add_response("get_alias", {"FunctionVersion": "7"}, {"FunctionName": FN, "Name": "live"})
        # Before CodeDeploy watches them, the alarms judge version 8's own requests.
        stub_alarms_pointed_at(ws, "8")
        cs.add_response(
            "create_deployment",
            {"deploymentId": "d-7XKQ2ZB1C"},
            {
                "applicationName": "dhow-prod-serving",
                "deploymentGroupName": FN,
                "revision": {
                    "revisionType": "AppSpecContent",
                    "appSpecContent": {
                        "content": content,
                        "sha256": hashlib.sha256(content.encode()).hexdigest(),
                    },
                },
                "deploymentConfigName": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
                "description": "dhow customers model v3 (canary)",
                "autoRollbackConfiguration": {
                    "enabled": True,
                    "events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"],
                },
            },
        )
        started = deployer.start(plan())
        ls.assert_no_pending_responses()
        cs.assert_no_pending_responses()
        ws.assert_no_pending_responses()
    assert started.deployment_id == "d-7XKQ2ZB1C"
    assert started.target == f"{FN}:live"


def test_a_canary_without_its_alarms_is_refused_before_codedeploy_starts() -> None:
    settings = Settings(stage="prod")
    lam, cd = aws_client("lambda", settings), aws_client("codedeploy", settings)
    cw = aws_client("cloudwatch", settings)
    deployer = LambdaCodeDeployDeployer(
        lam, cd, LambdaServingConfig(name_prefix="dhow-prod"), sleep=lambda _s: None, cloudwatch=cw
    )
    env = {"DHOW_SERVE_DATASET": "customers", "DHOW_SERVE_MODEL_VERSION": "3"}
    with Stubber(lam) as ls, Stubber(cd) as cs, Stubber(cw) as ws:
        ls.add_response(
            "get_function_configuration",
            {"RevisionId": "r1", "Environment": {"Variables": env}},
            {"FunctionName": FN},
        )
        ls.add_response(
            "publish_version",
            {"Version": "8"},
            {"FunctionName": FN, "Description": ANY, "RevisionId": "r1"},
        )
        ls.add_response("get_alias", {"FunctionVersion": "7"}, {"FunctionName": FN, "Name": "live"})
        ws.add_response(
            "describe_alarms", {"MetricAlarms": []}, {"AlarmNames": ANY, "AlarmTypes": ANY}
        )
        with pytest.raises(DeploymentRefused, match=r"no rollback alarm .*-errors"):
            deployer.start(plan())
        cs.assert_no_pending_responses()  # and no create_deployment was sent


@pytest.mark.parametrize(
    ("strategy", "pct", "minutes", "name"),
    [
        ("canary", 10, 5, "CodeDeployDefault.LambdaCanary10Percent5Minutes"),
        ("canary", 10, 30, "CodeDeployDefault.LambdaCanary10Percent30Minutes"),
        ("linear", 10, 1, "CodeDeployDefault.LambdaLinear10PercentEvery1Minute"),
        ("linear", 10, 10, "CodeDeployDefault.LambdaLinear10PercentEvery10Minutes"),
        ("all_at_once", 10, 5, "CodeDeployDefault.LambdaAllAtOnce"),
        # No predefined config: the stack creates this custom one from the spec.
        ("canary", 20, 1, "dhow-prod-lambda-canary-20pct-1min"),
    ],
)
def test_deployment_configs(strategy: str, pct: int, minutes: int, name: str) -> None:
    assert deployment_config_name("dhow-prod", strategy, pct, minutes) == name


def test_lambda_traffic_reads_the_alias_weights_as_model_versions() -> None:
    settings = Settings(stage="prod")
    lam, cd = aws_client("lambda", settings), aws_client("codedeploy", settings)
    deployer = LambdaCodeDeployDeployer(
        lam,
        cd,
        LambdaServingConfig(name_prefix="dhow-prod"),
        cloudwatch=aws_client("cloudwatch", settings),
    )
    with Stubber(lam) as ls:
        ls.add_response(
            "get_alias",
            {"FunctionVersion": "7", "RoutingConfig": {"AdditionalVersionWeights": {"8": 0.1}}},
            {"FunctionName": FN, "Name": "live"},
        )
        for lv, mv in (("7", "2"), ("8", "3")):
            ls.add_response(
                "get_function_configuration",
                {"Environment": {"Variables": {"DHOW_SERVE_MODEL_VERSION": mv}}},
                {"FunctionName": FN, "Qualifier": lv},
            )
        assert deployer.traffic("customers") == {"2": 0.9, "3": 0.1}


def endpoint_deployer() -> tuple[SageMakerEndpointDeployer, Any]:
    sm = aws_client("sagemaker", Settings(stage="prod"))
    cfg = EndpointConfig(
        name_prefix="dhow-prod",
        role_arn="arn:aws:iam::123456789012:role/dhow-prod-sagemaker",
        image_uri="123456789012.dkr.ecr.me-central-1.amazonaws.com/dhow-serve:1",
        kms_key_id="arn:aws:kms:me-central-1:123456789012:key/k1",
        capture_bucket="dhow-prod-capture",
        subnets=("subnet-a", "subnet-b"),
        security_groups=("sg-1",),
    )
    return SageMakerEndpointDeployer(sm, cfg), sm


def stub_model_and_config(
    stub: Stubber, instance_type: str = "ml.g5.xlarge", *, volume_key: bool = False
) -> None:
    """``volume_key``: whether the config names the stack's key for the instance volume,
    which SageMaker refuses on instance types with local NVMe storage (ml.g5)."""
    tags = [
        {"Key": "dhow:dataset", "Value": "customers"},
        {"Key": "dhow:model-version", "Value": "3"},
    ]
    stub.add_response(
        "create_model",
        {"ModelArn": "arn:aws:sagemaker:me-central-1:123456789012:model/dhow-prod-customers-v3"},
        {
            "ModelName": "dhow-prod-customers-v3",
            "PrimaryContainer": {
                "Image": "123456789012.dkr.ecr.me-central-1.amazonaws.com/dhow-serve:1",
                "ModelDataUrl": plan().artifact,
                "Environment": {
                    "DHOW_DATASET": "customers",
                    "DHOW_MODEL_VERSION": "3",
                    "DHOW_ARTIFACT_SHA256": SHA,
                },
            },
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/dhow-prod-sagemaker",
            "EnableNetworkIsolation": True,
            "Tags": tags,
            "VpcConfig": {"Subnets": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]},
        },
    )
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:me-central-1:123456789012:endpoint-config/x"},
        {
            "EndpointConfigName": "dhow-prod-customers-v3-0a1b2c3d",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "dhow-prod-customers-v3",
                    "InstanceType": instance_type,
                    "InitialInstanceCount": 2,
                }
            ],
            **({"KmsKeyId": "arn:aws:kms:me-central-1:123456789012:key/k1"} if volume_key else {}),
            "DataCaptureConfig": {
                "EnableCapture": True,
                "InitialSamplingPercentage": 50,
                "DestinationS3Uri": "s3://dhow-prod-capture/datasets/customers/endpoint",
                "KmsKeyId": "arn:aws:kms:me-central-1:123456789012:key/k1",
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
            },
            "Tags": tags,
        },
    )


def test_endpoint_update_is_blue_green_canary_with_alarm_rollback() -> None:
    deployer, sm = endpoint_deployer()
    with Stubber(sm) as stub:
        stub_model_and_config(stub)
        stub.add_response(
            "describe_endpoint",
            {
                "EndpointName": FN,
                "EndpointArn": "arn:aws:sagemaker:me-central-1:123456789012:endpoint/x",
                "EndpointConfigName": "dhow-prod-customers-v2-99999999",
                "EndpointStatus": "InService",
                "CreationTime": "2026-11-01T00:00:00Z",
                "LastModifiedTime": "2026-11-01T00:00:00Z",
            },
            {"EndpointName": FN},
        )
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:me-central-1:123456789012:endpoint/x"},
            {
                "EndpointName": FN,
                "EndpointConfigName": "dhow-prod-customers-v3-0a1b2c3d",
                "DeploymentConfig": {
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {
                            "Type": "CANARY",
                            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                            "WaitIntervalInSeconds": 300,
                        },
                        "TerminationWaitInSeconds": 600,
                        "MaximumExecutionTimeoutInSeconds": 6600,
                    },
                    "AutoRollbackConfiguration": {
                        "Alarms": [
                            {"AlarmName": f"{FN}-5xx-errors"},
                            {"AlarmName": f"{FN}-p99-latency"},
                        ]
                    },
                },
            },
        )
        started = deployer.start(plan())
        stub.assert_no_pending_responses()
    assert started.deployment_id == "dhow-prod-customers-v3-0a1b2c3d"


def test_a_new_endpoint_is_created_and_linear_routing_is_spelled_out() -> None:
    deployer, sm = endpoint_deployer()
    with Stubber(sm) as stub:
        stub_model_and_config(stub)
        stub.add_client_error(
            "describe_endpoint",
            service_error_code="ValidationException",
            service_message=f'Could not find endpoint "{FN}".',
        )
        stub.add_response(
            "create_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:me-central-1:123456789012:endpoint/x"},
            {
                "EndpointName": FN,
                "EndpointConfigName": "dhow-prod-customers-v3-0a1b2c3d",
                "Tags": ANY,
            },
        )
        deployer.start(plan(previous_version=None, strategy="all_at_once"))
        stub.assert_no_pending_responses()
    linear = SageMakerEndpointDeployer.traffic_routing(plan(strategy="linear", step_percent=25))
    assert linear == {
        "Type": "LINEAR",
        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        "WaitIntervalInSeconds": 300,
    }


ENDPOINT_ARN = "arn:aws:sagemaker:me-central-1:123456789012:endpoint/x"


def test_an_endpoint_on_local_nvme_storage_names_no_volume_key() -> None:
    # ml.g5.xlarge (the spec default) has local NVMe storage: CreateEndpointConfig fails
    # if KmsKeyId is given. The capture stays encrypted with the stack's key.
    rule = fact("aws.sagemaker.endpoint_kms_refused_on_instance_storage")
    assert rule.value == "KmsKeyId"
    deployer, sm = endpoint_deployer()
    with Stubber(sm) as stub:
        stub_model_and_config(stub, "ml.g5.xlarge", volume_key=False)
        stub.add_client_error(
            "describe_endpoint",
            service_error_code="ValidationException",
            service_message=f'Could not find endpoint "{FN}".',
        )
        stub.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN})
        deployer.start(plan(previous_version=None, strategy="all_at_once"))
        stub.assert_no_pending_responses()


def test_an_endpoint_on_ebs_storage_keeps_the_stack_key_for_its_volume() -> None:
    deployer, sm = endpoint_deployer()
    with Stubber(sm) as stub:
        stub_model_and_config(stub, "ml.m5.xlarge", volume_key=True)
        stub.add_client_error(
            "describe_endpoint",
            service_error_code="ValidationException",
            service_message=f'Could not find endpoint "{FN}".',
        )
        stub.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN})
        deployer.start(
            plan(previous_version=None, strategy="all_at_once", instance_type="ml.m5.xlarge")
        )
        stub.assert_no_pending_responses()


def test_platform_end_events_parse_into_state_changes() -> None:
    cd = parse_deployment_state_change(
        json.dumps(load_event("codedeploy_deployment_state_change.json")), "dhow-prod--serve-"
    )
    assert cd is not None
    assert (cd.dataset, cd.deployment_id, cd.status) == ("customers", "d-7XKQ2ZB1C", "RolledBack")
    assert not cd.supersedes_open
    ep = parse_deployment_state_change(
        json.dumps(load_event("sagemaker_endpoint_state_change.json")), "dhow-prod--serve-"
    )
    assert ep is not None
    assert (ep.dataset, ep.deployment_id, ep.status) == (
        "customers",
        "dhow-prod--customers-v3-0a1b2c3d",
        "Succeeded",
    )
    assert ep.supersedes_open
    # Another stage's deployment group is not ours; a START is not an end.
    assert (
        parse_deployment_state_change(
            json.dumps(load_event("codedeploy_deployment_state_change.json")), "dhow-dev-serve-"
        )
        is None
    )
    started = load_event("codedeploy_deployment_state_change.json")
    started["detail"]["state"] = "START"
    assert parse_deployment_state_change(json.dumps(started), "dhow-prod--serve-") is None


def test_rollback_of_a_long_named_dataset_finds_its_config_and_shifts_at_once() -> None:
    deployer, sm = endpoint_deployer()
    dataset = "d" * 63  # the longest name ingest accepts
    model, config = endpoint_names("dhow-prod", dataset, 12, SHA)
    assert len(config) <= 63
    assert model.endswith("-v12")  # the dataset is shortened, never the version
    endpoint = f"dhow-prod-serve-{dataset}"
    with Stubber(sm) as stub:
        stub.add_response(
            "list_endpoint_configs",
            {
                "EndpointConfigs": [
                    {
                        "EndpointConfigName": config,
                        "EndpointConfigArn": "arn:aws:sagemaker:me-central-1:1:endpoint-config/x",
                        "CreationTime": "2026-11-01T00:00:00Z",
                    }
                ]
            },
            {"NameContains": f"{model}-", "SortBy": "CreationTime", "SortOrder": "Descending"},
        )
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:me-central-1:123456789012:endpoint/x"},
            {
                "EndpointName": endpoint,
                "EndpointConfigName": config,
                "DeploymentConfig": {
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {
                            "Type": "ALL_AT_ONCE",
                            "WaitIntervalInSeconds": 0,
                        },
                        "TerminationWaitInSeconds": 0,
                    },
                    "AutoRollbackConfiguration": {
                        "Alarms": [
                            {"AlarmName": f"{endpoint}-5xx-errors"},
                            {"AlarmName": f"{endpoint}-p99-latency"},
                        ]
                    },
                },
            },
        )
        assert deployer.rollback(dataset, 12, "bad canary") == config
        stub.assert_no_pending_responses()


def test_a_refused_deployment_puts_the_alarms_back_as_they_were() -> None:
    """CodeDeploy refuses the deployment (one is already active): the alarms were already
    pointed at version 8, which will get no traffic. Each is put back with exactly the
    configuration DescribeAlarms read before the change, and the refusal is raised as a
    wait (``DeploymentInProgress``, a WorkInProgress), not an unknown error that the
    queue retries into its DLQ."""
    from datetime import UTC, datetime

    from botocore.exceptions import ClientError

    settings = Settings(stage="prod")
    lam, cd = aws_client("lambda", settings), aws_client("codedeploy", settings)
    cw = aws_client("cloudwatch", settings)
    deployer = LambdaCodeDeployDeployer(
        lam, cd, LambdaServingConfig(name_prefix="dhow-prod"), sleep=lambda _s: None, cloudwatch=cw
    )
    env = {"DHOW_SERVE_DATASET": "customers", "DHOW_SERVE_MODEL_VERSION": "3"}
    # The alarms as they stand: judging version 7 with an older spec's thresholds, with
    # the stack's actions, and the state fields PutMetricAlarm does not take.
    before = [
        {**a, "ActionsEnabled": True, "AlarmActions": [ALERTS], "OKActions": [ALERTS],
         "InsufficientDataActions": []}
        for a in CanaryRule(50, 0.02, 1500).alarms(FN, "7")
    ]  # fmt: skip
    now = datetime(2025, 5, 1, tzinfo=UTC)
    described = [
        {**a, "AlarmArn": f"arn:aws:cloudwatch:me-central-1:123456789012:alarm:{a['AlarmName']}",
         "StateValue": "OK", "StateReason": "fine", "StateUpdatedTimestamp": now,
         "AlarmConfigurationUpdatedTimestamp": now, "StateTransitionedTimestamp": now}
        for a in before
    ]  # fmt: skip
    with Stubber(lam) as ls, Stubber(cd) as cs, Stubber(cw) as ws:
        ls.add_response(
            "get_function_configuration",
            {"RevisionId": "r1", "Environment": {"Variables": env}},
            {"FunctionName": FN},
        )
        ls.add_response(
            "publish_version",
            {"Version": "8"},
            {"FunctionName": FN, "Description": ANY, "RevisionId": "r1"},
        )
        ls.add_response("get_alias", {"FunctionVersion": "7"}, {"FunctionName": FN, "Name": "live"})
        names = list(alarm_names(FN))
        ws.add_response(
            "describe_alarms",
            {"MetricAlarms": described},
            {"AlarmNames": names, "AlarmTypes": ["MetricAlarm"]},
        )
        for alarm in CanaryRule(20, 0.05, 2000).alarms(FN, "8"):
            ws.add_response(
                "put_metric_alarm",
                {},
                {
                    **alarm,
                    "ActionsEnabled": True,
                    "AlarmActions": [ALERTS],
                    "OKActions": [ALERTS],
                    "InsufficientDataActions": [],
                },
            )
        cs.add_client_error(
            "create_deployment",
            service_error_code=fact("aws.codedeploy.active_deployment_error").value,
            service_message=ACTIVE_MESSAGE,
            http_status_code=400,
        )
        for alarm in before:  # back as it was, field for field
            ws.add_response("put_metric_alarm", {}, alarm)
        with pytest.raises(DeploymentInProgress) as refused:
            deployer.start(plan())
        assert isinstance(refused.value, WorkInProgress)
        assert refused.value.reason == "deployment_in_progress"
        assert isinstance(refused.value.__cause__, ClientError)
        ls.assert_no_pending_responses()
        cs.assert_no_pending_responses()
        ws.assert_no_pending_responses()


def test_the_spec_s_current_thresholds_reach_the_alarms_at_the_next_deployment() -> None:
    """The stack ignores every alarm field after creating it (infra/aws/serving.py), so a
    spec's new thresholds go out with the deployment's own PutMetricAlarm: all of them,
    as CanaryRule renders the plan's numbers, whatever the alarm said before."""
    settings = Settings(stage="prod")
    lam, cd = aws_client("lambda", settings), aws_client("codedeploy", settings)
    cw = aws_client("cloudwatch", settings)
    deployer = LambdaCodeDeployDeployer(
        lam, cd, LambdaServingConfig(name_prefix="dhow-prod"), sleep=lambda _s: None, cloudwatch=cw
    )
    env = {"DHOW_SERVE_DATASET": "customers", "DHOW_SERVE_MODEL_VERSION": "3"}
    stale = CanaryRule(20, 0.05, 2000).alarms(FN, "7")  # what the stack first created
    with Stubber(lam) as ls, Stubber(cd) as cs, Stubber(cw) as ws:
        ls.add_response(
            "get_function_configuration",
            {"RevisionId": "r1", "Environment": {"Variables": env}},
            {"FunctionName": FN},
        )
        ls.add_response(
            "publish_version",
            {"Version": "8"},
            {"FunctionName": FN, "Description": ANY, "RevisionId": "r1"},
        )
        ls.add_response("get_alias", {"FunctionVersion": "7"}, {"FunctionName": FN, "Name": "live"})
        ws.add_response(
            "describe_alarms",
            {"MetricAlarms": [{**a, "AlarmActions": [ALERTS]} for a in stale]},
            {"AlarmNames": list(alarm_names(FN)), "AlarmTypes": ["MetricAlarm"]},
        )
        new = CanaryRule(50, 0.02, 1500).alarms(FN, "8")
        for alarm in new:
            ws.add_response(
                "put_metric_alarm",
                {},
                {**alarm, "ActionsEnabled": True, "AlarmActions": [ALERTS], "OKActions": [],
                 "InsufficientDataActions": []},
            )  # fmt: skip
        cs.add_response("create_deployment", {"deploymentId": "d-1"}, None)
        deployer.start(plan(min_requests=50, error_rate_threshold=0.02, p99_latency_ms=1500))
        ws.assert_no_pending_responses()
    assert [a["Threshold"] for a in new] == [0.02, 1500.0]
    assert all("requests >= 50" in a["Metrics"][0]["Expression"] for a in new)


SAGEMAKER_MODEL = botocore.session.get_session().get_service_model("sagemaker")


def _valid_for_botocore(shape_name: str, name: str) -> bool:
    """Within the length and pattern botocore's sagemaker model gives the shape."""
    meta = SAGEMAKER_MODEL.shape_for(shape_name).metadata
    return len(name) <= meta["max"] and re.fullmatch(meta["pattern"], name) is not None


def test_two_long_datasets_sharing_a_prefix_never_share_a_model() -> None:
    rule = value("aws.sagemaker.resource_name")
    for shape in ("ModelName", "EndpointConfigName", "EndpointName"):
        assert SAGEMAKER_MODEL.shape_for(shape).metadata["max"] == rule["max_length"]
    first, second = "a" * 59 + "1", "a" * 59 + "2"  # 60 characters, one apart at the end
    one = endpoint_names("dhow-prod", first, 4, SHA)
    two = endpoint_names("dhow-prod", second, 4, SHA)
    assert one[0] != two[0]  # else the second dataset's endpoint serves the first's model
    assert one[1] != two[1]
    underscored = endpoint_names("dhow-prod", "churn_model", 4, SHA)
    hyphened = endpoint_names("dhow-prod", "churn-model", 4, SHA)
    assert underscored != hyphened
    for model, config in (one, two, underscored, hyphened):
        assert _valid_for_botocore("ModelName", model), model
        assert _valid_for_botocore("EndpointConfigName", config), config
        assert model.endswith("-v4")
    # A short, plain name keeps the name it always had.
    assert endpoint_names("dhow-prod", "customers", 3, SHA) == (
        "dhow-prod-customers-v3",
        "dhow-prod-customers-v3-0a1b2c3d",
    )


def lambda_deployer() -> tuple[LambdaCodeDeployDeployer, Any, Any, Any]:
    settings = Settings(stage="prod")
    lam, cd = aws_client("lambda", settings), aws_client("codedeploy", settings)
    cw = aws_client("cloudwatch", settings)
    deployer = LambdaCodeDeployDeployer(
        lam, cd, LambdaServingConfig(name_prefix="dhow-prod"), sleep=lambda _s: None, cloudwatch=cw
    )
    return deployer, lam, cd, cw


def test_codedeploy_s_busy_group_error_is_the_one_its_model_lists() -> None:
    """The code deploy waits on is one CreateDeployment can return, by botocore's own
    service model; the name the brief guessed (DeploymentAlreadyStartedException) is not
    among them, so matching it would leave the real refusal a poisoned message."""
    _, _, cd, _ = lambda_deployer()
    errors = {
        e.name for e in cd.meta.service_model.operation_model("CreateDeployment").error_shapes
    }
    code = fact("aws.codedeploy.active_deployment_error").value
    assert code in errors
    assert "DeploymentAlreadyStartedException" not in errors


def test_other_codedeploy_refusals_are_raised_as_they_are() -> None:
    """Only the busy group waits: a role CodeDeploy cannot use is a real fault."""
    from botocore.exceptions import ClientError

    deployer, lam, cd, cw = lambda_deployer()
    env = {"DHOW_SERVE_DATASET": "customers", "DHOW_SERVE_MODEL_VERSION": "3"}
    with Stubber(lam) as ls, Stubber(cd) as cs, Stubber(cw) as ws:
        ls.add_response(
            "get_function_configuration",
            {"RevisionId": "r1", "Environment": {"Variables": env}},
            {"FunctionName": FN},
        )
        ls.add_response("publish_version", {"Version": "8"}, None)
        ls.add_response("get_alias", {"FunctionVersion": "7"}, None)
        stub_alarms_pointed_at(ws, "8")
        cs.add_client_error("create_deployment", service_error_code="InvalidRoleException")
        for _ in range(2):
            ws.add_response("put_metric_alarm", {}, None)
        with pytest.raises(ClientError, match="InvalidRoleException") as refused:
            deployer.start(plan())
        assert not isinstance(refused.value, WorkInProgress)


def deployment_info(**kw: Any) -> dict[str, Any]:
    return {
        "deploymentInfo": {
            "applicationName": "dhow-prod-serving",
            "deploymentGroupName": FN,
            "deploymentId": "d-7XKQ2ZB1C",
            "creator": "user",
            "description": "dhow customers model v3 (canary)",
            "computePlatform": "Lambda",
            **kw,
        }
    }


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"status": "Succeeded"}, ("Succeeded", 3)),
        ({"status": "InProgress"}, ("InProgress", 3)),
        ({"status": "Baking"}, ("InProgress", 3)),
        (
            {
                "status": "Stopped",
                "errorInformation": {"code": "ALARM_ACTIVE", "message": "alarm fired"},
            },
            ("RolledBack", 3),
        ),
        # CodeDeploy's own rollback deployment, or one made in the console: not Dhow's.
        ({"status": "Succeeded", "creator": "codeDeployRollback"}, ("Succeeded", None)),
        ({"status": "Succeeded", "description": "hotfix by hand"}, ("Succeeded", None)),
        ({"status": "Succeeded", "deploymentGroupName": FN + "x"}, ("Succeeded", None)),
    ],
)
def test_an_end_is_confirmed_with_get_deployment(
    info: dict[str, Any], expected: tuple[str, int | None]
) -> None:
    deployer, _, cd, _ = lambda_deployer()
    with Stubber(cd) as cs:
        cs.add_response("get_deployment", deployment_info(**info), {"deploymentId": "d-7XKQ2ZB1C"})
        confirmed = deployer.confirm("customers", "d-7XKQ2ZB1C")
        cs.assert_no_pending_responses()
    assert confirmed is not None
    assert (confirmed.status, confirmed.model_version) == expected
    if confirmed.status == "RolledBack":
        assert confirmed.reason == "ALARM_ACTIVE: alarm fired"


def test_get_deployment_statuses_and_creator_are_codedeploy_s_own() -> None:
    """Every status botocore's model has is mapped, to exactly one outcome, and the
    creator deploy trusts is one of the model's."""
    _, _, cd, _ = lambda_deployer()
    model = cd.meta.service_model
    statuses = fact("aws.codedeploy.deployment_status").value
    mapped = [s for group in statuses.values() for s in group]
    assert sorted(mapped) == sorted(model.shape_for("DeploymentStatus").enum)
    assert len(mapped) == len(set(mapped))
    assert fact("aws.codedeploy.user_creator").value in model.shape_for("DeploymentCreator").enum


@pytest.mark.parametrize("dataset", ["churn_model", "c" * 50])
def test_a_dataset_whose_endpoint_name_sagemaker_refuses_is_refused_before_any_call(
    dataset: str,
) -> None:
    rule = value("aws.sagemaker.resource_name")
    assert SAGEMAKER_MODEL.shape_for("EndpointName").metadata["pattern"] == rule["pattern"]
    assert not _valid_for_botocore("EndpointName", f"dhow-prod-serve-{dataset}")
    deployer, sm = endpoint_deployer()
    with Stubber(sm) as stub, pytest.raises(DeploymentRefused, match="not a valid SageMaker"):
        deployer.start(plan(dataset=dataset))  # the stub has no answers: no call was made
    stub.assert_no_pending_responses()


class OneVersionRegistry(ModelRegistry):
    """v3 approved: all the registry deploy reads when an end event comes."""

    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.v3 = ModelVersion(
            dataset="customers", version=3, status="Approved", artifact=plan().artifact,
            image="", lineage={ARTIFACT_SHA256: SHA}, created_at=datetime.now(UTC),
        )  # fmt: skip
        self.statuses: list[tuple[int, str]] = []

    def register(self, dataset: str, **kw: Any) -> ModelVersion:
        raise AssertionError("deploy registers nothing")

    def versions(self, dataset: str) -> list[ModelVersion]:
        return [self.v3]

    def set_status(self, dataset: str, version: int, status: ApprovalStatus, reason: str) -> None:
        self.statuses.append((version, status))


@pytest.mark.parametrize(("creator", "finished"), [("user", True), ("codeDeployRollback", False)])
def test_an_end_before_its_id_is_recorded_is_matched_by_get_deployment(
    creator: str, finished: bool
) -> None:
    """CodeDeploy's SUCCESS for d-7XKQ2ZB1C reaches deploy while the row of v3 is still
    claimed (CreateDeployment returned, the id not yet written). GetDeployment names the
    version from the deployment's description, and the row is finished; CodeDeploy's
    own rollback deployment, with the same description, is not Dhow's to finish."""
    from shared.services.deploy import DeployService
    from tests.helpers import MemoryBus, MemoryLineage

    deployer, _, cd, _ = lambda_deployer()
    lineage, bus = MemoryLineage(), MemoryBus()
    lineage.put_if_absent(
        LineageRecord(
            dataset="customers", record_id="deploy:v3", kind="deploy", status="claimed",
            attributes={"model_version": 3, "correlation_id": "c-3", "previous_version": 2},
        )
    )  # fmt: skip
    svc = DeployService(deployer, OneVersionRegistry(), bus, lineage)
    end = load_event("codedeploy_deployment_state_change.json")
    end["detail"]["state"] = "SUCCESS"
    change = parse_deployment_state_change(json.dumps(end), "dhow-prod--serve-")
    assert change is not None
    with Stubber(cd) as cs:
        cs.add_response(
            "get_deployment",
            deployment_info(status="Succeeded", creator=creator),
            {"deploymentId": "d-7XKQ2ZB1C"},
        )
        out = svc.on_state_change(change)
        cs.assert_no_pending_responses()
    row = lineage.get("customers", "deploy:v3")
    assert row is not None
    completed = [e for e in bus.events if isinstance(e, DeploymentCompleted)]
    if finished:
        assert out.status == "completed"
        assert (row.status, row.attributes["deployment_id"]) == ("completed", "d-7XKQ2ZB1C")
        assert [e.model_version for e in completed] == ["3"]
    else:
        assert out.status == "ignored"
        assert row.status == "claimed"
        assert completed == []
