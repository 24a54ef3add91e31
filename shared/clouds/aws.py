"""The AWS kit: S3, EventBridge, DynamoDB, SQS, SageMaker, CodeDeploy, CloudWatch, SNS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from shared.clouds import CloudKit, Ports, TrainingBackend
from shared.constants import AWS_REGION, CLOUD, STAGE
from shared.errors import ConfigError
from shared.identifiers import family_head
from shared.ports import (
    AlertChannel,
    Deployer,
    DeploymentPlan,
    EventBus,
    EventTap,
    LineageStore,
    MetricsSink,
    ModelRegistry,
    ObjectStore,
    StartedDeployment,
    TrainingLauncher,
    ValidationJobLauncher,
)
from shared.settings import Cloud
from shared.topology import Topology


class SpecRoutedDeployer(Deployer):
    """Each dataset's deployments go where its spec's ``serving.target`` says: a Lambda
    alias (CodeDeploy) or a SageMaker endpoint (GPU inference)."""

    def __init__(
        self,
        lambda_deployer: Callable[[], Deployer],
        endpoint_deployer: Callable[[], Deployer],
        specs_dir: str | None,
    ) -> None:
        self._make = {"lambda": lambda_deployer, "sagemaker_endpoint": endpoint_deployer}
        self._built: dict[str, Deployer] = {}
        self._specs = specs_dir

    def for_dataset(self, dataset: str) -> Deployer:
        from shared.specs import load_spec

        target = load_spec(dataset, self._specs).serving.target
        if target not in self._built:
            self._built[target] = self._make[target]()
        return self._built[target]

    def start(self, plan: DeploymentPlan) -> StartedDeployment:
        return self.for_dataset(plan.dataset).start(plan)

    def traffic(self, dataset: str) -> dict[str, float]:
        return self.for_dataset(dataset).traffic(dataset)

    def rollback(self, dataset: str, to_version: int, reason: str) -> str:
        return self.for_dataset(dataset).rollback(dataset, to_version, reason)

    def failure_reason(self, dataset: str, deployment_id: str) -> str | None:
        return self.for_dataset(dataset).failure_reason(dataset, deployment_id)


class AwsKit(CloudKit):
    """Every port on AWS, from the settings the stack gives each function."""

    cloud: ClassVar[Cloud] = "aws"
    training_backend: ClassVar[TrainingBackend] = "sagemaker"

    def caller_principal(self, client: Any | None = None) -> str:
        """The ARN STS names the caller by (``client``: an STS client)."""
        from shared.adapters.aws import sts_caller_arn

        return sts_caller_arn(self.settings, client)

    def store(self) -> ObjectStore:
        from shared.adapters.aws import S3ObjectStore, aws_client

        return S3ObjectStore(aws_client("s3", self.settings))

    def lineage(self, topology: Topology) -> LineageStore:
        from shared.adapters.aws import DynamoLineageStore, aws_client

        return DynamoLineageStore(
            aws_client("dynamodb", self.settings), topology.table("lineage").name
        )

    def bus(self, topology: Topology) -> EventBus:
        from shared.adapters.aws import EventBridgeBus, aws_client

        return EventBridgeBus(aws_client("events", self.settings), topology.bus_name)

    def event_tap(self, topology: Topology) -> EventTap:
        from shared.adapters.aws import SqsEventTap, aws_client

        return SqsEventTap(aws_client("sqs", self.settings), topology.queue("events").name)

    def validation_jobs(self) -> ValidationJobLauncher | None:
        s = self.settings
        if not (s.processing_image_uri and s.sagemaker_role_arn):
            return None
        from shared.adapters.aws import ProcessingJobConfig, SageMakerValidationJobs, aws_client

        env = {CLOUD: s.cloud, STAGE: s.stage, AWS_REGION: s.aws_region}
        return SageMakerValidationJobs(
            aws_client("sagemaker", s),
            ProcessingJobConfig(
                image_uri=s.processing_image_uri,
                role_arn=s.sagemaker_role_arn,
                name_prefix=family_head(s.stage),
                kms_key_id=s.kms_key_id,
                subnets=s.private_subnets,
                security_groups=s.security_groups,
                environment=tuple(sorted(env.items())),
            ),
        )

    def training_launcher(self, ports: Ports, topology: Topology) -> TrainingLauncher:
        from shared.adapters.aws import aws_client
        from shared.adapters.sagemaker_training import (
            SageMakerTrainingLauncher,
            TrainingJobConfig,
            trainer_code_key,
        )

        s = self.settings
        if not (
            s.training_image_uri and s.sagemaker_role_arn and s.kms_key_id and s.private_subnets
        ):
            raise ConfigError(
                "SageMaker training is not configured",
                hint="the stack sets DHOW_TRAINING_IMAGE_URI, DHOW_SAGEMAKER_ROLE_ARN, "
                "DHOW_KMS_KEY_ID and DHOW_PRIVATE_SUBNETS; locally use `dhow local up`",
            )
        models = topology.bucket("models").name
        return SageMakerTrainingLauncher(
            aws_client("sagemaker", s),
            aws_client("service-quotas", s),
            TrainingJobConfig(
                image_uri=s.training_image_uri,
                role_arn=s.sagemaker_role_arn,
                # Jobs are dhow-<stage>--...: the register rule and IAM match that prefix,
                # which no other stage's names start with.
                name_prefix=family_head(s.stage),
                output_s3_uri=f"s3://{models}/models",
                checkpoint_s3_uri=f"s3://{models}/checkpoints",
                # The stack uploads the trainer there (infra/aws/training.py), same key.
                code_s3_uri=f"s3://{models}/{trainer_code_key()}",
                kms_key_id=s.kms_key_id,
                subnets=s.private_subnets,
                security_groups=s.security_groups,
                region=s.aws_region,
            ),
        )

    def model_registry(self, ports: Ports) -> ModelRegistry:
        """The SageMaker Model Registry (one model package group per dataset)."""
        from shared.adapters.aws import aws_client
        from shared.adapters.sagemaker_registry import SageMakerModelRegistry

        return SageMakerModelRegistry(aws_client("sagemaker", self.settings), self.settings.stage)

    def deployer(self, ports: Ports, topology: Topology) -> Deployer:
        s = self.settings
        prefix = family_head(s.stage)

        def lambda_deployer() -> Deployer:
            from shared.adapters.aws import aws_client
            from shared.adapters.codedeploy import LambdaCodeDeployDeployer, LambdaServingConfig

            return LambdaCodeDeployDeployer(
                aws_client("lambda", s),
                aws_client("codedeploy", s),
                LambdaServingConfig(name_prefix=prefix),
                cloudwatch=aws_client("cloudwatch", s),
            )

        def endpoint_deployer() -> Deployer:
            from shared.adapters.aws import aws_client
            from shared.adapters.sagemaker_endpoint import (
                EndpointConfig,
                SageMakerEndpointDeployer,
            )

            if not (s.inference_image_uri and s.sagemaker_role_arn and s.kms_key_id):
                raise ConfigError(
                    "SageMaker endpoint serving is not configured",
                    hint="the stack sets DHOW_INFERENCE_IMAGE_URI, DHOW_SAGEMAKER_ROLE_ARN and "
                    "DHOW_KMS_KEY_ID; or set the spec's serving.target to lambda",
                )
            return SageMakerEndpointDeployer(
                aws_client("sagemaker", s),
                EndpointConfig(
                    name_prefix=prefix,
                    role_arn=s.sagemaker_role_arn,
                    image_uri=s.inference_image_uri,
                    kms_key_id=s.kms_key_id,
                    capture_bucket=topology.bucket("capture").name,
                    subnets=s.private_subnets,
                    security_groups=s.security_groups,
                ),
            )

        return SpecRoutedDeployer(lambda_deployer, endpoint_deployer, s.specs_dir)

    def drift_outputs(self, topology: Topology) -> tuple[MetricsSink, AlertChannel]:
        """CloudWatch and the alerts topic."""
        s = self.settings
        if not s.alerts_topic_arn:
            raise ConfigError(
                "the drift check does not know where to send alerts",
                hint="the stack sets DHOW_ALERTS_TOPIC_ARN to its alerts topic; locally "
                "`dhow local up` does",
            )
        from shared.adapters.aws import CloudWatchMetrics, SnsAlerts, aws_client

        return (
            CloudWatchMetrics(aws_client("cloudwatch", s)),
            SnsAlerts(aws_client("sns", s), s.alerts_topic_arn),
        )
