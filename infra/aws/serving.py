"""Serving: each dataset's serve function behind its ``live`` alias (a Function URL with
IAM auth), a CodeDeploy deployment group that shifts the alias and rolls back on the
alias's alarms, the custom deployment configs the specs ask for, and the rollback
alarms of SageMaker endpoints."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.aws.iam import assume_role_policy
from infra.config import StackConfig
from shared.adapters.codedeploy import ALIAS, deployment_config_name, serve_function_name
from shared.adapters.sagemaker_endpoint import alarm_names
from shared.specs import DatasetSpec


def lambda_alarm_names(function: str) -> list[str]:
    """The alias's rollback alarms (the deployment group watches them)."""
    return [f"{function}-errors", f"{function}-p99-latency"]


def codedeploy_policy(region: str, account: str, prefix: str) -> str:
    """CodeDeploy moves the serve functions' aliases and reads their alarms; nothing else
    (in place of the broad AWSCodeDeployRoleForLambda managed policy)."""
    fn = f"arn:aws:lambda:{region}:{account}:function:{prefix}-serve-*"
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
                    "Resource": [f"arn:aws:cloudwatch:{region}:{account}:alarm:{prefix}-serve-*"],
                },
            ],
        }
    )


class Serving(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        account: pulumi.Output[str],
        lambdas: dict[str, aws.lambda_.Function],
        alerts: aws.sns.Topic,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("dhow:aws:Serving", name, None, opts)
        self._cfg, self._alerts = cfg, alerts
        child = pulumi.ResourceOptions(parent=self)
        self.application = aws.codedeploy.Application(
            "serving", name=f"{cfg.prefix}-serving", compute_platform="Lambda", opts=child
        )
        self.role = aws.iam.Role(
            "codedeploy",
            name=f"{cfg.prefix}-codedeploy",
            assume_role_policy=json.dumps(assume_role_policy("codedeploy.amazonaws.com")),
            tags=cfg.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            "codedeploy",
            role=self.role.id,
            policy=account.apply(lambda a: codedeploy_policy(cfg.region, a, cfg.prefix)),
            opts=child,
        )
        self.configs: dict[str, aws.codedeploy.DeploymentConfig] = {}
        self.urls: dict[str, pulumi.Output[str]] = {}
        for spec in cfg.specs:
            if spec.serving.target == "lambda":
                self._lambda_serving(spec, lambdas[serve_function_name(cfg.prefix, spec.name)])
            else:
                self._endpoint_alarms(spec)
        self.register_outputs({"urls": self.urls})

    def _config(self, spec: DatasetSpec) -> str:
        """The spec's deployment config: CodeDeploy's own, or one this stack creates."""
        s, prefix = spec.serving, self._cfg.prefix
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
        cfg, child = self._cfg, pulumi.ResourceOptions(parent=self)
        fn_name = serve_function_name(cfg.prefix, spec.name)
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
        url = aws.lambda_.FunctionUrl(
            f"{spec.name}-url",
            function_name=function.name,
            qualifier=alias.name,
            authorization_type="AWS_IAM",
            opts=child,
        )
        self.urls[spec.name] = url.function_url
        errors, latency = lambda_alarm_names(fn_name)
        dims = {"FunctionName": fn_name, "Resource": f"{fn_name}:{ALIAS}"}
        s = spec.serving
        aws.cloudwatch.MetricAlarm(
            f"{spec.name}-errors",
            name=errors,
            alarm_description=(
                f"{fn_name}:{ALIAS} fails more than {s.error_rate_threshold:.0%} of requests "
                f"(over at least {s.min_requests}): CodeDeploy rolls the deployment back"
            ),
            comparison_operator="GreaterThanThreshold",
            threshold=s.error_rate_threshold,
            evaluation_periods=1,
            treat_missing_data="notBreaching",
            metric_queries=[
                {
                    "id": "rate",
                    "expression": f"IF(invocations >= {s.min_requests}, errors / invocations, 0)",
                    "return_data": True,
                },
                *(
                    {
                        "id": qid,
                        "metric": {
                            "namespace": "AWS/Lambda",
                            "metric_name": metric,
                            "dimensions": dims,
                            "period": 60,
                            "stat": "Sum",
                        },
                    }
                    for qid, metric in (("errors", "Errors"), ("invocations", "Invocations"))
                ),
            ],
            alarm_actions=[self._alerts.arn],
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            f"{spec.name}-p99-latency",
            name=latency,
            alarm_description=f"{fn_name}:{ALIAS} p99 above {s.p99_latency_ms} ms",
            namespace="AWS/Lambda",
            metric_name="Duration",
            dimensions=dims,
            extended_statistic="p99",
            period=60,
            evaluation_periods=2,
            threshold=s.p99_latency_ms,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[self._alerts.arn],
            opts=child,
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

    def _endpoint_alarms(self, spec: DatasetSpec) -> None:
        cfg, s = self._cfg, spec.serving
        endpoint = serve_function_name(cfg.prefix, spec.name)
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
