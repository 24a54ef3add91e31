"""One stage's names never start with another stage's prefix (issue 16, "Who may do
what" item 2).

IAM's ``*`` matches ``-`` (fact ``aws.iam.arn_wildcards``) and EventBridge's ``prefix``
is a plain string start (fact ``aws.eventbridge.prefix_matching``), so a grant or a rule
on ``dhow-acme-*`` also reached stage acme-prod's jobs and models. Every name matched by
a prefix now starts ``dhow-<stage>--``, which no stage holds. These tests make the names
with the adapters' own functions and check them against the prefixes, against botocore's
service models (the limits SageMaker, Lambda, CloudWatch and CodeDeploy enforce) and
against an independent evaluator of EventBridge patterns (moto's).
"""

from __future__ import annotations

import json
import re
from itertools import permutations
from typing import Any

import pytest
from botocore.session import get_session
from moto.events.models import EventPattern

from infra.azure.events import run_status_rules
from infra.config import StackConfigError, check
from shared.adapters.aws import processing_job_name
from shared.adapters.azure_ml import azureml_job_name
from shared.adapters.codedeploy import deployment_config_name, serve_function_name
from shared.adapters.sagemaker_endpoint import alarm_names, endpoint_names
from shared.adapters.sagemaker_registry import SageMakerModelRegistry
from shared.adapters.sagemaker_training import training_job_name
from shared.canary import alarm_names as lambda_alarm_names
from shared.cloud_facts import value
from shared.errors import ConfigError
from shared.event_patterns import matches
from shared.events import ObjectRef
from shared.identifiers import family_head, family_prefix
from shared.ports import TrainingJobRequest, ValidationJobRequest
from shared.settings import STAGE_RE, Settings
from shared.topology import build_topology

SHA = "ab12" * 16
LONGEST = "s" * 10 + "-" + "t" * 10  # 21 characters: the most STAGE_RE allows
# Stages chosen so that one's name is the start of another's, with and without a hyphen.
STAGES = ("acme", "acme-prod", "acme-p", "acme1", "ac", "acme-prod-eu", LONGEST)


def _training(stage_dataset: str) -> TrainingJobRequest:
    return TrainingJobRequest(
        dataset=stage_dataset,
        sha256=SHA,
        spec_version="1+186971cb",
        trainer_version="0.1.0",
        curated=ObjectRef(container="c", key=f"datasets/{stage_dataset}/data.parquet"),
        target="churned",
        task="classification",
        instance_types=("ml.g5.xlarge",),
        hyperparameters={},
        use_spot=False,
        max_runtime_s=3600,
        correlation_id="u-1",
    )


def _validation(dataset: str) -> ValidationJobRequest:
    return ValidationJobRequest(
        dataset=dataset,
        sha256=SHA,
        spec_version="3+1a2b3c4d",
        source=ObjectRef(container="raw", key=f"datasets/{dataset}/big.csv"),
        staged=ObjectRef(container="staging", key=f"datasets/{dataset}/data.csv"),
        size_bytes=5 << 30,
        correlation_id="u-7",
    )


def names(stage: str, dataset: str = "customers") -> dict[str, str]:
    """Every name a stage's code makes that some policy or rule matches by a prefix, as
    the adapters make them (what botocore would send in CreateX)."""
    head = family_head(stage)
    fn = serve_function_name(head, dataset)
    model, config = endpoint_names(head, dataset, 3, SHA)
    errors, latency = lambda_alarm_names(fn)
    five_xx, p99 = alarm_names(fn)
    return {
        "TrainingJobName": training_job_name(_training(dataset), head),
        "ProcessingJobName": processing_job_name(_validation(dataset), head),
        "ModelPackageGroupName": SageMakerModelRegistry(None, stage).group(dataset),  # type: ignore[arg-type]
        "EndpointName": fn,
        "ModelName": model,
        "EndpointConfigName": config,
        "FunctionName": fn,
        "AlarmName": errors,
        "AlarmName:latency": latency,
        "AlarmName:endpoint-5xx": five_xx,
        "AlarmName:endpoint-p99": p99,
        "applicationName": f"{head}-serving",
        "deploymentGroupName": fn,
        "deploymentConfigName": deployment_config_name(head, "canary", 20, 3),
        "azureml:validation": azureml_job_name(_validation(dataset), stage),
    }


def test_a_stage_holds_no_separator_and_does_not_end_with_a_hyphen() -> None:
    for good in ("acme", "acme-prod", "uae-prod", "a1", LONGEST):
        assert STAGE_RE.match(good), good
        Settings(stage=good)
    for bad in ("acme--prod", "acme-", "acme-prod-", "-acme", "a", "Acme", LONGEST + "x"):
        assert not STAGE_RE.match(bad), bad
        with pytest.raises(ConfigError):
            Settings(stage=bad)
        with pytest.raises(StackConfigError):
            check(stage=bad, specs_dir="shared/specs")


def test_every_matched_name_starts_with_its_own_stage_s_prefix_and_no_other_s() -> None:
    for stage in STAGES:
        for kind, name in names(stage).items():
            assert name.startswith(family_prefix(stage)), (kind, name)
    for mine, theirs in permutations(STAGES, 2):
        for kind, name in names(theirs).items():
            assert not name.startswith(family_prefix(mine)), (mine, kind, name)


_SHAPES = {
    "TrainingJobName": ("sagemaker", "CreateTrainingJob"),
    "ProcessingJobName": ("sagemaker", "CreateProcessingJob"),
    "ModelPackageGroupName": ("sagemaker", "CreateModelPackageGroup"),
    "EndpointName": ("sagemaker", "CreateEndpoint"),
    "ModelName": ("sagemaker", "CreateModel"),
    "EndpointConfigName": ("sagemaker", "CreateEndpointConfig"),
    "FunctionName": ("lambda", "CreateFunction"),
    "AlarmName": ("cloudwatch", "PutMetricAlarm"),
    "applicationName": ("codedeploy", "CreateApplication"),
    "deploymentGroupName": ("codedeploy", "CreateDeploymentGroup"),
    "deploymentConfigName": ("codedeploy", "CreateDeploymentConfig"),
}


def _rule(member: str) -> dict[str, Any]:
    service, operation = _SHAPES[member]
    model = get_session().get_service_model(service).operation_model(operation)
    return dict(model.input_shape.members[member].metadata)


SHIPPED = {s.name for s in check(stage="t1", specs_dir="shared/specs").specs}


@pytest.mark.parametrize("dataset", sorted({"customers", *SHIPPED}))
def test_the_longest_stage_s_names_are_ones_each_service_accepts(dataset: str) -> None:
    """The separator costs a character: every name still fits the pattern and length of
    botocore's model of the API that creates it, and a function name Lambda's 64."""
    for kind, name in names(LONGEST, dataset).items():
        member = kind.split(":")[0]
        if member not in _SHAPES:
            continue
        rule = _rule(member)
        assert rule.get("min", 1) <= len(name) <= rule["max"], (kind, name, rule)
        if "pattern" in rule:
            assert re.fullmatch(rule["pattern"], name), (kind, name, rule["pattern"])
    function = value("aws.lambda.function_name")
    fn = names(LONGEST, dataset)["FunctionName"]
    assert len(fn) <= function["max_length"], fn
    assert re.fullmatch(function["pattern"], fn), fn


def _events(stage: str) -> list[dict[str, Any]]:
    """The platform events that carry a stage's names, as SageMaker and CodeDeploy send."""
    n = names(stage)
    return [
        {
            "source": "aws.sagemaker",
            "detail-type": "SageMaker Training Job State Change",
            "detail": {"TrainingJobName": n["TrainingJobName"], "TrainingJobStatus": "Completed"},
        },
        {
            "source": "aws.sagemaker",
            "detail-type": "SageMaker Processing Job State Change",
            "detail": {
                "ProcessingJobName": n["ProcessingJobName"],
                "ProcessingJobStatus": "Completed",
            },
        },
        {
            "source": "aws.codedeploy",
            "detail-type": "CodeDeploy Deployment State-change Notification",
            "detail": {"deploymentGroup": n["deploymentGroupName"], "state": "SUCCESS"},
        },
        {
            "source": "aws.sagemaker",
            "detail-type": "SageMaker Endpoint State Change",
            "detail": {"EndpointName": n["EndpointName"], "EndpointStatus": "IN_SERVICE"},
        },
    ]


def _prefix_rules(stage: str) -> list[dict[str, Any]]:
    """The rules that match a platform event by a name's start (the raw bucket's uploads
    are matched on the bucket's exact name, and a key prefix of the stage's own bucket)."""
    rules = [r for r in build_topology(stage).rules if "prefix" in json.dumps(r.pattern)]
    return [r.pattern for r in rules if r.pattern["source"] != ["aws.s3"]]


def _moto(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    return bool(EventPattern.load(json.dumps(pattern)).matches_event(event))


def test_a_stage_s_rules_route_its_own_jobs_and_deployments_and_no_other_stage_s() -> None:
    """The register, validate and deploy rules match on a name's start (fact
    aws.eventbridge.prefix_matching): judged by our evaluator (the local platform's and
    Azure's) and by moto's, each stage's four end events reach its own rules only."""
    assert value("aws.eventbridge.prefix_matching")["operator"] == "prefix"
    for mine, theirs in permutations(("acme", "acme-prod", "acme-p"), 2):
        rules = _prefix_rules(mine)
        assert len(rules) == 4
        for event in _events(mine):
            assert sum(matches(r, event) for r in rules) == 1, event
            assert sum(_moto(r, event) for r in rules) == 1, event
        for event in _events(theirs):
            assert not any(matches(r, event) for r in rules), (mine, event)
            assert not any(_moto(r, event) for r in rules), event


def test_azure_ml_run_rules_take_no_other_stage_s_runs() -> None:
    """Event Grid's filters on Azure ML run ids start with the same stage prefix (beside
    the experiment's name, which tells training from validation runs); each stage's runs
    reach its own register and validate only."""
    for mine, theirs in permutations(("acme", "acme-prod"), 2):
        cfg = check(cloud="azure", stage=mine, location="uaenorth", specs_dir="shared/specs")
        prefixes = [rule.run_id_prefix for rule in run_status_rules(cfg)]
        own, other = names(mine), names(theirs)
        assert len(prefixes) == 2
        for run in (own["TrainingJobName"], own["azureml:validation"]):
            assert any(run.startswith(p) for p in prefixes), (mine, run)
        for run in (other["TrainingJobName"], other["azureml:validation"]):
            assert not any(run.startswith(p) for p in prefixes), (mine, run)
