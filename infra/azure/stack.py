"""The Azure stack: a resource group in the pinned location and one component per concern
(infra/azure/<concern>.py), built from the same topology as the AWS stack and the local
platform. This module only wires them in order and says what ``__main__`` exports."""

from __future__ import annotations

import pulumi
import pulumi_azure_native as az

from infra.azure.app_package import package_path, require_package
from infra.azure.assignments import principal_of
from infra.azure.data_lake import DataLake, DataLakeArgs, storage_account
from infra.azure.events import EventWiring, EventWiringArgs, run_status_events
from infra.azure.functions import Functions, FunctionsArgs
from infra.azure.lineage import Lineage, LineageArgs
from infra.azure.monitoring import Monitoring, MonitoringArgs
from infra.azure.serving import Serving, ServingArgs, serve_environment_ref
from infra.azure.training import Training, TrainingArgs, environment_ref, grant_clusters
from infra.config import StackConfig
from shared import constants as c
from shared.stack_contract import shared_environment


def region(cfg: StackConfig) -> str:
    return cfg.location


def preflight(cfg: StackConfig) -> None:
    """The Function App's package must have been built by ``make azure-package``."""
    require_package(package_path(cfg))


def build(cfg: StackConfig) -> dict[str, pulumi.Input[object]]:
    """Create the Azure stack; returns what ``__main__`` exports."""
    provider = az.Provider("uae", location=cfg.location)
    opts = pulumi.ResourceOptions(providers=[provider])
    client = az.authorization.get_client_config_output(
        opts=pulumi.InvokeOutputOptions(provider=provider)
    )
    group = az.resources.ResourceGroup(
        "group",
        resource_group_name=cfg.name("rg"),
        location=cfg.location,
        tags=cfg.tags,
        opts=pulumi.ResourceOptions(provider=provider),
    )
    subscription = client.subscription_id
    lake = DataLake("data-lake", DataLakeArgs(cfg, group, client.tenant_id, subscription), opts)
    lineage = Lineage("lineage", LineageArgs(cfg, group, lake.account), opts)
    events = EventWiring("events", EventWiringArgs(cfg, group, lake, subscription), opts)
    monitoring = Monitoring("monitoring", MonitoringArgs(cfg, group), opts)
    # The workspace's own account (its system datastores), reached by identity.
    ml_storage = storage_account(
        "ml", cfg, group, subscription, pulumi.ResourceOptions(provider=provider)
    )
    training = Training(
        "training",
        TrainingArgs(cfg, group, ml_storage, lake.vault, monitoring.insights, lake, subscription),
        opts,
    )
    run_events = run_status_events(cfg, group, lake, events, training.workspace, subscription, opts)
    scopes = _scopes(lake, lineage, events, training, monitoring)
    # One online endpoint per dataset, whose traffic the deploy function steps.
    serving = Serving(
        "serving", ServingArgs(cfg, group, training.workspace, scopes, subscription), opts
    )
    # What the stack knows, by setting; the app gets the union of its functions' shares
    # of it (shared/stack_contract.py), so nothing unread goes in and nothing read is left out.
    offered: dict[str, pulumi.Input[str]] = {
        c.CLOUD: "azure",
        c.AZURE_STORAGE_ACCOUNT: lake.account.name,
        c.AZURE_EVENTGRID_ENDPOINT: events.topic.endpoint.apply(lambda e: e or ""),
        c.STAGE: cfg.stage,
        c.AZURE_LOCATION: cfg.location,
        c.AZUREML_SUBSCRIPTION_ID: subscription,
        c.AZUREML_RESOURCE_GROUP: group.name,
        c.AZUREML_WORKSPACE: training.workspace.name,
        c.AZUREML_COMPUTE: training.cpu.name,
        c.AZUREML_GPU_COMPUTE: training.gpu.name,
        c.AZUREML_ENVIRONMENT: environment_ref("validate"),
        c.AZUREML_TRAIN_ENVIRONMENT: environment_ref("train"),
        c.AZUREML_STAGING_DATASTORE: training.datastores["staging"].name,
        c.AZUREML_CURATED_DATASTORE: training.datastores["curated"].name,
        c.AZUREML_MODELS_DATASTORE: training.datastores["models"].name,
        c.AZUREML_SERVE_ENVIRONMENT: serve_environment_ref(),
        c.AZUREML_SERVING_INSTANCE_TYPE: cfg.azure_serving_instance_type,
    }
    settings = shared_environment("azure", [fn.logical for fn in cfg.topology.functions], offered)
    grant_clusters(cfg.topology, training, scopes, subscription, opts)
    functions = Functions(
        "functions",
        FunctionsArgs(
            cfg, group, subscription, scopes, settings, lake.account, monitoring.insights
        ),
        opts,
    )
    serving.grant_app(
        subscription,
        principal_of(functions.app.identity),
        events.queues[cfg.topology.queue("deploy").logical].id,
    )
    return {
        "location": cfg.location,
        "resource_group": group.name,
        "serve_urls": serving.serve_urls(),
        "data_account": lake.account.name,
        "function_app": functions.app.name,
        "workspace": training.workspace.name,
        "pipeline_topic": events.topic.name,
        "run_status_topic": run_events.name,
    }


def _scopes(
    lake: DataLake,
    lineage: Lineage,
    events: EventWiring,
    training: Training,
    monitoring: Monitoring,
) -> dict[tuple[str, str], pulumi.Input[str]]:
    scopes: dict[tuple[str, str], pulumi.Input[str]] = {
        ("container", k): v.id for k, v in lake.containers.items()
    }
    scopes |= {("queue", k): v.id for k, v in events.queues.items()}
    scopes |= {("table", k): v.id for k, v in lineage.tables.items()}
    scopes[("topic", "pipeline")] = events.topic.id
    scopes[("workspace", "workspace")] = training.workspace.id
    scopes[("account", "ml")] = training.storage.id
    scopes[("insights", "insights")] = monitoring.insights.id
    return scopes
