"""Event wiring on Azure: Storage queues (each with its poison queue), the data account's
Event Grid system topic (uploads to the ingest queue), the pipeline's own Event Grid
topic with one subscription per rule, and the ML workspace's system topic (ended runs
to the functions that wait for them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_azure_native as az

from infra.azure.assignments import assign, principal_of
from infra.azure.data_lake import DataLake
from infra.azure.roles import BLOB_CONTRIBUTOR, QUEUE_SENDER
from infra.config import StackConfig
from shared.cloud_facts import value
from shared.identifiers import family_prefix
from shared.topology import processing_job_prefix
from shared.triggers import (
    AZUREML_RUN_STATUS_CHANGED,
    TRAINING_EXPERIMENT,
    VALIDATION_EXPERIMENT,
)

# The Functions host's poison queue of each queue (on the trigger's own account).
POISON = value("azure.functions.poison_queue_suffix")


def queue_destination(account: az.storage.StorageAccount, queue: str) -> dict[str, Any]:
    return {
        "identity": {"type": "SystemAssigned"},
        "destination": {
            "endpoint_type": "StorageQueue",
            "resource_id": account.id,
            "queue_name": queue,
        },
    }


@dataclass(frozen=True)
class EventWiringArgs:
    cfg: StackConfig
    group: az.resources.ResourceGroup
    lake: DataLake
    subscription: pulumi.Input[str]


class EventWiring(pulumi.ComponentResource):
    """Storage queues (each with its poison queue), the storage account's Event Grid
    system topic (BlobCreated under ``datasets/`` in the raw container to the ingest
    queue) and the pipeline's own Event Grid topic with one subscription per rule."""

    def __init__(
        self, name: str, args: EventWiringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:azure:EventWiring", name, None, opts)
        cfg, group, lake, subscription = args.cfg, args.group, args.lake, args.subscription
        child = pulumi.ResourceOptions(parent=self)
        topo = cfg.topology
        account = lake.account
        self.queues: dict[str, az.storage.Queue] = {}
        names = [
            (n, m)
            for q in topo.queues
            for n, m in ((q.logical, q.name), (q.logical + POISON, q.name + POISON))
        ]
        # Alerts stay in a queue of the region: action groups are global resources.
        names += [(t.logical, t.name) for t in topo.topics]
        for logical, queue_name in names:
            self.queues[logical] = az.storage.Queue(
                logical,
                queue_name=queue_name,
                account_name=account.name,
                resource_group_name=group.name,
                opts=child,
            )
        self.system_topic = az.eventgrid.SystemTopic(
            "storage-events",
            system_topic_name=cfg.name("storage-events"),
            resource_group_name=group.name,
            location=cfg.location,
            source=account.id,
            topic_type="Microsoft.Storage.StorageAccounts",
            identity={"type": "SystemAssigned"},
            tags=cfg.tags,
            opts=child,
        )
        self.topic = az.eventgrid.Topic(
            "pipeline",
            topic_name=topo.bus_name,
            resource_group_name=group.name,
            location=cfg.location,
            input_schema="CloudEventSchemaV1_0",
            # Event Grid keeps the events of this topic in its region, even on failover.
            data_residency_boundary="WithinRegion",
            disable_local_auth=True,
            minimum_tls_version_allowed="1.2",
            identity={"type": "SystemAssigned"},
            tags=cfg.tags,
            opts=child,
        )
        self.subscriptions = []
        dead_letters = dead_letter(lake)
        for rule in topo.rules:
            target = topo.queue(rule.target_queue).name
            if rule.source == "storage":
                raw = next(b.name for b in topo.buckets if b.emits_object_events)
                self.subscriptions.append(
                    az.eventgrid.SystemTopicEventSubscription(
                        rule.logical,
                        event_subscription_name=rule.name,
                        system_topic_name=self.system_topic.name,
                        resource_group_name=group.name,
                        delivery_with_resource_identity=queue_destination(account, target),
                        dead_letter_with_resource_identity=dead_letters,
                        event_delivery_schema="EventGridSchema",
                        filter={
                            "included_event_types": ["Microsoft.Storage.BlobCreated"],
                            "subject_begins_with": (
                                f"/blobServices/default/containers/{raw}/blobs/datasets/"
                            ),
                        },
                        retry_policy=RETRY,
                        opts=child,
                    )
                )
            elif rule.source == "pipeline":
                self.subscriptions.append(
                    az.eventgrid.EventSubscription(
                        rule.logical,
                        event_subscription_name=rule.name,
                        scope=self.topic.id,
                        delivery_with_resource_identity=queue_destination(account, target),
                        dead_letter_with_resource_identity=dead_letters,
                        event_delivery_schema="CloudEventSchemaV1_0",
                        filter=pipeline_filter(rule.pattern),
                        retry_policy=RETRY,
                        opts=child,
                    )
                )
            # A job's end is Azure ML's RunStatusChanged (run_status_events, on the
            # workspace's system topic). The serving rules have no Azure counterpart:
            # the deploy function steps each online endpoint's traffic itself and sends
            # its own checks on the deploy queue (infra/azure/serving.py,
            # shared/adapters/azure_serving.py).

        # Each topic's identity may send to the queues its subscriptions deliver to, and
        # write dead letters; nothing else.
        for label, identity, source in (
            ("storage-events", self.system_topic.identity, "storage"),
            ("pipeline", self.topic.identity, "pipeline"),
        ):
            principal = principal_of(identity)
            targets = sorted({r.target_queue for r in topo.rules if r.source == source})
            for queue in targets:
                assign(
                    f"{label}-sends-{queue}",
                    subscription,
                    principal,
                    QUEUE_SENDER,
                    self.queues[queue].id,
                    child,
                )
            assign(
                f"{label}-dead-letters",
                subscription,
                principal,
                BLOB_CONTRIBUTOR,
                lake.dead_letters.id,
                child,
            )
        self.register_outputs({"topic": self.topic.name})


# Event Grid's own defaults, stated so that the dead-letter path is explicit.
RETRY = value("azure.eventgrid.dead_letter_on_every_subscription")


def dead_letter(lake: DataLake) -> dict[str, Any]:
    """Undelivered events go to the data account's dead-letter container, written with
    the topic's own identity (granted Blob Data Contributor there)."""
    return {
        "identity": {"type": "SystemAssigned"},
        "dead_letter_destination": {
            "endpoint_type": "StorageBlob",
            "resource_id": lake.account.id,
            "blob_container_name": lake.dead_letters.name,
        },
    }


def pipeline_filter(pattern: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge pattern of the pipeline bus as an Event Grid filter: ``detail-type``
    is the CloudEvent ``type``; ``detail`` fields are ``data`` fields."""
    out: dict[str, Any] = {}
    if types := pattern.get("detail-type"):
        out["included_event_types"] = list(types)
    detail = pattern.get("detail") or {}
    if detail:
        # Typed: a plain dict inside this union would reach ARM with snake_case keys.
        out["advanced_filters"] = [
            az.eventgrid.StringInAdvancedFilterArgs(
                operator_type="StringIn", key=f"data.{field}", values=list(values)
            )
            for field, values in detail.items()
        ]
    return out


@dataclass(frozen=True)
class RunStatusRule:
    """One subscription to the workspace's RunStatusChanged: the topology rule it plays,
    the data fields it matches exactly (``StringIn``) and the run-id prefix of its stage."""

    logical: str
    name: str
    target_queue: str
    string_in: tuple[tuple[str, tuple[str, ...]], ...]
    run_id_prefix: str


# Azure ML's end states, as RunStatusChanged reports them.
_RUN_END_STATES = ("Completed", "Failed", "Canceled")


def run_status_rules(cfg: StackConfig) -> list[RunStatusRule]:
    """Training runs to register, validation runs to validate. Both match the run's
    experiment, which the launchers set (shared.adapters.azure_ml), and the stage's name
    prefix: a training job of a dataset called ``validate-…`` would share the validation
    prefix, and every validation job starts with the stage's prefix too."""
    # The experiment and the run-name prefix of each kind of managed job.
    runs = {
        "training_job": (TRAINING_EXPERIMENT, family_prefix(cfg.stage)),
        "validation_job": (VALIDATION_EXPERIMENT, processing_job_prefix(cfg.stage)),
    }
    out = []
    for rule in cfg.topology.rules:
        if rule.source not in runs:
            continue
        experiment, prefix = runs[rule.source]
        out.append(
            RunStatusRule(
                rule.logical,
                rule.name,
                rule.target_queue,
                (
                    ("data.runStatus", _RUN_END_STATES),
                    ("data.experimentName", (experiment,)),
                ),
                prefix,
            )
        )
    return out


def run_status_events(
    cfg: StackConfig,
    group: az.resources.ResourceGroup,
    lake: DataLake,
    events: EventWiring,
    workspace: az.machinelearningservices.Workspace,
    subscription: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> az.eventgrid.SystemTopic:
    """The workspace's Event Grid system topic: Azure ML's RunStatusChanged of a stage's
    run that ended goes, by the run's experiment and name, to the register queue for a
    training run (the training_job_ended rule) and to the validate queue for a validation
    run (validation_job_ended), so neither function is handed the other's run."""
    topo = cfg.topology
    topic = az.eventgrid.SystemTopic(
        "ml-events",
        system_topic_name=cfg.name("ml-events"),
        resource_group_name=group.name,
        location=cfg.location,
        source=workspace.id,
        topic_type="Microsoft.MachineLearningServices.Workspaces",
        identity={"type": "SystemAssigned"},
        tags=cfg.tags,
        opts=opts,
    )
    principal = principal_of(topic.identity)
    for rule in run_status_rules(cfg):
        target = topo.queue(rule.target_queue)
        az.eventgrid.SystemTopicEventSubscription(
            rule.logical,
            event_subscription_name=rule.name,
            system_topic_name=topic.name,
            resource_group_name=group.name,
            delivery_with_resource_identity=queue_destination(lake.account, target.name),
            dead_letter_with_resource_identity=dead_letter(lake),
            event_delivery_schema="EventGridSchema",
            filter={
                "included_event_types": [AZUREML_RUN_STATUS_CHANGED],
                "advanced_filters": [
                    az.eventgrid.StringInAdvancedFilterArgs(
                        operator_type="StringIn", key=key, values=list(values)
                    )
                    for key, values in rule.string_in
                ]
                + [
                    az.eventgrid.StringBeginsWithAdvancedFilterArgs(
                        operator_type="StringBeginsWith",
                        key="data.runId",
                        values=[rule.run_id_prefix],
                    )
                ],
            },
            retry_policy=RETRY,
            opts=opts,
        )
        assign(
            f"ml-events-sends-{target.logical}",
            subscription,
            principal,
            QUEUE_SENDER,
            events.queues[target.logical].id,
            opts,
        )
    assign(
        "ml-events-dead-letters",
        subscription,
        principal,
        BLOB_CONTRIBUTOR,
        lake.dead_letters.id,
        opts,
    )
    return topic
