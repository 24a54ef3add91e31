"""The AWS program under Pulumi's mocks: what `pulumi up` on an aws-uae stack asks AWS
to create, resource by resource and argument by argument."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from docker.utils.build import exclude_paths
from sagemaker.core import image_uris
from sagemaker.core.common_utils import create_tar_file

from infra.aws import iam
from infra.aws.serving import ALARM_INPUTS, lambda_alarm_names
from infra.aws.training import (
    JOBS_CONTEXT_LOCATION,
    JOBS_DOCKERFILE,
    JOBS_DOCKERFILE_LOCATION,
    dockerfile_copy_sources,
    jobs_context_files,
    jobs_image_tag,
    trainer_sourcedir,
)
from infra.config import StackConfig
from infra.policy.rules import violations
from shared.adapters.codedeploy import deployment_config_name
from shared.adapters.sagemaker_training import trainer_code_key
from shared.canary import NAMESPACE, CanaryRule
from shared.cloud_facts import fact, value
from shared.topology import build_topology
from shared.triggers import parse_drift_request
from tests.infra.harness import ACCOUNT, Program, run

ROOT = Path(__file__).resolve().parents[2]


def _by_name(program: Program, typ: str, key: str = "name") -> dict[str, dict[str, Any]]:
    return {r.inputs[key]: r.inputs for r in program.of_type(typ)}


def test_one_provider_pinned_to_me_central_1(aws_program: Program) -> None:
    providers = aws_program.providers()
    assert [p.inputs["region"] for p in providers.values()] == ["me-central-1"]
    for r in aws_program.resources:
        if r.typ.startswith("aws:"):
            assert r.provider_id.endswith("::uae_id"), r.name
            assert "region" not in r.inputs  # no per-resource override


def test_buckets_are_the_topology_s_plus_access_logs(aws_program: Program) -> None:
    topo = build_topology("uae-prod")
    names = {r.inputs["bucket"] for r in aws_program.of_type("aws:s3/bucket:Bucket")}
    assert names == {b.name for b in topo.buckets} | {
        "dhow-uae-prod-access-logs",
        "dhow-uae-prod-artifacts",
    }
    notified = aws_program.of_type("aws:s3/bucketNotification:BucketNotification")
    assert [(n.inputs["bucket"], n.inputs["eventbridge"]) for n in notified] == [
        ("dhow-uae-prod-raw", True)
    ]


def test_every_data_bucket_is_kms_encrypted_versioned_private_logged(
    aws_program: Program,
) -> None:
    key_arn = aws_program.of_type("aws:kms/key:Key")[0].outputs["arn"]
    sse = {
        r.inputs["bucket"]: r.inputs["rules"][0]["applyServerSideEncryptionByDefault"]
        for r in aws_program.of_type(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
    }
    logging = {
        r.inputs["bucket"]: r.inputs["targetBucket"]
        for r in aws_program.of_type("aws:s3/bucketLogging:BucketLogging")
    }
    versioned = {
        r.inputs["bucket"]
        for r in aws_program.of_type("aws:s3/bucketVersioning:BucketVersioning")
        if r.inputs["versioningConfiguration"]["status"] == "Enabled"
    }
    tls = {
        r.inputs["bucket"]: json.loads(r.inputs["policy"])
        for r in aws_program.of_type("aws:s3/bucketPolicy:BucketPolicy")
    }
    for name in [b.name for b in build_topology("uae-prod").buckets] + ["dhow-uae-prod-artifacts"]:
        assert sse[name] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key_arn}
        assert logging[name] == "dhow-uae-prod-access-logs"
        assert name in versioned
        deny = tls[name]["Statement"][0]
        assert deny["Effect"] == "Deny"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # S3 delivers access logs only to an SSE-S3 bucket.
    assert sse["dhow-uae-prod-access-logs"] == {"sseAlgorithm": "AES256"}
    key = aws_program.of_type("aws:kms/key:Key")[0].inputs
    assert key["enableKeyRotation"] is True


def test_lifecycle_rules_expire_staging_and_capture(aws_program: Program) -> None:
    rules = {
        r.inputs["bucket"]: {x["id"]: x for x in r.inputs["rules"]}
        for r in aws_program.of_type(
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
        )
    }
    assert rules["dhow-uae-prod-staging"]["expire-after-30-days"]["expiration"] == {"days": 30}
    assert rules["dhow-uae-prod-capture"]["expire-after-90-days"]["expiration"] == {"days": 90}
    assert "expire-after-30-days" not in rules["dhow-uae-prod-curated"]  # data is kept
    assert all("old-versions" in r for r in rules.values())


def test_queues_dlqs_rules_and_mappings_match_the_topology(aws_program: Program) -> None:
    topo = build_topology("uae-prod")
    queues = _by_name(aws_program, "aws:sqs/queue:Queue")
    expected = {q.name for q in topo.queues} | {q.dlq_name for q in topo.queues}
    assert set(queues) == expected | {"dhow-uae-prod-async-failures"}
    for q in topo.queues:
        redrive = json.loads(queues[q.name]["redrivePolicy"])
        assert redrive["maxReceiveCount"] == q.max_receive_count
        assert redrive["deadLetterTargetArn"].endswith(f":{q.dlq_name}")
        assert queues[q.name]["visibilityTimeoutSeconds"] == q.visibility_timeout_s
    rules = _by_name(aws_program, "aws:cloudwatch/eventRule:EventRule")
    targets = {
        t.inputs["rule"]: t.inputs
        for t in aws_program.of_type("aws:cloudwatch/eventTarget:EventTarget")
    }
    for r in topo.rules:
        assert json.loads(rules[r.name]["eventPattern"]) == r.pattern
        bus = "default" if r.bus == "default" else topo.bus_name
        assert rules[r.name]["eventBusName"] == bus
        assert targets[r.name]["arn"].endswith(f":{topo.queue(r.target_queue).name}")
        assert targets[r.name]["deadLetterConfig"]["arn"].endswith(
            f":{topo.queue(r.target_queue).dlq_name}"
        )
    mappings = {
        m.inputs["eventSourceArn"].rsplit(":", 1)[-1]: m.inputs
        for m in aws_program.of_type("aws:lambda/eventSourceMapping:EventSourceMapping")
    }
    for fn in topo.functions:
        if fn.trigger_queue is None:
            continue
        m = mappings[topo.queue(fn.trigger_queue).name]
        assert m["functionName"].endswith(f":{fn.name}")
        assert m["functionResponseTypes"] == ["ReportBatchItemFailures"]
        assert m["batchSize"] == fn.batch_size


def test_queue_policies_admit_only_the_stack_s_rules(aws_program: Program) -> None:
    # Every Allow is for EventBridge and the stack's rules; the Deny of everyone else is
    # judged in tests/infra/test_queue_policies.py.
    for policy in aws_program.of_type("aws:sqs/queuePolicy:QueuePolicy"):
        for stmt in json.loads(policy.inputs["policy"])["Statement"]:
            if stmt["Effect"] != "Allow":
                continue
            assert stmt["Principal"] == {"Service": "events.amazonaws.com"}
            sources = stmt["Condition"]["ArnEquals"]["aws:SourceArn"]
            assert sources
            assert all(":dhow-uae-prod-" in s for s in sources)


def test_functions_one_per_topology_entry_serve_per_dataset(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    topo = aws_cfg.topology
    fns = _by_name(aws_program, "aws:lambda/function:Function")
    expected = {f.name for f in topo.functions if f.trigger_queue} | {
        f"dhow-uae-prod--serve-{s.name}" for s in aws_cfg.specs
    }
    assert set(fns) == expected
    layer_versions = aws_program.of_type("aws:lambda/layerVersion:LayerVersion")
    layers = {r.outputs["arn"] for r in layer_versions}
    for lv in layer_versions:  # published from the artifacts bucket: no 50 MB upload limit
        assert lv.inputs["s3Bucket"] == "dhow-uae-prod-artifacts"
        assert lv.inputs["s3Key"].endswith("-x86_64.zip")
    for fn in topo.functions:
        for name, args in fns.items():
            if not name.startswith(fn.name):
                continue
            assert args["tracingConfig"] == {"mode": "Active"}
            assert args["deadLetterConfig"]["targetArn"].startswith("arn:aws:sqs:me-central-1:")
            assert args["loggingConfig"]["logGroup"] == f"/aws/lambda/{name}"
            assert args["kmsKeyArn"].startswith("arn:aws:kms:me-central-1:")
            assert args["memorySize"] == fn.memory_mb
            assert args["timeout"] == fn.timeout_s
            env = args["environment"]["variables"]
            assert env["DHOW_STAGE"] == "uae-prod"
            assert env["DHOW_CLOUD"] == "aws"
            if fn.logical == "drift_check":  # the one function that alerts (stack_contract)
                assert env["DHOW_ALERTS_TOPIC_ARN"].endswith(":dhow-uae-prod-alerts")
            assert "AWS_REGION" not in env  # reserved: Lambda sets it to the function's region
            if fn.package == "image":
                assert args["packageType"] == "Image"
                assert args["imageUri"].startswith(
                    f"{ACCOUNT}.dkr.ecr.me-central-1.amazonaws.com/dhow-uae-prod-jobs@sha256:"
                )
                assert args["imageConfig"] == {"commands": [fn.aws_handler]}
            else:
                assert args["packageType"] == "Zip"
                assert args["handler"] == fn.aws_handler
                assert args["runtime"] == "python3.12"
                assert len(args["layers"]) == 1
                assert args["layers"][0] in layers
    assert (
        fns["dhow-uae-prod--serve-customers"]["environment"]["variables"]["DHOW_SERVE_DATASET"]
        == "customers"
    )
    groups = _by_name(aws_program, "aws:cloudwatch/logGroup:LogGroup")
    assert {g["retentionInDays"] for g in groups.values()} == {365}
    assert all(g["kmsKeyId"].startswith("arn:aws:kms:") for g in groups.values())


def test_function_code_is_the_package_without_caches(aws_program: Program) -> None:
    fn = _by_name(aws_program, "aws:lambda/function:Function")["dhow-uae-prod-ingest"]
    files = set(fn["code"].assets)
    assert "functions/ingest/aws_lambda.py" in files
    assert "shared/specs/customers.yaml" in files
    assert not [f for f in files if "__pycache__" in f or f.startswith("tests/")]


def _policies(program: Program) -> dict[str, dict[str, Any]]:
    return {
        r.name: json.loads(r.inputs["policy"])
        for r in program.of_type("aws:iam/rolePolicy:RolePolicy")
    }


def test_every_function_role_holds_exactly_its_topology_permissions(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    topo = aws_cfg.topology
    policies = _policies(aws_program)
    common = {
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    }
    for fn in topo.functions:
        name = fn.name if fn.trigger_queue else "dhow-uae-prod--serve-customers"
        doc = policies[name]
        actions = {a for s in doc["Statement"] for a in s["Action"]}
        granted = {a for p in fn.permissions for a in iam.permission_actions(p)}
        grants = {"kms:CreateGrant", "kms:DescribeKey"} if "iam:PassRole" in granted else set()
        # Updating a function's environment encrypted with the stack key encrypts with it.
        if "lambda:UpdateFunctionConfiguration" in granted:
            grants.add("kms:Encrypt")
        assert actions == granted | common | grants, fn.logical
        for stmt in doc["Statement"]:
            assert "*" not in stmt["Action"]
            if stmt["Resource"] == "*":
                assert set(stmt["Action"]) <= iam.UNSCOPED_ACTIONS, (fn.logical, stmt)
            else:
                for arn in stmt["Resource"]:
                    assert ":me-central-1:" in arn or arn.startswith(
                        ("arn:aws:s3:::", "arn:aws:iam::")
                    )
        # Only the buckets it names: ingest never touches curated, serve never raw.
        named = {topo.bucket(p.resource).name for p in fn.permissions if p.kind == "bucket"}
        mentioned = {
            arn.split(":::")[1].split("/")[0]
            for s in doc["Statement"]
            for arn in (s["Resource"] if isinstance(s["Resource"], list) else [])
            if arn.startswith("arn:aws:s3:::")
        }
        assert mentioned == named, fn.logical


def test_list_bucket_on_the_bucket_object_actions_on_its_objects(aws_program: Program) -> None:
    doc = _policies(aws_program)["dhow-uae-prod-drift-check"]
    capture = next(s for s in doc["Statement"] if s["Sid"] == "Capture")
    assert capture["Resource"] == [
        "arn:aws:s3:::dhow-uae-prod-capture",
        "arn:aws:s3:::dhow-uae-prod-capture/*",
    ]
    metrics = next(s for s in doc["Statement"] if s["Sid"] == "DriftMetricsUnscoped")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Dhow/Drift"}}


def test_pass_role_only_to_sagemaker_and_only_the_stack_s_role(aws_program: Program) -> None:
    for name in ("dhow-uae-prod-train-launch", "dhow-uae-prod-validate", "dhow-uae-prod-deploy"):
        stmt = next(
            s for s in _policies(aws_program)[name]["Statement"] if "iam:PassRole" in s["Action"]
        )
        assert stmt["Resource"] == [f"arn:aws:iam::{ACCOUNT}:role/dhow-uae-prod-sagemaker"]
        assert stmt["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com"
    ingest = _policies(aws_program)["dhow-uae-prod-ingest"]
    assert not [s for s in ingest["Statement"] if "iam:PassRole" in s["Action"]]


def test_training_has_no_internet_path(aws_program: Program) -> None:
    types = {r.typ for r in aws_program.resources}
    assert "aws:ec2/internetGateway:InternetGateway" not in types
    assert "aws:ec2/natGateway:NatGateway" not in types
    subnets = aws_program.of_type("aws:ec2/subnet:Subnet")
    assert len(subnets) == 2
    assert {s.inputs["availabilityZone"] for s in subnets} == {"me-central-1a", "me-central-1b"}
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)
    (endpoint,) = aws_program.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint.inputs["serviceName"] == "com.amazonaws.me-central-1.s3"
    assert endpoint.inputs["vpcEndpointType"] == "Gateway"
    (sg,) = aws_program.of_type("aws:ec2/securityGroup:SecurityGroup")
    for rule in [*sg.inputs["egress"], *sg.inputs["ingress"]]:
        assert not rule.get("cidrBlocks"), rule  # S3's prefix list or the group itself
    role = _by_name(aws_program, "aws:iam/role:Role")["dhow-uae-prod-sagemaker"]
    trust = json.loads(role["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}


def test_serving_alias_codedeploy_group_and_alarms(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    spec = aws_cfg.specs[0]
    fn = f"dhow-uae-prod--serve-{spec.name}"
    (alias,) = aws_program.of_type("aws:lambda/alias:Alias")
    assert alias.inputs["name"] == "live"
    assert alias.inputs["functionName"] == fn
    (app,) = aws_program.of_type("aws:codedeploy/application:Application")
    assert app.inputs["name"] == "dhow-uae-prod--serving"
    (group,) = aws_program.of_type("aws:codedeploy/deploymentGroup:DeploymentGroup")
    s = spec.serving
    # dhow-uae-prod--lambda-...: the adapters' name prefix is the stage's family_head.
    head = "dhow-uae-prod-"
    config = deployment_config_name(head, s.strategy, s.step_percent, s.interval_minutes)
    assert group.inputs["deploymentGroupName"] == fn
    assert group.inputs["deploymentConfigName"] == config
    assert group.inputs["alarmConfiguration"]["alarms"] == list(lambda_alarm_names(fn))
    assert group.inputs["autoRollbackConfiguration"]["events"] == [
        "DEPLOYMENT_FAILURE",
        "DEPLOYMENT_STOP_ON_ALARM",
    ]
    if config.startswith("dhow-uae-prod"):  # a custom config the stack must create
        (dc,) = aws_program.of_type("aws:codedeploy/deploymentConfig:DeploymentConfig")
        assert dc.inputs["deploymentConfigName"] == config


def test_serving_is_an_iam_authorized_http_api_on_the_live_alias(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    """No Function URL (none exist in me-central-1); an HTTP API whose one route is
    IAM-authorized and whose Lambda proxy integration is the live alias."""
    assert aws_cfg.region in value("aws.apigateway.http_api_regions")
    assert aws_cfg.region in value("aws.lambda.function_url_unsupported_regions")
    assert not aws_program.of_type("aws:lambda/functionUrl:FunctionUrl")
    spec = aws_cfg.specs[0]
    fn = f"dhow-uae-prod--serve-{spec.name}"
    (api,) = [r for r in aws_program.of_type("aws:apigatewayv2/api:Api") if r.inputs["name"] == fn]
    assert api.inputs["protocolType"] == "HTTP"
    (alias,) = aws_program.of_type("aws:lambda/alias:Alias")
    (integration,) = aws_program.of_type("aws:apigatewayv2/integration:Integration")
    shape = value("aws.apigateway.lambda_payload_format")
    assert integration.inputs["integrationType"] == "AWS_PROXY"
    assert integration.inputs["integrationUri"] == alias.outputs["arn"]
    assert integration.inputs["integrationUri"].endswith(f":function:{fn}:live")
    assert integration.inputs["payloadFormatVersion"] == shape["payload_format_version"]
    (route,) = aws_program.of_type("aws:apigatewayv2/route:Route")
    assert route.inputs["authorizationType"] == "AWS_IAM"
    assert route.inputs["routeKey"] == "ANY /{proxy+}"
    assert route.inputs["target"] == f"integrations/{integration.name}_id"
    (stage,) = aws_program.of_type("aws:apigatewayv2/stage:Stage")
    assert stage.inputs["name"] == shape["stage"]  # the path the client calls is the app's
    assert stage.inputs["autoDeploy"] is True
    logs = fact("aws.apigateway.http_api_access_logs")
    assert logs.value["destination"] == "log group ARN"
    access = stage.inputs["accessLogSettings"]
    (group,) = [
        r
        for r in aws_program.of_type("aws:cloudwatch/logGroup:LogGroup")
        if r.inputs["name"] == f"/aws/apigateway/{fn}"
    ]
    assert access["destinationArn"] == group.outputs["arn"]
    assert group.inputs["kmsKeyId"].startswith("arn:aws:kms:me-central-1:")
    assert all(v in access["format"] for v in logs.value["format_variables"])
    (perm,) = [
        r
        for r in aws_program.of_type("aws:lambda/permission:Permission")
        if r.inputs["principal"] == "apigateway.amazonaws.com"
    ]
    assert perm.inputs["action"] == "lambda:InvokeFunction"
    assert perm.inputs["qualifier"] == "live"
    assert perm.inputs["sourceArn"] == f"{api.outputs['executionArn']}/*"
    assert aws_program.outputs["serve_urls"][spec.name] == api.outputs["apiEndpoint"]


def test_rollback_alarms_judge_one_version_own_requests(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    """The metric math of shared.canary, on the Dhow/Serving metrics of the version the
    alias starts on; never AWS/Lambda Errors, which a returned 500 does not count."""
    errors_metric = value("aws.lambda.errors_metric")
    spec = aws_cfg.specs[0]
    s = spec.serving
    fn = f"dhow-uae-prod--serve-{spec.name}"
    rule = CanaryRule(s.min_requests, s.error_rate_threshold, s.p99_latency_ms)
    alarms = _by_name(aws_program, "aws:cloudwatch/metricAlarm:MetricAlarm")
    for request in rule.alarms(fn, "1"):  # the mock publishes version 1
        alarm = alarms[request["AlarmName"]]
        assert alarm["threshold"] == request["Threshold"]
        assert alarm["comparisonOperator"] == request["ComparisonOperator"]
        assert alarm["treatMissingData"] == "notBreaching"
        (watched,) = [q for q in alarm["metricQueries"] if q.get("returnData")]
        (expected,) = [q for q in request["Metrics"] if q["ReturnData"]]
        assert watched["expression"] == expected["Expression"]
        for q in alarm["metricQueries"]:
            if "metric" in q:
                assert q["metric"]["namespace"] == NAMESPACE
                assert q["metric"]["dimensions"] == {"FunctionName": fn, "Version": "1"}
    for alarm in alarms.values():
        for q in alarm.get("metricQueries") or []:
            metric = q.get("metric") or {}
            assert (metric.get("namespace"), metric.get("metricName")) != (
                errors_metric["namespace"],
                errors_metric["metric"],
            )


def test_drift_schedules_per_spec_topic_and_dlq_alarms(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    topo = aws_cfg.topology
    schedules = _by_name(aws_program, "aws:scheduler/schedule:Schedule")
    for sched in topo.schedules:
        for spec in aws_cfg.specs:
            s = schedules[sched.name_for(spec.name)]
            assert s["scheduleExpression"] == sched.expression_for(spec)
            placeholder = value("aws.scheduler.scheduled_time_attribute")
            assert json.loads(s["target"]["input"]) == {"dataset": spec.name, "period": placeholder}
            # What the queue gets once Scheduler has written the run's time in.
            sent = parse_drift_request(
                s["target"]["input"].replace(placeholder, "2022-03-22T18:59:43Z")
            )
            assert sent.period == datetime(2022, 3, 22, 18, 59, 43, tzinfo=UTC)
            assert s["target"]["arn"].endswith(f":{topo.queue(sched.target_queue).name}")
            assert s["target"]["roleArn"].endswith(":dhow-uae-prod-scheduler")
    (topic,) = aws_program.of_type("aws:sns/topic:Topic")
    assert topic.inputs["name"] == "dhow-uae-prod-alerts"
    assert topic.inputs["kmsMasterKeyId"].startswith("arn:aws:kms:me-central-1:")
    (sub,) = aws_program.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sub.inputs["endpoint"] == "oncall@example.ae"
    alarms = _by_name(aws_program, "aws:cloudwatch/metricAlarm:MetricAlarm")
    for q in topo.queues:
        assert alarms[f"{q.dlq_name}-not-empty"]["dimensions"] == {"QueueName": q.dlq_name}
    (board,) = aws_program.of_type("aws:cloudwatch/dashboard:Dashboard")
    assert len(json.loads(board.inputs["dashboardBody"])["widgets"]) == 4


def test_lineage_table_has_pitr_and_the_stack_key(aws_program: Program) -> None:
    (table,) = aws_program.of_type("aws:dynamodb/table:Table")
    assert table.inputs["name"] == "dhow-uae-prod-lineage"
    assert table.inputs["pointInTimeRecovery"] == {"enabled": True}
    assert table.inputs["serverSideEncryption"]["enabled"] is True
    assert table.inputs["serverSideEncryption"]["kmsKeyArn"].startswith("arn:aws:kms:")


def test_policy_pack_passes_on_the_program(aws_program: Program) -> None:
    assert violations(aws_program.policy_view()) == []


def test_policy_pack_refuses_the_program_in_another_region(aws_cfg: StackConfig) -> None:
    # A mutated program: the config check bypassed, the provider pointed at Ireland.
    program = run(dataclasses.replace(aws_cfg, region="eu-west-1"))
    found = violations(program.policy_view())
    regional = [v for v in found if v.policy == "uae-region-only"]
    aws_resources = [r for r in program.resources if r.typ.startswith("aws:")]
    assert len(regional) == len(aws_resources) > 100
    assert "me-central-1" in regional[0].message


def test_policy_pack_refuses_a_wildcard_role(
    aws_cfg: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def admin(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}

    monkeypatch.setattr("infra.aws.functions.function_policy", admin)
    found = violations(run(aws_cfg).policy_view())
    assert {v.policy for v in found} == {"no-wildcard-iam"}
    assert len(found) == len(aws_cfg.topology.functions)  # 6 functions + 1 serve per spec


def test_image_functions_name_the_jobs_image_by_digest_alone(aws_program: Program) -> None:
    # Lambda takes repo:tag or repo@digest, never docker-build's ref (repo:tag@digest).
    accepted = re.compile(value("aws.lambda.image_uri_by_tag_or_digest"))
    ecr = botocore.session.get_session().get_service_model("ecr")
    repository_name = re.compile(ecr.shape_for("RepositoryName").metadata["pattern"])
    (image,) = aws_program.of_type("docker-build:index:Image")
    images = [
        r.inputs["imageUri"]
        for r in aws_program.of_type("aws:lambda/function:Function")
        if r.inputs["packageType"] == "Image"
    ]
    assert len(images) == 2  # register and drift-check
    for uri in images:
        found = accepted.match(uri)
        assert found, f"Lambda refuses {uri}"
        assert repository_name.fullmatch(found["repository"])
        assert found["digest"] == image.outputs["digest"]
        assert uri != image.outputs["ref"]


def _train_launch_env(program: Program) -> dict[str, str]:
    fns = _by_name(program, "aws:lambda/function:Function")
    env: dict[str, str] = fns["dhow-uae-prod-train-launch"]["environment"]["variables"]
    return env


def test_the_training_image_is_the_sdk_s_xgboost_image_for_the_region(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    image = fact("aws.sagemaker.xgboost_training_image").value
    uri = _train_launch_env(aws_program)["DHOW_TRAINING_IMAGE_URI"]
    # Resolved by the SageMaker SDK's region tables, not a URI we wrote down.
    assert uri == image_uris.retrieve(
        image["framework"], "me-central-1", version=image["version"], image_scope="training"
    )
    assert re.fullmatch(
        rf"\d{{12}}\.dkr\.ecr\.me-central-1\.amazonaws\.com/sagemaker-xgboost:{image['version']}",
        uri,
    )
    # An explicit dhow:trainingImageUri still wins.
    own = f"{ACCOUNT}.dkr.ecr.me-central-1.amazonaws.com/own-trainer:1"
    program = run(dataclasses.replace(aws_cfg, training_image_uri=own))
    assert _train_launch_env(program)["DHOW_TRAINING_IMAGE_URI"] == own


def test_the_trainer_code_is_uploaded_where_train_launch_points_the_job(
    aws_program: Program, tmp_path: Path
) -> None:
    mode = fact("aws.sagemaker.xgboost_script_mode").value
    (obj,) = [
        r
        for r in aws_program.of_type("aws:s3/bucketObjectv2:BucketObjectv2")
        if r.inputs["key"].startswith("code/trainer/")
    ]
    assert obj.inputs["bucket"] == "dhow-uae-prod-models"  # the SageMaker role reads it
    assert obj.inputs["key"] == trainer_code_key()
    assert obj.inputs["key"].endswith("/" + mode["archive"])
    assert obj.inputs["serverSideEncryption"] == "aws:kms"
    archive = Path(obj.inputs["source"].path)
    # The SDK's own packing of an entry point without a source_dir: the same members.
    sdk_archive = create_tar_file(
        [str(ROOT / "shared/trainer.py")], str(tmp_path / mode["archive"])
    )
    with tarfile.open(archive) as ours, tarfile.open(sdk_archive) as sdks:
        assert ours.getnames() == sdks.getnames() == ["trainer.py"]
        member = ours.extractfile("trainer.py")
        assert member is not None
        assert member.read() == (ROOT / "shared/trainer.py").read_bytes()
    # Same trainer, same bytes: `pulumi up` re-uploads it only when it changes.
    assert trainer_sourcedir(tmp_path).read_bytes() == archive.read_bytes()


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def _context(root: Path) -> set[Path]:
    """The files docker sends as the build context, by docker-py's own .dockerignore
    matcher (docker.utils.build.exclude_paths)."""
    # docker always sends the Dockerfile and the .dockerignore too; neither is copied
    # into the image (the tag covers the Dockerfile itself).
    always = {root / JOBS_DOCKERFILE, root / ".dockerignore"}
    return {
        root / p
        for p in exclude_paths(str(root), _dockerignore(), dockerfile=JOBS_DOCKERFILE)
        if (root / p).is_file()
    } - always


def test_the_jobs_image_context_is_what_its_dockerfile_copies() -> None:
    sources = dockerfile_copy_sources(ROOT / JOBS_DOCKERFILE)
    assert sorted(sources) == ["functions", "layers/jobs-requirements.txt", "shared"]
    context = _context(ROOT)
    # docker gets exactly the files the tag is computed from, and no .venv or .git.
    assert context == set(jobs_context_files(ROOT))
    for src in sources:
        assert any(p == ROOT / src or ROOT / src in p.parents for p in context), src
    assert not [p for p in context if {".venv", ".git", "__pycache__"} & set(p.parts)]


def test_the_jobs_image_tag_derives_only_from_what_goes_into_the_image(tmp_path: Path) -> None:
    # A checkout on another machine: a .venv, .git, byte code and files the image does not
    # copy. None of them changes the tag (ECR's tags are immutable, and a rebuild under
    # the same tag is refused); a change to a copied file does.
    for rel in [".dockerignore", JOBS_DOCKERFILE, "layers/jobs-requirements.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    for rel in ["shared/__init__.py", "shared/trainer.py", "functions/__init__.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    tag = jobs_image_tag(tmp_path)
    for junk in [
        ".venv/lib/x.py",
        ".git/HEAD",
        "shared/__pycache__/trainer.cpython-312.pyc",
        "README.md",
        "tests/unit/test_x.py",
        "dhow.egg-info/PKG-INFO",
    ]:
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_text("differs on every machine")
    assert jobs_image_tag(tmp_path) == tag
    assert _context(tmp_path) == set(jobs_context_files(tmp_path))
    (tmp_path / "shared/trainer.py").write_text("# changed\n")
    assert jobs_image_tag(tmp_path) != tag
    (image,) = run_tags()
    assert image.endswith(f":{jobs_image_tag()}")


def run_tags() -> list[str]:
    from infra.config import check

    program = run(check(stage="uae-prod", region="me-central-1", location="uaenorth"))
    (image,) = program.of_type("docker-build:index:Image")
    return list(image.inputs["tags"])


def test_the_inference_image_is_the_sdk_s_xgboost_image_for_the_region(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    image = fact("aws.sagemaker.xgboost_inference_image").value
    deploy = _by_name(aws_program, "aws:lambda/function:Function")["dhow-uae-prod-deploy"]
    uri = deploy["environment"]["variables"]["DHOW_INFERENCE_IMAGE_URI"]
    # Resolved by the SageMaker SDK's region tables, not a URI we wrote down.
    assert uri == image_uris.retrieve(
        image["framework"], "me-central-1", version=image["version"], image_scope="inference"
    )
    assert re.fullmatch(
        rf"\d{{12}}\.dkr\.ecr\.me-central-1\.amazonaws\.com/sagemaker-xgboost:{image['version']}",
        uri,
    )
    # Pulumi.yaml no longer pins one region's URI as the default.
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert project["inferenceImageUri"]["default"] == ""
    # An explicit dhow:inferenceImageUri still wins.
    own = f"{ACCOUNT}.dkr.ecr.me-central-1.amazonaws.com/own-server:1"
    program = run(dataclasses.replace(aws_cfg, inference_image_uri=own))
    deploy = _by_name(program, "aws:lambda/function:Function")["dhow-uae-prod-deploy"]
    assert deploy["environment"]["variables"]["DHOW_INFERENCE_IMAGE_URI"] == own


def test_the_jobs_image_inputs_are_the_same_from_every_checkout(aws_program: Program) -> None:
    # docker-build rebuilds (and pushes under the same tag, which ECR refuses) when
    # context.location or the Dockerfile's location differs as a string from the state's.
    # A second machine or CI checks out elsewhere: no input may carry this checkout's path.
    compared = value("aws.ecr.docker_build_diff_compares_locations")["compared_as_given"]
    (image,) = aws_program.of_type("docker-build:index:Image")
    inputs = image.inputs
    assert inputs["context"] == {"location": JOBS_CONTEXT_LOCATION}
    assert inputs["dockerfile"] == {"location": JOBS_DOCKERFILE_LOCATION}
    for key in compared:
        field = inputs[key.split(".")[0]]
        assert str(ROOT) not in json.dumps(field), f"{key} names this checkout: {field}"
        assert not Path(field["location"]).is_absolute(), key
    assert str(ROOT) not in json.dumps(inputs, default=str)
    # The provider runs in the program's directory (Pulumi.yaml's main): from there the
    # relative locations are the repository root and the jobs Dockerfile.
    assert value("aws.ecr.provider_working_directory") == "main"
    program_dir = ROOT / yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["main"]
    assert (program_dir / JOBS_CONTEXT_LOCATION).resolve() == ROOT
    assert (program_dir / JOBS_DOCKERFILE_LOCATION).resolve() == ROOT / JOBS_DOCKERFILE


def test_the_jobs_image_tag_changes_whenever_docker_build_s_context_hash_does(
    tmp_path: Path,
) -> None:
    # docker-build's context hash counts each file's mode; a checkout whose modes differ
    # is rebuilt, so it must push under a tag of its own, never over an existing one.
    hashed = fact("aws.ecr.docker_build_context_hash").value
    assert "mode" in hashed["per_file"]
    # docker-build reads <Dockerfile>.dockerignore before the root's: there is none, so
    # the root's allow-list (checked above with docker-py's matcher) is the one it uses.
    first = hashed["ignore_files"][0].replace("<dockerfile>", JOBS_DOCKERFILE)
    assert not (ROOT / first).exists(), f"{first} would replace .dockerignore"
    (tmp_path / "layers").mkdir()
    shutil.copy(ROOT / JOBS_DOCKERFILE, tmp_path / JOBS_DOCKERFILE)
    for rel in [JOBS_DOCKERFILE, "layers/jobs-requirements.txt", "shared/jobs/run.sh"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (tmp_path / rel).exists():
            (tmp_path / rel).write_text(f"# {rel}\n")
        (tmp_path / rel).chmod(0o644)
    (tmp_path / "functions").mkdir()
    tag = jobs_image_tag(tmp_path)
    (tmp_path / "shared/jobs/run.sh").chmod(0o755)
    assert jobs_image_tag(tmp_path) != tag
    (tmp_path / "shared/jobs/run.sh").chmod(0o644)
    assert jobs_image_tag(tmp_path) == tag


def test_the_jobs_repository_refuses_a_second_image_under_a_tag(aws_program: Program) -> None:
    # Why the tag must change whenever docker-build rebuilds: botocore's model of ECR says
    # PutImage raises this error, and the repository is IMMUTABLE, with no exclusions.
    refused = fact("aws.ecr.immutable_tag_push_refused").value
    ecr = botocore.session.get_session().get_service_model("ecr")
    put_image = ecr.operation_model(refused["operation"])
    assert refused["error"] in [e.name for e in put_image.error_shapes]
    assert refused["mutability"] in ecr.shape_for("ImageTagMutability").enum
    (repo,) = aws_program.of_type("aws:ecr/repository:Repository")
    assert repo.inputs["imageTagMutability"] == refused["mutability"]
    assert not repo.inputs.get("imageTagMutabilityExclusionFilters")


def test_the_deploy_function_owns_every_alarm_field_it_writes(
    aws_cfg: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PutMetricAlarm overwrites the whole alarm (fact
    aws.cloudwatch.put_metric_alarm_overwrites), and Pulumi sends an ignored input's value
    from its state: if `pulumi up` still owned any field the deploy function writes, its
    update would resend the version of the first `up`. So each rollback alarm is created
    with CanaryRule's definition and every such field is ignored by the stack."""
    import pulumi_aws as aws
    from pulumi._types import input_type_py_to_pulumi_names

    assert fact("aws.cloudwatch.put_metric_alarm_overwrites").value == "overwrite"
    options: dict[str, Any] = {}
    real = aws.cloudwatch.MetricAlarm

    def recording(resource_name: str, *args: Any, **kwargs: Any) -> Any:
        options[resource_name] = kwargs.get("opts")
        return real(resource_name, *args, **kwargs)

    monkeypatch.setattr(aws.cloudwatch, "MetricAlarm", recording)
    program = run(aws_cfg)
    to_engine = input_type_py_to_pulumi_names(aws.cloudwatch.MetricAlarmArgs)
    botocore_put = botocore.session.get_session().get_service_model("cloudwatch")
    put_members = set(botocore_put.operation_model("PutMetricAlarm").input_shape.members)
    spec = aws_cfg.specs[0]
    s = spec.serving
    fn = f"dhow-uae-prod--serve-{spec.name}"
    rule = CanaryRule(s.min_requests, s.error_rate_threshold, s.p99_latency_ms)
    by_name = {
        r.inputs["name"]: r for r in program.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    # What the deploy function sends: CanaryRule's request and the actions it copies.
    actions = {"ActionsEnabled", "AlarmActions", "OKActions", "InsufficientDataActions"}
    for request in rule.alarms(fn, "1"):  # the mock publishes version 1
        alarm = by_name[request["AlarmName"]]
        ignored = {to_engine.get(k, k) for k in options[alarm.name].ignore_changes}
        assert ignored <= set(to_engine.values())  # each one a real MetricAlarm input
        written = (set(request) | actions) - {"AlarmName"}
        assert written <= put_members
        # Every field the deploy function writes is one the stack ignores...
        for key in written:
            assert key in ALARM_INPUTS, key
            assert to_engine[ALARM_INPUTS[key]] in ignored, key
        # ...and the stack sets nothing else but the alarm's name.
        assert set(alarm.inputs) - ignored == {"name"}
        # Created once with the definition the deploy function renders.
        assert alarm.inputs["alarmDescription"] == request["AlarmDescription"]
        assert alarm.inputs["threshold"] == request["Threshold"]
        assert alarm.inputs["evaluationPeriods"] == request["EvaluationPeriods"]
        assert alarm.inputs["datapointsToAlarm"] == request["DatapointsToAlarm"]
        assert [q["id"] for q in alarm.inputs["metricQueries"]] == [
            q["Id"] for q in request["Metrics"]
        ]
