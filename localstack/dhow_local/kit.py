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
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dhow_local import platform as pf
from shared.clouds import CloudKit, Ports, TrainingBackend, kit_for, kit_name, register_kit
from shared.clouds.aws import AwsKit
from shared.clouds.azure import AzureKit
from shared.errors import ConfigError
from shared.events import ObjectRef
from shared.ports import AlertInbox, Deployer, EventBus, TrainingLauncher
from shared.settings import Cloud, Settings
from shared.topology import Topology, build_topology
from shared.triggers import CODEDEPLOY_STATE_CHANGE

if TYPE_CHECKING:
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

    from dhow_local.provision import Provisioned
    from dhow_local.runner import BackgroundThreads
    from shared.adapters.azure_serving import CandidateMetrics, TrafficSplit

KIT_NAMES: dict[Cloud, str] = {"aws": "local-aws", "azure": "local-azure"}
# `up` saves each process it starts at once, so `down` can stop it if a later step fails.
Track = Callable[[pf.ManagedProcess | None], None]


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

    # What `dhow local up` says the runner does, with {queues} the polled ones.
    RUNNER_NOTE: ClassVar[str]

    @classmethod
    def emulated(cls, base: Settings) -> Settings:
        """``base`` pointed at this kit's emulators (``control.local_settings``), with
        this kit named, so training and serving are played here; every other setting is
        kept."""
        return replace(
            base, cloud=cls.cloud, kit=KIT_NAMES[cls.cloud], **cls.emulator_settings(base)
        )

    @classmethod
    @abc.abstractmethod
    def emulator_settings(cls, base: Settings) -> dict[str, Any]:
        """The settings that point ``base`` at this kit's emulators."""

    @abc.abstractmethod
    def region(self) -> str:
        """The region the platform plays (what `dhow local up` reports)."""

    @classmethod
    @abc.abstractmethod
    def check_emulator_ports(cls, ours: Collection[int]) -> None:
        """Before ``up``: the emulators' ports are free, held by ``ours``, or answered by
        the emulator itself (``platform.check_ports``)."""

    @abc.abstractmethod
    def start_emulator(
        self, state: pf.PlatformState, home: Path, track: Track, progress: Callable[[str], Any]
    ) -> Provisioned:
        """Start the emulator (unless one answers), record its mode and endpoint in
        ``state`` and create the topology in it."""

    @classmethod
    @abc.abstractmethod
    def emulator_health(cls) -> dict[str, Any] | None:
        """What the emulator's health endpoint says, where it has one (`status`)."""

    @classmethod
    @abc.abstractmethod
    def ready(
        cls, health: dict[str, Any] | None, procs: list[dict[str, Any]], state: pf.PlatformState
    ) -> bool:
        """Whether the platform `state` records is up: its emulator and every process."""

    @abc.abstractmethod
    def alert_inbox(self, topic_name: str) -> AlertInbox:
        """Where the platform keeps what the alerts topic ``topic_name`` delivered
        (`dhow local alerts`)."""


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

    RUNNER_NOTE: ClassVar[str] = "runner polling {queues}"

    @classmethod
    def emulator_settings(cls, base: Settings) -> dict[str, Any]:
        from dhow_local.provision import LOCAL_ACCOUNT

        alerts = build_topology(base.stage).topic("alerts").name
        return {
            "alerts_topic_arn": f"arn:aws:sns:{base.aws_region}:{LOCAL_ACCOUNT}:{alerts}",
            "aws_endpoint_url": pf.LOCALSTACK_URL,
            "aws_dynamodb_endpoint_url": pf.DYNAMODB_URL,
            # moto's server on the same port also serves the SageMaker Model Registry.
            "aws_sagemaker_endpoint_url": pf.DYNAMODB_URL,
        }

    def region(self) -> str:
        return self.settings.aws_region

    @classmethod
    def check_emulator_ports(cls, ours: Collection[int]) -> None:
        if pf.localstack_health() is None:
            pf.require_port(pf.LOCALSTACK_PORT, "LocalStack", "DHOW_LOCALSTACK_PORT", ours)
        if not pf.moto_answers():
            pf.require_port(pf.DYNAMODB_PORT, "DynamoDB (moto)", "DHOW_DYNAMODB_PORT", ours)

    def start_emulator(
        self, state: pf.PlatformState, home: Path, track: Track, progress: Callable[[str], Any]
    ) -> Provisioned:
        from dhow_local.provision import provision_aws

        progress("starting LocalStack ...")
        proc = pf.start_localstack(home)
        state.mode = "host" if proc else ("docker" if pf.docker_engine_answers() else "external")
        state.endpoint = pf.LOCALSTACK_URL
        track(proc)
        track(pf.start_dynamodb(home))
        progress(f"LocalStack ready at {pf.LOCALSTACK_URL} ({state.mode}); creating topology")
        return provision_aws(self.settings, build_topology(self.settings.stage))

    @classmethod
    def emulator_health(cls) -> dict[str, Any] | None:
        return pf.localstack_health()

    @classmethod
    def ready(
        cls, health: dict[str, Any] | None, procs: list[dict[str, Any]], state: pf.PlatformState
    ) -> bool:
        return (
            health is not None and all(p["answering"] for p in procs) and bool(procs or state.mode)
        )

    def alert_inbox(self, topic_name: str) -> AlertInbox:
        """The SQS queue subscribed to the SNS topic (``provision.inbox_queue_name``)."""
        from dhow_local.provision import inbox_queue_name
        from shared.adapters.aws import SqsAlertInbox, aws_client

        return SqsAlertInbox(aws_client("sqs", self.settings), inbox_queue_name(topic_name))


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

    RUNNER_NOTE: ClassVar[str] = (
        "runner (Functions host) polling {queues}; watching the raw container for uploads"
    )

    @classmethod
    def emulator_settings(cls, base: Settings) -> dict[str, Any]:
        return {
            "azure_storage_connection_string": pf.AZURITE_CONNECTION_STRING,
            # No Event Grid locally: the local kit's LocalEventGrid plays it.
            "azure_eventgrid_endpoint": None,
        }

    def region(self) -> str:
        return self.settings.azure_location

    @classmethod
    def check_emulator_ports(cls, ours: Collection[int]) -> None:
        if not pf.azurite_up():
            for service, port in pf.AZURITE_PORTS.items():
                env_var = f"DHOW_AZURITE_{service.upper()}_PORT"
                pf.require_port(port, f"Azurite {service} service", env_var, ours)

    def start_emulator(
        self, state: pf.PlatformState, home: Path, track: Track, progress: Callable[[str], Any]
    ) -> Provisioned:
        from dhow_local.provision import provision_azure

        progress("starting Azurite ...")
        proc = pf.start_azurite(home)
        state.mode = "host" if proc else "external"
        state.endpoint = pf.AZURITE_CONNECTION_STRING
        track(proc)
        return provision_azure(self.settings, build_topology(self.settings.stage))

    @classmethod
    def emulator_health(cls) -> dict[str, Any] | None:
        return None  # Azurite has no health endpoint; `ready` asks it directly

    @classmethod
    def ready(
        cls, health: dict[str, Any] | None, procs: list[dict[str, Any]], state: pf.PlatformState
    ) -> bool:
        return pf.azurite_up() and all(p["answering"] for p in procs)

    def alert_inbox(self, topic_name: str) -> AlertInbox:
        """The alerts queue itself (Azure keeps alerts in a queue of the region)."""
        from shared.adapters.azure import QueueAlertInbox

        return QueueAlertInbox(self.clients().queue(topic_name))


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


# The local platform's kit of each cloud, for what runs before any settings name a kit
# (`dhow local up --cloud`, the state file `status` and the CLI read).
LOCAL_KITS: dict[str, type[LocalKit]] = {"aws": LocalAwsKit, "azure": LocalAzureKit}


def recorded_kit(cloud: str) -> type[LocalKit]:
    """The kit of the platform a state file records as ``cloud``; a name of no cloud is
    read as Azure's, as `status` and the CLI always read a state that was not AWS's."""
    return LOCAL_KITS.get(cloud, LocalAzureKit)


register_kit(KIT_NAMES["aws"], LocalAwsKit)
register_kit(KIT_NAMES["azure"], LocalAzureKit)
