"""The Azure kit: Blob and Table storage, Event Grid, Storage queues, Azure ML (jobs,
online endpoints), Azure Monitor."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from shared.clouds import CloudKit, Ports, TrainingBackend
from shared.constants import (
    AZURE_EVENTGRID_ENDPOINT,
    AZURE_LOCATION,
    AZURE_STORAGE_ACCOUNT,
    CLOUD,
    STAGE,
)
from shared.errors import ConfigError
from shared.identifiers import family_head, serve_prefix
from shared.ports import (
    AlertChannel,
    Deployer,
    EventBus,
    EventTap,
    LineageStore,
    MetricsSink,
    ModelRegistry,
    ObjectStore,
    TrainingLauncher,
    ValidationJobLauncher,
)
from shared.settings import Cloud, Settings
from shared.topology import Topology

if TYPE_CHECKING:
    from shared.adapters.azure import AzureClients
    from shared.adapters.azure_serving import CandidateMetrics, TrafficSplit


def azure_table_name(name: str) -> str:
    """Azure table names are letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", name)


class AzureKit(CloudKit):
    """Every port on Azure, from the settings the stack gives the function app."""

    cloud: ClassVar[Cloud] = "azure"
    training_backend: ClassVar[TrainingBackend] = "azureml"

    def caller_principal(self, client: Any | None = None) -> str:
        """The Entra object id (and name) the caller's token carries (``client``: a
        credential)."""
        from shared.adapters.azure_identity import entra_principal
        from shared.audit import ENTRA_PREFIX

        return entra_principal(client, ENTRA_PREFIX)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._clients: AzureClients | None = None

    def clients(self) -> AzureClients:
        """The storage clients, built once per kit (one credential, one set of pools)."""
        if self._clients is None:
            from shared.adapters.azure import azure_clients

            self._clients = azure_clients(self.settings)
        return self._clients

    def store(self) -> ObjectStore:
        from shared.adapters.azure import BlobObjectStore

        return BlobObjectStore(self.clients().blobs)

    def lineage(self, topology: Topology) -> LineageStore:
        from shared.adapters.azure import TableLineageStore

        return TableLineageStore(
            self.clients().tables.get_table_client(azure_table_name(topology.table("lineage").name))
        )

    def bus(self, topology: Topology) -> EventBus:
        """The stack's pipeline topic, reached with the function app's managed identity.
        Without its endpoint this is an error: events must never go anywhere else."""
        endpoint = self.settings.azure_eventgrid_endpoint
        if not endpoint:
            raise ConfigError(
                "the pipeline's Event Grid topic is not configured",
                hint=f"the stack sets {AZURE_EVENTGRID_ENDPOINT} to its pipeline topic's "
                "endpoint; locally `dhow local up --cloud azure` runs the local kit, which "
                "plays Event Grid itself",
            )
        from azure.eventgrid import EventGridPublisherClient
        from azure.identity import DefaultAzureCredential

        from shared.adapters.azure import EventGridBus

        return EventGridBus(EventGridPublisherClient(endpoint, DefaultAzureCredential()))

    def event_tap(self, topology: Topology) -> EventTap:
        from shared.adapters.azure import StorageQueueEventTap

        return StorageQueueEventTap(self.clients().queue(topology.queue("events").name))

    def validation_jobs(self) -> ValidationJobLauncher | None:
        s = self.settings
        if not (
            s.azureml_workspace
            and s.azureml_compute
            and s.azureml_environment
            and s.azureml_staging_datastore
        ):
            return None
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential

        from shared.adapters.azure_ml import (
            AzureMLJobConfig,
            AzureMLValidationJobs,
            validation_job_environment,
        )

        subscription, group, workspace = s.azureml_workspace
        client = MLClient(DefaultAzureCredential(), subscription, group, workspace)
        return AzureMLValidationJobs(
            client.jobs,
            AzureMLJobConfig(
                compute=s.azureml_compute,
                environment=s.azureml_environment,
                staging_datastore=s.azureml_staging_datastore,
                stage=s.stage,
                environment_variables=validation_job_environment(s),
            ),
        )

    def training_launcher(self, ports: Ports, topology: Topology) -> TrainingLauncher:
        s = self.settings
        workspace = s.azureml_workspace
        compute, env = s.azureml_gpu_compute, s.azureml_train_environment
        curated, models = s.azureml_curated_datastore, s.azureml_models_datastore
        if not (workspace and compute and env and curated and models):
            raise ConfigError(
                "Azure ML training is not configured",
                hint="the stack sets the DHOW_AZUREML_* workspace, GPU compute, train "
                "environment and datastore variables; locally use `dhow local up`",
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
                models_container=topology.bucket("models").name,
                # dhow-<stage>--...: Event Grid's run-status filter matches that prefix.
                name_prefix=family_head(s.stage),
            ),
        )

    def model_registry(self, ports: Ports) -> ModelRegistry:
        """Model versions as rows of the lineage table."""
        from shared.adapters.lineage_registry import LineageModelRegistry

        return LineageModelRegistry(ports.lineage)

    def deployer(self, ports: Ports, topology: Topology) -> Deployer:
        """The rollout the deploy function drives (``shared.adapters.azure_serving``):
        checks on its own deploy queue; where traffic is set and the candidate judged
        is ``rollout_parts`` (the local kit swaps in the local router's)."""
        from shared.adapters.azure_serving import QueueCheckTimer, SteppedRolloutDeployer

        traffic, metrics, minute = self.rollout_parts(ports)
        timer = QueueCheckTimer(self.clients().queue(topology.queue("deploy").name))
        return SteppedRolloutDeployer(
            ports.lineage,
            traffic,
            metrics,
            timer,
            alarm_prefix=serve_prefix(self.settings.stage),
            minute_s=minute,
        )

    def rollout_parts(self, ports: Ports) -> tuple[TrafficSplit, CandidateMetrics, float]:
        """The dataset's Azure ML online endpoint, judged by Azure Monitor, a minute a
        period."""
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential

        from shared.adapters.azure_ml import staged_code
        from shared.adapters.azure_serving import (
            AzureMonitorEndpointMetrics,
            OnlineEndpointTraffic,
            endpoint_name,
        )

        s = self.settings
        workspace, env = s.azureml_workspace, s.azureml_serve_environment
        size = s.azureml_serving_instance_type
        if not (workspace and env and size and s.azure_storage_account):
            raise ConfigError(
                "Azure ML online endpoint serving is not configured",
                hint="the stack sets the DHOW_AZUREML_* workspace, serve environment and "
                "serving instance type variables; locally use `dhow local up --cloud azure`",
            )
        credential = DefaultAzureCredential()
        subscription, group, name = workspace
        traffic = OnlineEndpointTraffic(
            MLClient(credential, subscription, group, name),
            stage=s.stage,
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
                STAGE: s.stage,
                AZURE_LOCATION: s.azure_location,
                AZURE_STORAGE_ACCOUNT: s.azure_storage_account,
            },
        )

        def resource(dataset: str) -> str:
            return (
                f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{name}/onlineEndpoints/"
                f"{endpoint_name(s.stage, dataset)}"
            )

        return traffic, AzureMonitorEndpointMetrics(resource, _arm_get(credential)), 60.0

    def drift_outputs(self, topology: Topology) -> tuple[MetricsSink, AlertChannel]:
        """Log records (Application Insights) and the alerts queue."""
        from shared.adapters.azure import LoggedMetrics, QueueAlerts

        alerts = topology.topic("alerts").name
        return LoggedMetrics(), QueueAlerts(self.clients().queue(alerts))


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
