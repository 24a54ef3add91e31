"""The composition root: builds services with the adapters for the configured cloud.

Handlers and the CLI call these; nothing else picks adapters or creates clients.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shared.constants import AZURE_LOCATION, AZURE_STORAGE_ACCOUNT, CLOUD, ROUTER_PORT, STAGE
from shared.errors import ConfigError
from shared.identifiers import family_head, family_prefix
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
from shared.settings import Settings
from shared.topology import Topology, build_topology, claim_window_s

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.services.deploy import DeployService
    from shared.services.drift import DriftService
    from shared.services.ingest import IngestService
    from shared.services.register import RegisterService
    from shared.services.train_launch import TrainLaunchService
    from shared.services.validate import ValidateService


@dataclass(frozen=True)
class Ports:
    store: ObjectStore
    bus: EventBus
    lineage: LineageStore


def azure_table_name(name: str) -> str:
    """Azure table names are letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", name)


def build_ports(settings: Settings, topology: Topology | None = None) -> Ports:
    topo = topology or build_topology(settings.stage)
    if settings.cloud == "aws":
        from shared.adapters.aws import (
            DynamoLineageStore,
            EventBridgeBus,
            S3ObjectStore,
            aws_client,
        )

        return Ports(
            store=S3ObjectStore(aws_client("s3", settings)),
            bus=EventBridgeBus(aws_client("events", settings), topo.bus_name),
            lineage=DynamoLineageStore(
                aws_client("dynamodb", settings), topo.table("lineage").name
            ),
        )
    from shared.adapters.azure import (
        BlobObjectStore,
        LocalEventGrid,
        LocalEventGridBus,
        TableLineageStore,
        azure_clients,
    )

    clients = azure_clients(settings)
    return Ports(
        store=BlobObjectStore(clients.blobs),
        bus=_event_grid_bus(settings.azure_eventgrid_endpoint)
        if settings.azure_eventgrid_endpoint
        else LocalEventGridBus(LocalEventGrid(clients, topo)),
        lineage=TableLineageStore(
            clients.tables.get_table_client(azure_table_name(topo.table("lineage").name))
        ),
    )


def _event_grid_bus(endpoint: str) -> EventBus:
    """The stack's pipeline topic, reached with the function app's managed identity."""
    from azure.eventgrid import EventGridPublisherClient
    from azure.identity import DefaultAzureCredential

    from shared.adapters.azure import EventGridBus

    return EventGridBus(EventGridPublisherClient(endpoint, DefaultAzureCredential()))


def build_event_tap(settings: Settings) -> EventTap:
    """The queue that gets a copy of every pipeline event (`dhow upload --wait`)."""
    name = build_topology(settings.stage).queue("events").name
    if settings.cloud == "aws":
        from shared.adapters.aws import SqsEventTap, aws_client

        return SqsEventTap(aws_client("sqs", settings), name)
    from shared.adapters.azure import StorageQueueEventTap, azure_clients

    return StorageQueueEventTap(azure_clients(settings).queue(name))


def build_validation_jobs(settings: Settings) -> ValidationJobLauncher | None:
    """The managed job runner, where the stack configured one (never locally)."""
    if settings.cloud == "azure":
        return _azureml_validation_jobs(settings)
    if not (settings.processing_image_uri and settings.sagemaker_role_arn):
        return None
    from shared.adapters.aws import ProcessingJobConfig, SageMakerValidationJobs, aws_client

    env = {
        "DHOW_CLOUD": settings.cloud,
        "DHOW_STAGE": settings.stage,
        "AWS_REGION": settings.aws_region,
    }
    return SageMakerValidationJobs(
        aws_client("sagemaker", settings),
        ProcessingJobConfig(
            image_uri=settings.processing_image_uri,
            role_arn=settings.sagemaker_role_arn,
            name_prefix=family_head(settings.stage),
            kms_key_id=settings.kms_key_id,
            subnets=settings.private_subnets,
            security_groups=settings.security_groups,
            environment=tuple(sorted(env.items())),
        ),
    )


def _azureml_validation_jobs(settings: Settings) -> ValidationJobLauncher | None:
    if not (
        settings.azureml_workspace
        and settings.azureml_compute
        and settings.azureml_environment
        and settings.azureml_staging_datastore
    ):
        return None
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    from shared.adapters.azure_ml import (
        AzureMLJobConfig,
        AzureMLValidationJobs,
        validation_job_environment,
    )

    subscription, group, workspace = settings.azureml_workspace
    client = MLClient(DefaultAzureCredential(), subscription, group, workspace)
    return AzureMLValidationJobs(
        client.jobs,
        AzureMLJobConfig(
            compute=settings.azureml_compute,
            environment=settings.azureml_environment,
            staging_datastore=settings.azureml_staging_datastore,
            stage=settings.stage,
            environment_variables=validation_job_environment(settings),
        ),
    )


def build_validate_service(settings: Settings, ports: Ports | None = None) -> ValidateService:
    from shared.services.validate import ValidateService

    topo = build_topology(settings.stage)
    p = ports or build_ports(settings, topo)
    return ValidateService(
        p.store,
        p.bus,
        p.lineage,
        curated_container=topo.bucket("curated").name,
        quarantine_container=topo.bucket("quarantine").name,
        specs_dir=settings.specs_dir,
        inline_max_bytes=settings.validate_inline_max_bytes,
        chunk_rows=settings.validate_chunk_rows,
        claim_seconds=claim_window_s(topo, "validate", settings.cloud),
        jobs=build_validation_jobs(settings),
    )


def build_training_launcher(settings: Settings, ports: Ports, topo: Topology) -> TrainingLauncher:
    # Jobs are dhow-<stage>--...: the register rule (and the local platform's, and Event
    # Grid's on Azure) and IAM match that prefix, which no other stage's names start with.
    prefix = family_head(settings.stage)
    if settings.training_backend == "local":
        from shared.adapters.local_training import LocalTrainingLauncher

        return LocalTrainingLauncher(
            ports.store, topo.bucket("models").name, prefix, settings.to_env()
        )
    if settings.training_backend == "sagemaker":
        from shared.adapters.aws import aws_client
        from shared.adapters.sagemaker_training import (
            SageMakerTrainingLauncher,
            TrainingJobConfig,
            trainer_code_key,
        )

        if not (
            settings.training_image_uri
            and settings.sagemaker_role_arn
            and settings.kms_key_id
            and settings.private_subnets
        ):
            raise ConfigError(
                "SageMaker training is not configured",
                hint="the stack sets DHOW_TRAINING_IMAGE_URI, DHOW_SAGEMAKER_ROLE_ARN, "
                "DHOW_KMS_KEY_ID and DHOW_PRIVATE_SUBNETS; locally use `dhow local up`",
            )
        models = topo.bucket("models").name
        return SageMakerTrainingLauncher(
            aws_client("sagemaker", settings),
            aws_client("service-quotas", settings),
            TrainingJobConfig(
                image_uri=settings.training_image_uri,
                role_arn=settings.sagemaker_role_arn,
                name_prefix=prefix,
                output_s3_uri=f"s3://{models}/models",
                checkpoint_s3_uri=f"s3://{models}/checkpoints",
                # The stack uploads the trainer there (infra/aws/training.py), same key.
                code_s3_uri=f"s3://{models}/{trainer_code_key()}",
                kms_key_id=settings.kms_key_id,
                subnets=settings.private_subnets,
                security_groups=settings.security_groups,
                region=settings.aws_region,
            ),
        )
    return _azureml_training_launcher(settings, prefix, topo.bucket("models").name)


def _azureml_training_launcher(
    settings: Settings, prefix: str, models_container: str
) -> TrainingLauncher:
    workspace = settings.azureml_workspace
    compute, env = settings.azureml_gpu_compute, settings.azureml_train_environment
    curated, models = settings.azureml_curated_datastore, settings.azureml_models_datastore
    if not (workspace and compute and env and curated and models):
        raise ConfigError(
            "Azure ML training is not configured",
            hint="the stack sets the DHOW_AZUREML_* workspace, GPU compute, train environment "
            "and datastore variables; locally use `dhow local up`",
        )
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    from shared.adapters.azure_ml import AzureMLTrainingConfig, AzureMLTrainingLauncher

    client = MLClient(DefaultAzureCredential(), *workspace)
    return AzureMLTrainingLauncher(
        client.jobs,
        AzureMLTrainingConfig(
            compute=compute,
            environment=env,
            curated_datastore=curated,
            models_datastore=models,
            models_container=models_container,
            name_prefix=prefix,
        ),
    )


def build_train_launch_service(
    settings: Settings, ports: Ports | None = None
) -> TrainLaunchService:
    from shared.services.train_launch import TrainLaunchService

    topo = build_topology(settings.stage)
    p = ports or build_ports(settings, topo)
    backend: Literal["sagemaker", "azureml", "local"] = (
        "local"
        if settings.training_backend == "local"
        else "azureml"
        if settings.training_backend == "azureml"
        else "sagemaker"
    )
    return TrainLaunchService(
        build_training_launcher(settings, p, topo),
        p.bus,
        p.lineage,
        backend=backend,
        specs_dir=settings.specs_dir,
    )


def build_model_registry(settings: Settings, ports: Ports | None = None) -> ModelRegistry:
    """SageMaker Model Registry on AWS; on Azure, versions as rows of the lineage table."""
    if settings.cloud == "azure":
        from shared.adapters.lineage_registry import LineageModelRegistry

        return LineageModelRegistry((ports or build_ports(settings)).lineage)
    from shared.adapters.aws import aws_client
    from shared.adapters.sagemaker_registry import SageMakerModelRegistry

    return SageMakerModelRegistry(aws_client("sagemaker", settings), settings.stage)


def build_register_service(settings: Settings, ports: Ports | None = None) -> RegisterService:
    from shared.services.register import RegisterService

    p = ports or build_ports(settings)
    return RegisterService(
        p.store,
        p.bus,
        p.lineage,
        build_model_registry(settings, p),
        specs_dir=settings.specs_dir,
        claim_seconds=claim_window_s(build_topology(settings.stage), "register", settings.cloud),
    )


def build_ingest_service(settings: Settings, ports: Ports | None = None) -> IngestService:
    from shared.services.ingest import IngestService

    topo = build_topology(settings.stage)
    p = ports or build_ports(settings, topo)
    return IngestService(
        p.store,
        p.bus,
        p.lineage,
        staging_container=topo.bucket("staging").name,
        max_upload_bytes=settings.max_upload_bytes,
        claim_seconds=claim_window_s(topo, "ingest", settings.cloud),
    )


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


def serve_prefix(settings: Settings) -> str:
    """Serve functions, deployment groups and endpoints are ``<this><dataset>``
    (``dhow-<stage>--serve-``: codedeploy.serve_function_name of the ``family_head``)."""
    return f"{family_prefix(settings.stage)}serve-"


def build_deployer(settings: Settings, ports: Ports) -> Deployer:
    if settings.cloud == "azure":
        return _azure_deployer(settings, ports)
    if settings.serving_backend == "local":
        from shared.adapters.local_serving import LocalRouterDeployer

        return LocalRouterDeployer(ports.lineage)
    prefix = family_head(settings.stage)

    def lambda_deployer() -> Deployer:
        from shared.adapters.aws import aws_client
        from shared.adapters.codedeploy import LambdaCodeDeployDeployer, LambdaServingConfig

        return LambdaCodeDeployDeployer(
            aws_client("lambda", settings),
            aws_client("codedeploy", settings),
            LambdaServingConfig(name_prefix=prefix),
            cloudwatch=aws_client("cloudwatch", settings),
        )

    def endpoint_deployer() -> Deployer:
        from shared.adapters.aws import aws_client
        from shared.adapters.sagemaker_endpoint import EndpointConfig, SageMakerEndpointDeployer

        if not (
            settings.inference_image_uri and settings.sagemaker_role_arn and settings.kms_key_id
        ):
            raise ConfigError(
                "SageMaker endpoint serving is not configured",
                hint="the stack sets DHOW_INFERENCE_IMAGE_URI, DHOW_SAGEMAKER_ROLE_ARN and "
                "DHOW_KMS_KEY_ID; or set the spec's serving.target to lambda",
            )
        return SageMakerEndpointDeployer(
            aws_client("sagemaker", settings),
            EndpointConfig(
                name_prefix=prefix,
                role_arn=settings.sagemaker_role_arn,
                image_uri=settings.inference_image_uri,
                kms_key_id=settings.kms_key_id,
                capture_bucket=build_topology(settings.stage).bucket("capture").name,
                subnets=settings.private_subnets,
                security_groups=settings.security_groups,
            ),
        )

    return SpecRoutedDeployer(lambda_deployer, endpoint_deployer, settings.specs_dir)


def _azure_deployer(settings: Settings, ports: Ports) -> Deployer:
    """The rollout the deploy function drives (``shared.adapters.azure_serving``): in the
    cloud on the dataset's Azure ML online endpoint, judged by Azure Monitor; on the local
    platform on the local router's row, judged by its counts. The same deployer, the same
    checks on the same deploy queue."""
    from shared.adapters.azure import azure_clients
    from shared.adapters.azure_serving import (
        AzureMonitorEndpointMetrics,
        CandidateMetrics,
        OnlineEndpointTraffic,
        QueueCheckTimer,
        RouterMetrics,
        RouterTraffic,
        SteppedRolloutDeployer,
        TrafficSplit,
        endpoint_name,
    )

    timer = QueueCheckTimer(
        azure_clients(settings).queue(build_topology(settings.stage).queue("deploy").name)
    )
    traffic: TrafficSplit
    metrics: CandidateMetrics
    if settings.serving_backend == "local":
        traffic, metrics = RouterTraffic(ports.lineage), RouterMetrics(_router_get)
        minute = settings.local_minute_seconds
    else:
        workspace, env = settings.azureml_workspace, settings.azureml_serve_environment
        size = settings.azureml_serving_instance_type
        if not (workspace and env and size and settings.azure_storage_account):
            raise ConfigError(
                "Azure ML online endpoint serving is not configured",
                hint="the stack sets the DHOW_AZUREML_* workspace, serve environment and "
                "serving instance type variables; locally use `dhow local up --cloud azure`",
            )
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential

        from shared.adapters.azure_ml import staged_code

        credential = DefaultAzureCredential()
        subscription, group, name = workspace
        traffic = OnlineEndpointTraffic(
            MLClient(credential, subscription, group, name),
            stage=settings.stage,
            environment=env,
            instance_type=size,
            # The jobs' staged copy of ``shared`` (what score_online imports), not the
            # app's root: azure-ai-ml uploads a code folder whole (fact
            # azure.ml.code_upload_ignore), and wwwroot holds .python_packages.
            code_dir=staged_code(),
            scoring_script="shared/jobs/score_online.py",
            # What score_online's serve app builds its ports from: the data account (as
            # the endpoint's identity) in the pinned location.
            environment_variables={
                CLOUD: "azure",
                STAGE: settings.stage,
                AZURE_LOCATION: settings.azure_location,
                AZURE_STORAGE_ACCOUNT: settings.azure_storage_account,
            },
        )

        def resource(dataset: str) -> str:
            return (
                f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{name}/onlineEndpoints/"
                f"{endpoint_name(settings.stage, dataset)}"
            )

        metrics = AzureMonitorEndpointMetrics(resource, _arm_get(credential))
        minute = 60.0
    return SteppedRolloutDeployer(
        ports.lineage,
        traffic,
        metrics,
        timer,
        alarm_prefix=serve_prefix(settings),
        minute_s=minute,
    )


def _router_get(path: str) -> dict[str, object]:
    """A JSON GET to the local router (``DHOW_ROUTER_PORT``, 4570 by default)."""
    import json
    import os
    import urllib.request

    port = os.environ.get(ROUTER_PORT, "4570")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        data: dict[str, object] = json.loads(r.read())
    return data


def _arm_get(credential: object) -> Callable[[str, Mapping[str, str]], Mapping[str, object]]:
    """A GET to Azure Resource Manager with the identity's token, JSON back."""
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
    from azure.core.rest import HttpRequest

    client: PipelineClient[HttpRequest, object] = PipelineClient(
        "https://management.azure.com",
        policies=[
            RetryPolicy(),
            BearerTokenCredentialPolicy(credential, "https://management.azure.com/.default"),  # type: ignore[arg-type]
        ],
    )

    def get(path: str, params: Mapping[str, str]) -> Mapping[str, object]:
        response = client.send_request(HttpRequest("GET", path, params=dict(params)))
        response.raise_for_status()  # type: ignore[attr-defined]
        data: Mapping[str, object] = response.json()  # type: ignore[attr-defined]
        return data

    return get


def build_deploy_service(settings: Settings, ports: Ports | None = None) -> DeployService:
    from shared.services.deploy import DeployService

    p = ports or build_ports(settings)
    return DeployService(
        build_deployer(settings, p),
        build_model_registry(settings, p),
        p.bus,
        p.lineage,
        specs_dir=settings.specs_dir,
        claim_seconds=claim_window_s(build_topology(settings.stage), "deploy", settings.cloud),
    )


def build_serve_app(settings: Settings, ports: Ports | None = None) -> FastAPI:
    """The serve function of ``DHOW_SERVE_DATASET``, serving ``DHOW_SERVE_MODEL_VERSION``
    (the champion when unset). The model loads on first use, once per warm container."""
    from shared.capture import InferenceCapture
    from shared.serve_app import model_app
    from shared.specs import load_spec

    if not settings.serve_dataset:
        raise ConfigError(
            "the serve function does not know its dataset",
            hint="the stack sets DHOW_SERVE_DATASET on each dataset's serve function",
        )
    dataset = settings.serve_dataset
    topo = build_topology(settings.stage)
    p = ports or build_ports(settings, topo)
    spec = load_spec(dataset, settings.specs_dir)
    capture = InferenceCapture.for_spec(p.store, topo.bucket("capture").name, spec)
    return model_app(
        spec, p.store, build_model_registry(settings, p), settings.serve_model_version, capture
    )


def build_drift_outputs(settings: Settings) -> tuple[MetricsSink, AlertChannel]:
    """Where the drift check's figures and alerts go: CloudWatch and the alerts topic on
    AWS; on Azure, log records (Application Insights) and the alerts queue."""
    if settings.cloud == "azure":
        from shared.adapters.azure import LoggedMetrics, QueueAlerts, azure_clients

        alerts = build_topology(settings.stage).topic("alerts").name
        return LoggedMetrics(), QueueAlerts(azure_clients(settings).queue(alerts))
    if not settings.alerts_topic_arn:
        raise ConfigError(
            "the drift check does not know where to send alerts",
            hint="the stack sets DHOW_ALERTS_TOPIC_ARN to its alerts topic; locally "
            "`dhow local up` does",
        )
    from shared.adapters.aws import CloudWatchMetrics, SnsAlerts, aws_client

    return (
        CloudWatchMetrics(aws_client("cloudwatch", settings)),
        SnsAlerts(aws_client("sns", settings), settings.alerts_topic_arn),
    )


def build_drift_service(settings: Settings, ports: Ports | None = None) -> DriftService:
    from shared.services.drift import DriftService

    topo = build_topology(settings.stage)
    p = ports or build_ports(settings, topo)
    metrics, alerts = build_drift_outputs(settings)
    return DriftService(
        p.store,
        p.bus,
        p.lineage,
        build_model_registry(settings, p),
        metrics,
        alerts,
        capture_container=topo.bucket("capture").name,
        reports_container=topo.bucket("reports").name,
        specs_dir=settings.specs_dir,
    )
