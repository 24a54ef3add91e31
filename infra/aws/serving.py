"""Serving: each dataset's serve function behind API Gateway (an HTTP API with IAM auth
whose Lambda integration is the ``live`` alias: Function URLs do not exist in
me-central-1), a CodeDeploy deployment group that shifts the alias and rolls back on the
candidate version's own alarms, the custom deployment configs the specs ask for, and the
rollback alarms of SageMaker endpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.iam import assume_role_policy
from infra.config import StackConfig
from shared.adapters.codedeploy import ALIAS, deployment_config_name, serve_function_name
from shared.adapters.sagemaker_endpoint import alarm_names
from shared.canary import CanaryRule
from shared.canary import alarm_names as lambda_alarm_names
from shared.identifiers import family_head, family_prefix
from shared.specs import DatasetSpec

__all__ = ["Serving", "codedeploy_policy", "lambda_alarm_names"]

# API Gateway's $default stage: the stage is not part of the path (cloud facts:
# aws.apigateway.lambda_payload_format), so the app's routes are the paths clients call.
STAGE = "$default"
PAYLOAD_FORMAT = "2.0"
ROUTE = "ANY /{proxy+}"
# One JSON line per request, in the access log group.
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "caller": "$context.identity.caller",
        "userArn": "$context.identity.userArn",
        "requestTime": "$context.requestTime",
        "method": "$context.httpMethod",
        "path": "$context.path",
        "status": "$context.status",
        "latencyMs": "$context.integrationLatency",
        "integrationError": "$context.integrationErrorMessage",
    }
)


# Every field of a rollback alarm that the deploy function writes (PutMetricAlarm, which
# overwrites the whole configuration: fact aws.cloudwatch.put_metric_alarm_overwrites),
# as pulumi-aws's MetricAlarm inputs. The stack creates each alarm with them once and
# then ignores them all: with ignore_changes Pulumi sends the value from its state, so an
# update of any one field it still owned would send the others as the first `up` wrote
# them, pointing the alarm back at that version. A spec's new thresholds reach the alarm
# at the next deployment; where an alarm notifies is fixed when the stack creates it.
ALARM_INPUTS = {
    "AlarmDescription": "alarm_description",
    "ComparisonOperator": "comparison_operator",
    "Threshold": "threshold",
    "EvaluationPeriods": "evaluation_periods",
    "DatapointsToAlarm": "datapoints_to_alarm",
    "TreatMissingData": "treat_missing_data",
    "Metrics": "metric_queries",
    "ActionsEnabled": "actions_enabled",
    "AlarmActions": "alarm_actions",
    "OKActions": "ok_actions",
    "InsufficientDataActions": "insufficient_data_actions",
}
DEPLOY_OWNED_ALARM_INPUTS = sorted(ALARM_INPUTS.values())


def _metric_queries(request: dict[str, Any]) -> list[dict[str, Any]]:
    """A PutMetricAlarm request's Metrics (``shared.canary``) as Pulumi's metric_queries."""
    out: list[dict[str, Any]] = []
    for q in request["Metrics"]:
        query: dict[str, Any] = {"id": q["Id"], "return_data": q["ReturnData"]}
        if "Expression" in q:
            query |= {"expression": q["Expression"], "label": q["Label"]}
        else:
            stat = q["MetricStat"]
            metric = stat["Metric"]
            query["metric"] = {
                "namespace": metric["Namespace"],
                "metric_name": metric["MetricName"],
                "dimensions": {d["Name"]: d["Value"] for d in metric["Dimensions"]},
                "period": stat["Period"],
                "stat": stat["Stat"],
            }
        out.append(query)
    return out


def codedeploy_policy(region: str, account: str, family: str) -> str:
    """CodeDeploy moves the serve functions' aliases and reads their alarms; nothing else
    (in place of the broad AWSCodeDeployRoleForLambda managed policy). ``family`` is the
    stage's ``family_prefix`` (``dhow-<stage>--``), which no other stage's names start with."""
    fn = f"arn:aws:lambda:{region}:{account}:function:{family}serve-*"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": [
                        "lambda:GetAlias",
                        "lambda:UpdateAlias",
                        "lambda:GetFunction",
                        "lambda:GetProvisionedConcurrencyConfig",
                    ],
                    "Resource": [fn, f"{fn}:*"],
                },
                {
                    "Effect": "Allow",
                    "Action": ["cloudwatch:DescribeAlarms"],
                    "Resource": [f"arn:aws:cloudwatch:{region}:{account}:alarm:{family}serve-*"],
                },
            ],
        }
    )


@dataclass(frozen=True)
class ServingArgs:
    cfg: StackConfig
    account: pulumi.Output[str]
    lambdas: dict[str, aws.lambda_.Function]
    alerts: aws.sns.Topic
    key: aws.kms.Key | None = None


class Serving(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:aws:Serving", name, None, opts)
        cfg, account, lambdas, alerts, key = (
            args.cfg,
            args.account,
            args.lambdas,
            args.alerts,
            args.key,
        )
        self._cfg, self._alerts, self._key = cfg, alerts, key
        child = pulumi.ResourceOptions(parent=self)
        self.application = aws.codedeploy.Application(
            # The deployer's own name for it (codedeploy.LambdaCodeDeployDeployer.application).
            "serving",
            name=f"{family_head(cfg.stage)}-serving",
            compute_platform="Lambda",
            opts=child,
        )
        self.role = aws.iam.Role(
            "codedeploy",
            name=cfg.name("codedeploy"),
            assume_role_policy=json.dumps(assume_role_policy("codedeploy.amazonaws.com")),
            tags=cfg.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            "codedeploy",
            role=self.role.id,
            policy=account.apply(
                lambda a: codedeploy_policy(cfg.region, a, family_prefix(cfg.stage))
            ),
            opts=child,
        )
        self.configs: dict[str, aws.codedeploy.DeploymentConfig] = {}
        self.urls: dict[str, pulumi.Output[str]] = {}
        for spec in cfg.specs:
            if spec.serving.target == "lambda":
                fn = lambdas[serve_function_name(family_head(cfg.stage), spec.name)]
                self._lambda_serving(spec, fn)
            else:
                self._endpoint_alarms(spec)
        self.register_outputs({"urls": self.urls})

    def _config(self, spec: DatasetSpec) -> str:
        """The spec's deployment config: CodeDeploy's own, or one this stack creates."""
        s, prefix = spec.serving, family_head(self._cfg.stage)
        config = deployment_config_name(prefix, s.strategy, s.step_percent, s.interval_minutes)
        if config.startswith(prefix) and config not in self.configs:
            kind = "TimeBasedCanary" if s.strategy == "canary" else "TimeBasedLinear"
            step = {"interval": s.interval_minutes, "percentage": s.step_percent}
            routing: dict[str, object] = {"type": kind}
            routing["time_based_canary" if s.strategy == "canary" else "time_based_linear"] = step
            self.configs[config] = aws.codedeploy.DeploymentConfig(
                config,
                deployment_config_name=config,
                compute_platform="Lambda",
                traffic_routing_config=routing,
                opts=pulumi.ResourceOptions(parent=self),
            )
        return config

    def _lambda_serving(self, spec: DatasetSpec, function: aws.lambda_.Function) -> None:
        cfg = self._cfg
        fn_name = serve_function_name(family_head(cfg.stage), spec.name)
        alias = aws.lambda_.Alias(
            f"{spec.name}-live",
            name=ALIAS,
            function_name=function.name,
            function_version=function.version,
            # Deploy and CodeDeploy move the alias; `pulumi up` must not move it back.
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["function_version", "routing_config"]
            ),
        )
        self.urls[spec.name] = self._http_api(spec, function, alias)
        errors, latency = lambda_alarm_names(fn_name)
        s = spec.serving
        rule = CanaryRule(s.min_requests, s.error_rate_threshold, s.p99_latency_ms)
        # The alarms as CanaryRule renders them for the version the alias starts on.
        rendered = function.version.apply(
            lambda v: {r["AlarmName"]: r for r in rule.alarms(fn_name, v)}
        )
        for alarm_name in (errors, latency):

            def field(key: str, n: str = alarm_name) -> pulumi.Output[Any]:
                out: pulumi.Output[Any] = rendered.apply(lambda rs: rs[n][key])
                return out

            aws.cloudwatch.MetricAlarm(
                f"{spec.name}-{alarm_name.removeprefix(fn_name + '-')}",
                name=alarm_name,
                alarm_description=field("AlarmDescription"),
                comparison_operator=field("ComparisonOperator"),
                threshold=field("Threshold"),
                evaluation_periods=field("EvaluationPeriods"),
                datapoints_to_alarm=field("DatapointsToAlarm"),
                treat_missing_data=field("TreatMissingData"),
                metric_queries=rendered.apply(lambda rs, n=alarm_name: _metric_queries(rs[n])),
                actions_enabled=True,
                alarm_actions=[self._alerts.arn],
                # Each deployment rewrites all of these (LambdaCodeDeployDeployer):
                # `pulumi up` must neither undo them nor resend stale ones.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=DEPLOY_OWNED_ALARM_INPUTS),
            )
        aws.codedeploy.DeploymentGroup(
            spec.name,
            app_name=self.application.name,
            deployment_group_name=fn_name,
            service_role_arn=self.role.arn,
            deployment_config_name=self._config(spec),
            deployment_style={
                "deployment_option": "WITH_TRAFFIC_CONTROL",
                "deployment_type": "BLUE_GREEN",
            },
            alarm_configuration={"enabled": True, "alarms": [errors, latency]},
            auto_rollback_configuration={
                "enabled": True,
                "events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.configs.values()]),
        )

    def _http_api(
        self, spec: DatasetSpec, function: aws.lambda_.Function, alias: aws.lambda_.Alias
    ) -> pulumi.Output[str]:
        """An HTTP API in front of the alias: every route IAM-authorized, the Lambda proxy
        integration on ``live`` (so CodeDeploy's weights decide which version answers),
        access logs to an encrypted log group. Returns the invoke URL."""
        cfg = self._cfg
        fn_name = serve_function_name(family_head(cfg.stage), spec.name)
        child = pulumi.ResourceOptions(parent=self)
        logs = aws.cloudwatch.LogGroup(
            f"{spec.name}-api-access",
            name=f"/aws/apigateway/{fn_name}",
            retention_in_days=cfg.log_retention_days,
            kms_key_id=self._key.arn if self._key is not None else None,
            tags=cfg.tags,
            opts=child,
        )
        api = aws.apigatewayv2.Api(
            f"{spec.name}-api",
            name=fn_name,
            protocol_type="HTTP",
            description=f"Dhow serve: {spec.name} (IAM auth; the live alias behind it)",
            tags=cfg.tags,
            opts=child,
        )
        integration = aws.apigatewayv2.Integration(
            f"{spec.name}-live",
            api_id=api.id,
            integration_type="AWS_PROXY",
            integration_uri=alias.arn,
            payload_format_version=PAYLOAD_FORMAT,
            opts=child,
        )
        aws.apigatewayv2.Route(
            f"{spec.name}-any",
            api_id=api.id,
            route_key=ROUTE,
            target=integration.id.apply(lambda i: f"integrations/{i}"),
            authorization_type="AWS_IAM",
            opts=child,
        )
        aws.apigatewayv2.Stage(
            f"{spec.name}-default",
            api_id=api.id,
            name=STAGE,
            auto_deploy=True,
            access_log_settings={"destination_arn": logs.arn, "format": ACCESS_LOG_FORMAT},
            tags=cfg.tags,
            opts=child,
        )
        aws.lambda_.Permission(
            f"{spec.name}-api-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            qualifier=alias.name,
            principal="apigateway.amazonaws.com",
            # Only this API (any stage, method and route) may invoke the alias.
            source_arn=api.execution_arn.apply(lambda arn: f"{arn}/*"),
            opts=child,
        )
        endpoint: pulumi.Output[str] = api.api_endpoint  # pulumi_aws is not type-checked
        return endpoint

    def _endpoint_alarms(self, spec: DatasetSpec) -> None:
        cfg, s = self._cfg, spec.serving
        endpoint = serve_function_name(family_head(cfg.stage), spec.name)
        five_xx, latency = alarm_names(endpoint)
        dims = {"EndpointName": endpoint, "VariantName": "AllTraffic"}
        common = {
            "namespace": "AWS/SageMaker",
            "dimensions": dims,
            "period": 60,
            "evaluation_periods": 2,
            "comparison_operator": "GreaterThanThreshold",
            "treat_missing_data": "notBreaching",
            "alarm_actions": [self._alerts.arn],
        }
        child = pulumi.ResourceOptions(parent=self)
        aws.cloudwatch.MetricAlarm(
            f"{spec.name}-5xx-errors",
            name=five_xx,
            metric_name="Invocation5XXErrors",
            statistic="Sum",
            threshold=0,
            opts=child,
            **common,
        )
        aws.cloudwatch.MetricAlarm(
            f"{spec.name}-p99-latency",
            name=latency,
            metric_name="ModelLatency",  # microseconds
            extended_statistic="p99",
            threshold=s.p99_latency_ms * 1000,
            opts=child,
            **common,
        )
