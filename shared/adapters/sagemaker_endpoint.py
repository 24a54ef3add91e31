"""``Deployer`` for models that need a GPU at inference: a SageMaker real-time endpoint,
updated blue/green with canary or linear traffic routing and automatic rollback on
the endpoint's CloudWatch alarms.

Per dataset: the endpoint ``dhow-<stage>-serve-<dataset>``; per model version, a
model and an endpoint config named after the version and its artifact hash, so a
redelivery creates nothing new. The endpoint captures requests and responses to
the capture bucket (SageMaker's own data capture), KMS-encrypted. SageMaker
reports the end on EventBridge ("SageMaker Endpoint State Change"): back in
service on the new config, or on the old one after a rollback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from shared.adapters.codedeploy import DeploymentRefused, serve_function_name
from shared.adapters.sagemaker_training import has_instance_storage
from shared.capture import endpoint_capture_uri
from shared.cloud_facts import value
from shared.identifiers import SAGEMAKER_NAME, sagemaker_name
from shared.ports import Deployer, DeploymentPlan, StartedDeployment

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient

VARIANT = "AllTraffic"


@dataclass(frozen=True)
class EndpointConfig:
    name_prefix: str
    role_arn: str
    image_uri: str
    kms_key_id: str
    capture_bucket: str
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    # Bake time on full capacity before the old fleet goes, with the alarms watched.
    termination_wait_s: int = 600


# An endpoint config is its model's name and ``-<artifact hash8>``.
CONFIG_SUFFIX_CHARS = 9


def model_name(prefix: str, dataset: str, version: int) -> str:
    """The SageMaker model of one version: short enough that its endpoint configs
    (``-<hash8>``) fit SageMaker's name limit. A long dataset name is shortened and
    followed by a digest of the whole name (``shared.identifiers.sagemaker_name``), so two
    long names sharing a prefix never share a model, and one dataset never serves
    another's; the version is never shortened, so two versions never share a name."""
    limit = value(SAGEMAKER_NAME)["max_length"] - CONFIG_SUFFIX_CHARS
    return sagemaker_name(prefix, dataset, f"v{version}", limit=limit)


def endpoint_names(prefix: str, dataset: str, version: int, sha256: str) -> tuple[str, str]:
    """(model name, endpoint config name) of one model version."""
    model = model_name(prefix, dataset, version)
    return model, f"{model}-{sha256[:8]}"


def alarm_names(endpoint: str) -> list[str]:
    """The endpoint's rollback alarms, created by the stack."""
    return [f"{endpoint}-5xx-errors", f"{endpoint}-p99-latency"]


class SageMakerEndpointDeployer(Deployer):
    def __init__(self, client: SageMakerClient, config: EndpointConfig) -> None:
        self._sm = client
        self._cfg = config

    def endpoint(self, dataset: str) -> str:
        return serve_function_name(self._cfg.name_prefix, dataset)

    def _tags(self, plan: DeploymentPlan) -> list[Any]:
        return [
            {"Key": "dhow:dataset", "Value": plan.dataset},
            {"Key": "dhow:model-version", "Value": str(plan.model_version)},
        ]

    @staticmethod
    def traffic_routing(plan: DeploymentPlan) -> dict[str, Any]:
        wait = plan.interval_minutes * 60
        if plan.strategy == "canary":
            return {
                "Type": "CANARY",
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": plan.step_percent},
                "WaitIntervalInSeconds": wait,
            }
        if plan.strategy == "linear":
            return {
                "Type": "LINEAR",
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": plan.step_percent},
                "WaitIntervalInSeconds": wait,
            }
        return {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}

    def _create_once(self, call: Any, **kwargs: Any) -> None:
        try:
            call(**kwargs)
        except ClientError as exc:
            if "already exist" not in str(exc).lower():
                raise

    def start(self, plan: DeploymentPlan) -> StartedDeployment:
        cfg = self._cfg
        endpoint = self.endpoint(plan.dataset)
        rule = value(SAGEMAKER_NAME)
        if len(endpoint) > rule["max_length"] or not re.fullmatch(rule["pattern"], endpoint):
            # The endpoint's name is the serve target's (its state-change events are read
            # back by it), so it is not shortened: refused here, with what to do, rather
            # than by CreateEndpoint after the model and config were made.
            raise DeploymentRefused(
                f"{endpoint!r} is not a valid SageMaker endpoint name (at most "
                f"{rule['max_length']} letters, digits and hyphens)",
                hint="serve this dataset on Lambda, or name it with at most "
                f"{rule['max_length'] - len(self.endpoint(''))} letters, digits and '-'",
            )
        model, config = endpoint_names(
            cfg.name_prefix, plan.dataset, plan.model_version, plan.artifact_sha256
        )
        model_args: dict[str, Any] = {
            "ModelName": model,
            "PrimaryContainer": {
                "Image": cfg.image_uri,
                "ModelDataUrl": plan.artifact,
                "Environment": {
                    "DHOW_DATASET": plan.dataset,
                    "DHOW_MODEL_VERSION": str(plan.model_version),
                    "DHOW_ARTIFACT_SHA256": plan.artifact_sha256,
                },
            },
            "ExecutionRoleArn": cfg.role_arn,
            "EnableNetworkIsolation": True,
            "Tags": self._tags(plan),
        }
        if cfg.subnets:
            model_args["VpcConfig"] = {
                "Subnets": list(cfg.subnets),
                "SecurityGroupIds": list(cfg.security_groups),
            }
        self._create_once(self._sm.create_model, **model_args)
        # SageMaker refuses a volume key for instance types with local NVMe storage
        # (ml.g5, ml.g4dn, ...): the hardware encrypts it. The capture key stays: it
        # encrypts what lands in S3.
        volume_key = (
            {} if has_instance_storage(plan.instance_type) else {"KmsKeyId": cfg.kms_key_id}
        )
        self._create_once(
            self._sm.create_endpoint_config,
            EndpointConfigName=config,
            ProductionVariants=[
                {
                    "VariantName": VARIANT,
                    "ModelName": model,
                    "InstanceType": plan.instance_type,
                    "InitialInstanceCount": plan.instance_count,
                }
            ],
            **volume_key,
            DataCaptureConfig={
                "EnableCapture": True,
                "InitialSamplingPercentage": max(1, round(plan.capture_sampling * 100)),
                # Under the dataset's own capture prefix, where the drift check reads.
                "DestinationS3Uri": endpoint_capture_uri(cfg.capture_bucket, plan.dataset),
                "KmsKeyId": cfg.kms_key_id,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
            },
            Tags=self._tags(plan),
        )
        if self._current_config(endpoint) is None:
            self._sm.create_endpoint(
                EndpointName=endpoint, EndpointConfigName=config, Tags=self._tags(plan)
            )
        else:
            self._sm.update_endpoint(
                EndpointName=endpoint,
                EndpointConfigName=config,
                DeploymentConfig=self._blue_green(
                    endpoint,
                    self.traffic_routing(plan),
                    cfg.termination_wait_s,
                    max_s=min(
                        28800, 3600 + plan.interval_minutes * 60 * (100 // plan.step_percent)
                    ),
                ),
            )
        return StartedDeployment(deployment_id=config, target=f"endpoint/{endpoint}")

    @staticmethod
    def _blue_green(
        endpoint: str, routing: dict[str, Any], termination_wait_s: int, max_s: int | None = None
    ) -> Any:
        """A blue/green update that rolls back on the endpoint's alarms."""
        policy: dict[str, Any] = {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": termination_wait_s,
        }
        if max_s is not None:
            policy["MaximumExecutionTimeoutInSeconds"] = max_s
        return {
            "BlueGreenUpdatePolicy": policy,
            "AutoRollbackConfiguration": {
                "Alarms": [{"AlarmName": a} for a in alarm_names(endpoint)]
            },
        }

    def _current_config(self, endpoint: str) -> str | None:
        try:
            return self._sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        except ClientError as exc:
            if "could not find" in str(exc).lower():
                return None
            raise

    def _model_version_of(self, config: str) -> str | None:
        variants = self._sm.describe_endpoint_config(EndpointConfigName=config)[
            "ProductionVariants"
        ]
        for tag in self._sm.list_tags(
            ResourceArn=self._sm.describe_model(ModelName=variants[0]["ModelName"])["ModelArn"]
        )["Tags"]:
            if tag["Key"] == "dhow:model-version":
                return tag["Value"]
        return None

    def failure_reason(self, dataset: str, deployment_id: str) -> str | None:
        try:
            return self._sm.describe_endpoint(EndpointName=self.endpoint(dataset)).get(
                "FailureReason"
            )
        except ClientError:
            return None

    def traffic(self, dataset: str) -> dict[str, float]:
        config = self._current_config(self.endpoint(dataset))
        version = self._model_version_of(config) if config else None
        return {version: 1.0} if version else {}

    def rollback(self, dataset: str, to_version: int, reason: str) -> str:
        endpoint = self.endpoint(dataset)
        prefix = f"{model_name(self._cfg.name_prefix, dataset, to_version)}-"
        configs = self._sm.list_endpoint_configs(
            NameContains=prefix, SortBy="CreationTime", SortOrder="Descending"
        )["EndpointConfigs"]
        config = next(
            (
                c["EndpointConfigName"]
                for c in configs
                if c["EndpointConfigName"].startswith(prefix)
            ),
            None,
        )
        if config is None:
            raise DeploymentRefused(
                f"{endpoint} has no endpoint config for model v{to_version}",
                hint="only versions that were deployed before can be rolled back to",
            )
        self._sm.update_endpoint(
            EndpointName=endpoint,
            EndpointConfigName=config,
            DeploymentConfig=self._blue_green(
                endpoint, {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}, 0
            ),
        )
        return config
