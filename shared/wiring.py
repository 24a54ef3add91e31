"""The composition root: builds each service from the ports of the settings' kit.

Handlers and the CLI call these; nothing else picks adapters or creates clients. What
differs by cloud is the kit's (``shared.clouds``): nothing here branches on the cloud.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared import identifiers

# Ports and azure_table_name are imported from here by the functions and the stack.
from shared.clouds import NoPublishing, kit_for
from shared.clouds import Ports as Ports
from shared.clouds.azure import azure_table_name as azure_table_name
from shared.errors import ConfigError
from shared.ports import (
    AlertChannel,
    Deployer,
    EventTap,
    MetricsSink,
    ModelRegistry,
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
    from shared.specs import SpecCatalog


def build_ports(
    settings: Settings, topology: Topology | None = None, *, publishing: bool = True
) -> Ports:
    """The store, bus and lineage of the settings' kit. ``publishing=False`` is for the
    processes that publish no event (a managed job, the online endpoint's scorer): they
    are given only storage settings, and their bus refuses to publish."""
    topo = topology or build_topology(settings.stage)
    kit = kit_for(settings)
    return Ports(
        store=kit.store(),
        bus=kit.bus(topo) if publishing else NoPublishing(),
        lineage=kit.lineage(topo),
    )


def build_event_tap(settings: Settings) -> EventTap:
    """The queue that gets a copy of every pipeline event (`dhow upload --wait`)."""
    return kit_for(settings).event_tap(build_topology(settings.stage))


def build_validation_jobs(settings: Settings) -> ValidationJobLauncher | None:
    """The managed job runner, where the stack configured one (never locally)."""
    return kit_for(settings).validation_jobs()


def build_spec_catalog(settings: Settings, ports: Ports) -> SpecCatalog:
    """The stage's specs by name and version: those deployed with it, and the ones
    validate pinned beside the models (shared.specs.SpecCatalog)."""
    from shared.specs import SpecCatalog

    return SpecCatalog(
        settings.specs_dir,
        store=ports.store,
        container=build_topology(settings.stage).bucket("models").name,
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
        specs=build_spec_catalog(settings, p),
        inline_max_bytes=settings.validate_inline_max_bytes,
        chunk_rows=settings.validate_chunk_rows,
        claim_seconds=claim_window_s(topo, "validate", settings.cloud),
        jobs=build_validation_jobs(settings),
    )


def build_training_launcher(settings: Settings, ports: Ports, topo: Topology) -> TrainingLauncher:
    return kit_for(settings).training_launcher(ports, topo)


def build_train_launch_service(
    settings: Settings, ports: Ports | None = None
) -> TrainLaunchService:
    from shared.services.train_launch import TrainLaunchService

    topo = build_topology(settings.stage)
    p = ports or build_ports(settings, topo)
    kit = kit_for(settings)
    return TrainLaunchService(
        kit.training_launcher(p, topo),
        p.bus,
        p.lineage,
        backend=kit.training_backend,
        specs=build_spec_catalog(settings, p),
    )


def build_model_registry(settings: Settings, ports: Ports | None = None) -> ModelRegistry:
    """The kit's registry: SageMaker Model Registry on AWS; on Azure, versions as rows of
    the lineage table."""
    return kit_for(settings).model_registry(ports or build_ports(settings))


def build_register_service(settings: Settings, ports: Ports | None = None) -> RegisterService:
    from shared.services.register import RegisterService

    p = ports or build_ports(settings)
    return RegisterService(
        p.store,
        p.bus,
        p.lineage,
        build_model_registry(settings, p),
        specs=build_spec_catalog(settings, p),
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


def serve_prefix(settings: Settings) -> str:
    """Serve functions, deployment groups and endpoints are ``<this><dataset>``."""
    return identifiers.serve_prefix(settings.stage)


def build_deployer(settings: Settings, ports: Ports) -> Deployer:
    return kit_for(settings).deployer(ports, build_topology(settings.stage))


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
    return kit_for(settings).drift_outputs(build_topology(settings.stage))


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
