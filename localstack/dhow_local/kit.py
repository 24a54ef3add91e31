"""The local platform's kits, ``local-aws`` and ``local-azure``: the cloud's kit with the
emulators swapped in where LocalStack or Azurite has no service to offer.

- training: a process on this machine (``dhow_local.training``) instead of SageMaker or
  Azure ML, announcing its end as that service would;
- serving: the local router's row (``dhow_local.serving``) instead of the Lambda alias and
  CodeDeploy, or instead of the online endpoint and Azure Monitor;
- Azure's pipeline events: ``dhow_local.event_grid`` instead of an Event Grid topic.

Registered when ``dhow_local`` is imported (``dhow_local/__init__.py``), which every
process the platform starts does; ``control.local_settings`` sets ``DHOW_KIT`` to them.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shared.clouds import CloudKit, Ports, TrainingBackend, kit_for, kit_name, register_kit
from shared.clouds.aws import AwsKit
from shared.clouds.azure import AzureKit
from shared.errors import ConfigError
from shared.events import ObjectRef
from shared.ports import Deployer, EventBus, TrainingLauncher
from shared.settings import Cloud, Settings
from shared.topology import Topology, build_topology
from shared.triggers import CODEDEPLOY_STATE_CHANGE

if TYPE_CHECKING:
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

    from dhow_local.runner import BackgroundThreads
    from shared.adapters.azure_serving import CandidateMetrics, TrafficSplit

KIT_NAMES: dict[Cloud, str] = {"aws": "local-aws", "azure": "local-azure"}


class LocalKit(CloudKit):
    """What the local platform plays in place of the cloud's managed services."""

    training_backend: ClassVar[TrainingBackend] = "local"

    def training_launcher(self, ports: Ports, topology: Topology) -> TrainingLauncher:
        from dhow_local.training import LocalTrainingLauncher
        from shared.identifiers import family_head

        return LocalTrainingLauncher(
            ports.store,
            topology.bucket("models").name,
            family_head(self.settings.stage),
            self.settings.to_env(),
        )

    @abc.abstractmethod
    def publish_training_ended(self, detail: dict[str, Any], output: ObjectRef) -> None:
        """Announce a local training job's end (SageMaker's state-change ``detail``) as
        the cloud's training service does."""

    @abc.abstractmethod
    def publish_deployment_ended(self, detail: dict[str, Any]) -> None:
        """Announce the end of a rollout the router played (CodeDeploy's ``detail``)
        where the deploy function reads it."""

    @abc.abstractmethod
    def runner(self, topology: Topology, home: Path) -> BackgroundThreads:
        """The process that plays the functions' host: Lambda's event source mappings
        and schedules (AWS), or the Functions host's triggers (Azure)."""


class LocalAwsKit(LocalKit, AwsKit):
    """AWS on LocalStack and moto."""

    def deployer(self, ports: Ports, topology: Topology) -> Deployer:
        from dhow_local.serving import LocalRouterDeployer

        return LocalRouterDeployer(ports.lineage)

    def _put_default_bus(
        self, source: str, detail_type: str, detail: dict[str, Any], resources: list[str]
    ) -> None:
        from shared.adapters.aws import aws_client

        entry: PutEventsRequestEntryTypeDef = {
            "Source": source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail),
            "EventBusName": "default",
        }
        if resources:
            entry["Resources"] = resources
        aws_client("events", self.settings).put_events(Entries=[entry])

    def publish_training_ended(self, detail: dict[str, Any], output: ObjectRef) -> None:
        """SageMaker's state change, on the default bus."""
        self._put_default_bus(
            "aws.sagemaker",
            "SageMaker Training Job State Change",
            detail,
            [detail["TrainingJobArn"]],
        )

    def publish_deployment_ended(self, detail: dict[str, Any]) -> None:
        self._put_default_bus(
            "aws.codedeploy",
            CODEDEPLOY_STATE_CHANGE,
            {**detail, "region": self.settings.aws_region},
            [],
        )

    def runner(self, topology: Topology, home: Path) -> BackgroundThreads:
        from dhow_local.runner import Runner

        return Runner(self.settings, topology)


class LocalAzureKit(LocalKit, AzureKit):
    """Azure on Azurite: Event Grid and the online endpoints are played here."""

    def bus(self, topology: Topology) -> EventBus:
        from dhow_local.event_grid import LocalEventGrid, LocalEventGridBus

        return LocalEventGridBus(LocalEventGrid(self.clients(), topology))

    def rollout_parts(self, ports: Ports) -> tuple[TrafficSplit, CandidateMetrics, float]:
        """The router's row and its counts, a schedule minute a period: the deploy
        function steps and judges the rollout itself, as in the cloud."""
        from dhow_local.serving import RouterMetrics, RouterTraffic, router_get

        return (
            RouterTraffic(ports.lineage),
            RouterMetrics(router_get),
            self.settings.local_minute_seconds,
        )

    def _grid_system_event(self, rule: str, event: dict[str, Any]) -> None:
        from dhow_local.event_grid import LocalEventGrid

        LocalEventGrid(self.clients(), build_topology(self.settings.stage)).deliver_system_event(
            rule, event
        )

    def publish_training_ended(self, detail: dict[str, Any], output: ObjectRef) -> None:
        """Azure ML's ``RunStatusChanged`` in the Event Grid schema, to the queue the
        stack's run-status subscription feeds."""
        from dhow_local.training_job import azureml_run_status_changed

        self._grid_system_event(
            "training_job_ended", azureml_run_status_changed(self.settings, detail, output)
        )

    def publish_deployment_ended(self, detail: dict[str, Any]) -> None:
        """Straight to the queue the deploy function reads (what the serving rule
        targets), in CodeDeploy's shape: the router plays CodeDeploy on both clouds."""
        self._grid_system_event(
            "serving_deployment_ended",
            {
                "source": "aws.codedeploy",
                "detail-type": CODEDEPLOY_STATE_CHANGE,
                "detail": {**detail, "region": self.settings.azure_location},
            },
        )

    def runner(self, topology: Topology, home: Path) -> BackgroundThreads:
        from dhow_local.azure_runner import AzureRunner

        return AzureRunner(self.settings, topology, home)


def local_kit(settings: Settings) -> LocalKit:
    """The settings' kit, which must be one of the local platform's."""
    kit = kit_for(settings)
    if not isinstance(kit, LocalKit):
        raise ConfigError(
            f"the kit {kit_name(settings)!r} is not a local platform's kit",
            hint=f"the local platform's processes run with DHOW_KIT set to one of "
            f"{', '.join(KIT_NAMES.values())} (dhow_local.control.local_settings does that)",
        )
    return kit


register_kit(KIT_NAMES["aws"], LocalAwsKit)
register_kit(KIT_NAMES["azure"], LocalAzureKit)
