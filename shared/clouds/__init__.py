"""Each cloud is a kit: one class that builds every port the services need there.

Kits are registered by name, as pandera registers its backends
(``BaseSchema.BACKEND_REGISTRY``, ``get_backend``) and mangum its handler classes:
``register_kit("aws", AwsKit)``. ``kit_for(settings)`` picks the one ``DHOW_KIT`` names,
the cloud's own (``aws``, ``azure``) when it is unset. The local platform registers its
kits (``local-aws``, ``local-azure``) when ``dhow_local`` is imported, and sets
``DHOW_KIT`` in every process it starts; nothing under ``shared/`` knows them.

This package is the one place that decides anything by cloud: services, entry points,
the CLI and the local platform ask their kit, or look the cloud's name up in a table
keyed by it (``shared.topology.REDELIVERY_SCHEDULES``, ``dhow_local.kit.LOCAL_KITS``);
tests/unit/test_kits.py holds that no other code compares a cloud.

To add a cloud: a module here with a ``CloudKit`` subclass and one ``register_kit``
line, its adapters under ``shared/adapters/``, its trigger shapes in
``shared/triggers/<cloud>.py``, its stack under ``infra/``, its entry points under
``functions/``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from shared.constants import KIT
from shared.errors import ConfigError
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
    from shared.events import PipelineEvent

TrainingBackend = Literal["sagemaker", "azureml", "local"]


@dataclass(frozen=True)
class Ports:
    """The three ports every service is built from."""

    store: ObjectStore
    bus: EventBus
    lineage: LineageStore


class NoPublishing(EventBus):
    """The bus of a process that publishes no pipeline event (a managed job, the online
    endpoint's scorer): it is given only storage settings, so no bus can be built, and a
    publish would be a bug."""

    def publish(self, event: PipelineEvent) -> None:
        raise ConfigError(
            f"this process was built without an event bus and cannot publish {event.event_type}",
            hint="build its ports with publishing=True and the stack's bus settings",
        )


class CloudKit(abc.ABC):
    """Builds every port of one cloud from the settings; one method per port.

    Adapters are imported inside the methods: a Lambda bundle carries no Azure SDK,
    and importing a kit must not need one.
    """

    cloud: ClassVar[Cloud]
    training_backend: ClassVar[TrainingBackend]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def store(self) -> ObjectStore:
        """The object store of the stage's buckets (containers)."""

    @abc.abstractmethod
    def lineage(self, topology: Topology) -> LineageStore:
        """The lineage table."""

    @abc.abstractmethod
    def bus(self, topology: Topology) -> EventBus:
        """The pipeline's event bus; a missing setting is a ``ConfigError``."""

    @abc.abstractmethod
    def event_tap(self, topology: Topology) -> EventTap:
        """The queue that gets a copy of every pipeline event (``dhow upload --wait``)."""

    @abc.abstractmethod
    def validation_jobs(self) -> ValidationJobLauncher | None:
        """The managed job runner for files too large to validate inline, where the
        stack configured one; None otherwise."""

    @abc.abstractmethod
    def training_launcher(self, ports: Ports, topology: Topology) -> TrainingLauncher:
        """Where training jobs run; a missing setting is a ``ConfigError``."""

    @abc.abstractmethod
    def model_registry(self, ports: Ports) -> ModelRegistry:
        """Where model versions and the champion are kept."""

    @abc.abstractmethod
    def deployer(self, ports: Ports, topology: Topology) -> Deployer:
        """What moves traffic to a new model version and rolls it back."""

    @abc.abstractmethod
    def drift_outputs(self, topology: Topology) -> tuple[MetricsSink, AlertChannel]:
        """Where the drift check's figures and alerts go."""

    # Not a port (so not abstract, and not in test_kits' port list): every kit overrides
    # it all the same, which test_kits holds.
    def caller_principal(self, client: Any | None = None) -> str:
        """Who runs this command, as the cloud authenticated them, for the audit trail;
        ``client`` stands in for the cloud's identity client (a test's)."""
        raise NotImplementedError(f"{type(self).__name__} says nobody's principal")


KITS: dict[str, type[CloudKit]] = {}


def register_kit(name: str, kit: type[CloudKit]) -> None:
    """Make ``kit`` the one ``DHOW_KIT=<name>`` picks (a later registration replaces)."""
    KITS[name] = kit


def kit_name(settings: Settings) -> str:
    """The kit the settings ask for: ``DHOW_KIT``, else the cloud's own."""
    return settings.kit or settings.cloud


def kit_for(settings: Settings) -> CloudKit:
    """The registered kit that ``settings`` name, built with them."""
    name = kit_name(settings)
    kit = KITS.get(name)
    if kit is None:
        raise ConfigError(
            f"no cloud kit is registered as {name!r} (known: {', '.join(sorted(KITS))})",
            hint=f"set {KIT} to one of them; the local platform's kits (local-aws, "
            "local-azure) are registered by importing dhow_local, which every process "
            "`dhow local up` starts does",
        )
    return kit(settings)


# The built-in clouds register themselves; their modules import no SDK at import time.
from shared.clouds import aws as _aws  # noqa: E402
from shared.clouds import azure as _azure  # noqa: E402

register_kit("aws", _aws.AwsKit)
register_kit("azure", _azure.AzureKit)
