"""``Deployer`` for Lambda serving: a new function version, its alias shifted by CodeDeploy.

Each dataset has its own serve function ``dhow-<stage>-serve-<dataset>`` with an
alias ``live``, and a CodeDeploy deployment group of the same name in the
application ``dhow-<stage>-serving``; the stack gives the group its CloudWatch
alarms (the 5xx share and p99 latency of one version's own requests, see
``shared.canary``) with rollback on alarm. A deployment:

1. sets ``DHOW_SERVE_MODEL_VERSION`` on the function and waits for the update;
2. publishes a version (the function's code and that model version, frozen);
3. points the two alarms at that version (PutMetricAlarm, keeping the actions the
   stack gave them), so they judge the candidate alone and not the alias;
4. asks CodeDeploy to move the alias from its current version to the new one,
   with the spec's deployment config and automatic rollback on failure or alarm.
   If CodeDeploy refuses (a deployment already active, a config error), each alarm is
   put back as DescribeAlarms read it before step 3, and the error is raised: an active
   deployment as ``DeploymentInProgress``, on which the approval waits for that
   deployment's end instead of being retried into the DLQ.

An end event is checked with GetDeployment (``confirm``) before deploy acts on it: its
status, and the model version it carried, read from the description ``start`` gave it.

CodeDeploy steps the weights, watches the alarms and reports the end on
EventBridge ("CodeDeploy Deployment State-change Notification"), which the
deploy function turns into ``DeploymentCompleted`` or ``DeploymentRolledBack``.
Weight stepping is never done by hand here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.canary import CanaryRule
from shared.cloud_facts import value
from shared.constants import SERVE_MODEL_VERSION
from shared.errors import DeploymentInProgress, DhowError
from shared.ports import ConfirmedDeployment, Deployer, DeploymentPlan, StartedDeployment
from shared.reasons import Reason

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_codedeploy import CodeDeployClient
    from mypy_boto3_lambda import LambdaClient

log = logging.getLogger(__name__)

ALIAS = "live"

# CodeDeploy's predefined Lambda configs, by (strategy, percent, minutes).
_PREDEFINED = {
    ("canary", 10, 5): "CodeDeployDefault.LambdaCanary10Percent5Minutes",
    ("canary", 10, 10): "CodeDeployDefault.LambdaCanary10Percent10Minutes",
    ("canary", 10, 15): "CodeDeployDefault.LambdaCanary10Percent15Minutes",
    ("canary", 10, 30): "CodeDeployDefault.LambdaCanary10Percent30Minutes",
    ("linear", 10, 1): "CodeDeployDefault.LambdaLinear10PercentEvery1Minute",
    ("linear", 10, 2): "CodeDeployDefault.LambdaLinear10PercentEvery2Minutes",
    ("linear", 10, 3): "CodeDeployDefault.LambdaLinear10PercentEvery3Minutes",
    ("linear", 10, 10): "CodeDeployDefault.LambdaLinear10PercentEvery10Minutes",
}


class DeploymentRefused(DhowError):
    """The serving platform would not start or change a deployment."""

    reason = Reason.DEPLOYMENT_REFUSED


def serve_function_name(prefix: str, dataset: str) -> str:
    return f"{prefix}-serve-{dataset}"


def description(dataset: str, model_version: int, strategy: str) -> str:
    """A deployment's description: how GetDeployment later tells which version it carried."""
    return f"dhow {dataset} model v{model_version} ({strategy})"


_DESCRIPTION = re.compile(r"^dhow (?P<dataset>\S+) model v(?P<version>\d+) \(")


def deployment_config_name(prefix: str, strategy: str, percent: int, minutes: int) -> str:
    """CodeDeploy's predefined config where one matches the spec, else the custom config
    the stack creates for it (``<prefix>-lambda-canary-20pct-3min``)."""
    if strategy == "all_at_once":
        return "CodeDeployDefault.LambdaAllAtOnce"
    return _PREDEFINED.get(
        (strategy, percent, minutes), f"{prefix}-lambda-{strategy}-{percent}pct-{minutes}min"
    )


@dataclass(frozen=True)
class LambdaServingConfig:
    name_prefix: str  # dhow-<stage>
    poll_s: float = 1.0
    update_timeout_s: float = 120.0


class LambdaCodeDeployDeployer(Deployer):
    def __init__(
        self,
        lambda_client: LambdaClient,
        codedeploy: CodeDeployClient,
        config: LambdaServingConfig,
        sleep: Callable[[float], None] = time.sleep,
        *,
        cloudwatch: CloudWatchClient,
    ) -> None:
        self._lambda = lambda_client
        self._cd = codedeploy
        self._cw = cloudwatch
        self._cfg = config
        self._sleep = sleep

    @property
    def application(self) -> str:
        return f"{self._cfg.name_prefix}-serving"

    def _function(self, dataset: str) -> str:
        return serve_function_name(self._cfg.name_prefix, dataset)

    def _publish(self, dataset: str, version: int, sha256: str) -> str:
        """A function version serving model ``version``; returns its number."""
        fn = self._function(dataset)
        current = self._lambda.get_function_configuration(FunctionName=fn)
        variables = dict(current.get("Environment", {}).get("Variables", {}))
        revision = current["RevisionId"]
        if variables.get(SERVE_MODEL_VERSION) != str(version):
            variables[SERVE_MODEL_VERSION] = str(version)
            revision = self._lambda.update_function_configuration(
                FunctionName=fn, Environment={"Variables": variables}, RevisionId=revision
            )["RevisionId"]
            deadline = time.monotonic() + self._cfg.update_timeout_s
            while True:
                state = self._lambda.get_function_configuration(FunctionName=fn)
                status = state.get("LastUpdateStatus")
                if status == "Successful":
                    revision = state["RevisionId"]
                    break
                if status == "Failed" or time.monotonic() > deadline:
                    raise DeploymentRefused(
                        f"updating {fn} for model v{version} did not succeed ({status}): "
                        f"{state.get('LastUpdateStatusReason', '')}",
                        hint="see the function's configuration in the console; retried",
                    )
                self._sleep(self._cfg.poll_s)
        # Publishing an unchanged function returns the existing version: a redelivery
        # publishes nothing new.
        return self._lambda.publish_version(
            FunctionName=fn,
            Description=f"dhow {dataset} model v{version} sha256 {sha256[:12]}",
            RevisionId=revision,
        )["Version"]

    def appspec(self, dataset: str, current: str, target: str) -> dict[str, Any]:
        fn = self._function(dataset)
        return {
            "version": 0.0,
            "Resources": [
                {
                    fn: {
                        "Type": "AWS::Lambda::Function",
                        "Properties": {
                            "Name": fn,
                            "Alias": ALIAS,
                            "CurrentVersion": current,
                            "TargetVersion": target,
                        },
                    }
                }
            ],
        }

    def start(self, plan: DeploymentPlan) -> StartedDeployment:
        fn = self._function(plan.dataset)
        target = self._publish(plan.dataset, plan.model_version, plan.artifact_sha256)
        current = self._lambda.get_alias(FunctionName=fn, Name=ALIAS)["FunctionVersion"]
        previous = self._judge_version(fn, target, plan)
        try:
            return self._create_deployment(plan, fn, current, target)
        except Exception:
            # CodeDeploy did not take the deployment (one already active, a config
            # error): the alarms must not stay on a version that gets no traffic.
            self._restore_alarms(previous)
            raise

    def _create_deployment(
        self, plan: DeploymentPlan, fn: str, current: str, target: str
    ) -> StartedDeployment:
        content = json.dumps(self.appspec(plan.dataset, current, target), sort_keys=True)
        config = deployment_config_name(
            self._cfg.name_prefix, plan.strategy, plan.step_percent, plan.interval_minutes
        )
        try:
            deployment_id = self._cd.create_deployment(
                applicationName=self.application,
                deploymentGroupName=fn,
                revision={
                    "revisionType": "AppSpecContent",
                    "appSpecContent": {
                        "content": content,
                        "sha256": hashlib.sha256(content.encode()).hexdigest(),
                    },
                },
                deploymentConfigName=config,
                description=description(plan.dataset, plan.model_version, plan.strategy),
                autoRollbackConfiguration={
                    "enabled": True,
                    "events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"],
                },
            )["deploymentId"]
        except self._cd.exceptions.DeploymentGroupDoesNotExistException as exc:
            raise DeploymentRefused(
                f"CodeDeploy has no deployment group {fn} in {self.application}",
                hint="the stack creates one per dataset spec; run `pulumi up` after adding a spec",
            ) from exc
        except self._cd.exceptions.ClientError as exc:
            # One active deployment per group (fact aws.codedeploy.active_deployment_error):
            # this one waits for that one's end, it is not a poisoned message.
            if exc.response.get("Error", {}).get("Code") != value(
                "aws.codedeploy.active_deployment_error"
            ):
                raise
            raise DeploymentInProgress(
                f"{fn} already has an active CodeDeploy deployment; model "
                f"v{plan.model_version} starts when it ends",
                hint="nothing to do: its end event starts the newest approved version",
            ) from exc
        return StartedDeployment(deployment_id=deployment_id, target=f"{fn}:{ALIAS}")

    def _judge_version(self, fn: str, version: str, plan: DeploymentPlan) -> list[dict[str, Any]]:
        """Point ``fn``'s rollback alarms at ``version``'s own metrics before CodeDeploy
        starts watching them, with the spec's current thresholds (the deploy function
        owns every field it writes; the stack only creates the alarms). PutMetricAlarm
        overwrites an alarm's whole configuration, so the actions the stack gave each
        alarm are read first and sent back. Returns each alarm as it was, to restore."""
        rule = CanaryRule(plan.min_requests, plan.error_rate_threshold, plan.p99_latency_ms)
        wanted = rule.alarms(fn, version)
        names = [a["AlarmName"] for a in wanted]
        found = self._cw.describe_alarms(AlarmNames=names, AlarmTypes=["MetricAlarm"])
        existing = {a["AlarmName"]: a for a in found.get("MetricAlarms", [])}
        missing = [n for n in names if n not in existing]
        if missing:
            raise DeploymentRefused(
                f"{fn} has no rollback alarm {', '.join(missing)}: a canary would go unwatched",
                hint="the stack creates them for each dataset spec; run `pulumi up`",
            )
        previous = [self._put_request(existing[n]) for n in names]
        try:
            for alarm in wanted:
                old = existing[alarm["AlarmName"]]
                self._cw.put_metric_alarm(
                    **alarm,
                    ActionsEnabled=old.get("ActionsEnabled", True),
                    AlarmActions=old.get("AlarmActions", []),
                    OKActions=old.get("OKActions", []),
                    InsufficientDataActions=old.get("InsufficientDataActions", []),
                )
        except Exception:
            self._restore_alarms(previous)  # the one already repointed goes back too
            raise
        return previous

    def _put_request(self, described: Mapping[str, Any]) -> dict[str, Any]:
        """The PutMetricAlarm request that recreates ``described`` (a DescribeAlarms
        MetricAlarm) as it is: its configuration fields, by CloudWatch's own service
        model, without the state, ARN and timestamps that PutMetricAlarm does not take."""
        shape = self._cw.meta.service_model.operation_model("PutMetricAlarm").input_shape
        accepted = shape.members if shape is not None else {}
        return {k: v for k, v in described.items() if k in accepted}

    def _restore_alarms(self, previous: list[dict[str, Any]]) -> None:
        """Put each alarm back as DescribeAlarms read it before the change. Best effort:
        a failed restore is logged, and the error that caused it is what the caller sees."""
        for request in previous:
            try:
                self._cw.put_metric_alarm(**request)
            except Exception:
                log.exception("could not restore alarm %s", request.get("AlarmName"))

    def confirm(self, dataset: str, deployment_id: str) -> ConfirmedDeployment | None:
        """GetDeployment's word on a deployment: its status, and the model version it
        carried if it is one of Dhow's (a user deployment of the dataset's group with the
        description ``start`` gives it; CodeDeploy's own rollback deployments are not)."""
        fn = self._function(dataset)
        info = self._cd.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        statuses = value("aws.codedeploy.deployment_status")
        status = info.get("status", "")
        ours = (
            info.get("deploymentGroupName") == fn
            and info.get("creator") == value("aws.codedeploy.user_creator")
            and (m := _DESCRIPTION.match(info.get("description", ""))) is not None
            and m["dataset"] == dataset
        )
        model_version = int(m["version"]) if ours and m is not None else None
        if status in statuses["succeeded"]:
            return ConfirmedDeployment(
                deployment_id=deployment_id, model_version=model_version, status="Succeeded"
            )
        if status in statuses["rolled_back"]:
            error = info.get("errorInformation", {})
            return ConfirmedDeployment(
                deployment_id=deployment_id,
                model_version=model_version,
                status="RolledBack",
                reason=f"{error.get('code', status)}: {error.get('message', status)}",
            )
        return ConfirmedDeployment(
            deployment_id=deployment_id, model_version=model_version, status="InProgress"
        )

    def failure_reason(self, dataset: str, deployment_id: str) -> str | None:
        info = self._cd.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        error = info.get("errorInformation", {})
        message = error.get("message")
        return f"{error.get('code', 'error')}: {message}" if message else None

    def _model_version_of(self, fn: str, lambda_version: str) -> str | None:
        cfg = self._lambda.get_function_configuration(FunctionName=fn, Qualifier=lambda_version)
        return cfg.get("Environment", {}).get("Variables", {}).get(SERVE_MODEL_VERSION)

    def traffic(self, dataset: str) -> dict[str, float]:
        fn = self._function(dataset)
        try:
            alias = self._lambda.get_alias(FunctionName=fn, Name=ALIAS)
        except self._lambda.exceptions.ResourceNotFoundException:
            return {}
        extra = alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {})
        shares = {alias["FunctionVersion"]: 1.0 - sum(extra.values()), **extra}
        out: dict[str, float] = {}
        for lambda_version, share in shares.items():
            model = self._model_version_of(fn, lambda_version)
            if model is not None and share > 0:
                out[model] = round(out.get(model, 0.0) + share, 6)
        return out

    def rollback(self, dataset: str, to_version: int, reason: str) -> str:
        fn = self._function(dataset)
        # A deployment in progress is stopped first, with CodeDeploy's own rollback.
        active = self._cd.list_deployments(
            applicationName=self.application,
            deploymentGroupName=fn,
            includeOnlyStatuses=["Created", "Queued", "InProgress", "Ready"],
        ).get("deployments", [])
        for deployment_id in active:
            self._cd.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=True)
        lambda_version = None
        for page in self._lambda.get_paginator("list_versions_by_function").paginate(
            FunctionName=fn
        ):
            for v in page["Versions"]:
                env = v.get("Environment", {}).get("Variables", {})
                if v["Version"] != "$LATEST" and env.get(SERVE_MODEL_VERSION) == str(to_version):
                    lambda_version = v["Version"]  # the newest such version wins
        if lambda_version is None:
            raise DeploymentRefused(
                f"{fn} has no published version serving model v{to_version}",
                hint="only versions that were deployed before can be rolled back to",
            )
        self._lambda.update_alias(
            FunctionName=fn,
            Name=ALIAS,
            FunctionVersion=lambda_version,
            Description=f"rollback to model v{to_version}: {reason}"[:256],
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
        return f"rollback-{fn}-{lambda_version}"
