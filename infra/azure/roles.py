"""Least-privilege Azure role assignments, generated from the topology's permissions:
each verb a function holds on a resource (read, write, consume, publish, measure, ...)
becomes the narrowest data-plane role that allows it there.

On Azure every function runs in one Function App with one managed identity, so the
identity holds the union of the functions' permissions, each as the narrowest data-plane
role on the one container, queue or table it names (never the account, never Owner or
Contributor). Pure, so the tests read the plan without Pulumi.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.cloud_facts import value
from shared.topology import Topology, Verb

# Built-in role definition ids (the same in every tenant).
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"  # Storage Blob Data Reader
BLOB_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # Storage Blob Data Contributor
BLOB_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"  # Storage Blob Data Owner
QUEUE_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"  # Storage Queue Data Contributor
QUEUE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"  # Storage Queue Data Message Sender
QUEUE_READER = "19e7f393-937e-4f77-808e-94535e297925"  # Storage Queue Data Reader
QUEUE_PROCESSOR = "8a0f0c08-91a1-4084-bc3d-661d67233fed"  # Storage Queue Data Message Processor
TABLE_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"  # Storage Table Data Contributor
TABLE_READER = "76199698-9eea-4c19-bc75-cec21354c6b6"  # Storage Table Data Reader
EVENTGRID_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"  # EventGrid Data Sender
# Not a built-in role: the stack's own custom role in the workspace (below), whose GUID
# the stack derives per subscription and stage; grants name it by this marker.
WORKSPACE_ROLE = "dhow-workspace"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"  # Monitoring Metrics Publisher

# What the Functions docs give a queue trigger on its queue (Storage Queue Data Reader,
# Storage Queue Data Message Processor); the fact azure.functions.queue_trigger_roles.
TRIGGER_ROLES = (QUEUE_READER, QUEUE_PROCESSOR)

# The verbs Storage Blob Data Reader allows on a container: a read of a named version is
# a plain blob read here (ingest pins its reads by ETag on Azure), and listing is a read.
_BLOB_READS: frozenset[Verb] = frozenset({"read", "read_version", "list"})


@dataclass(frozen=True, order=True)
class Grant:
    """One role on one resource of the stack: ``scope_kind`` is container, queue, table,
    topic, workspace or insights; ``scope`` its logical name."""

    role: str
    scope_kind: str
    scope: str


def function_app_grants(topology: Topology) -> list[Grant]:
    """What the Function App's identity needs in the data account and the workspace."""
    grants: set[Grant] = set()
    for fn in topology.functions:
        for perm in fn.permissions:
            if perm.kind == "bucket":
                role = BLOB_READER if set(perm.verbs) <= _BLOB_READS else BLOB_CONTRIBUTOR
                grants.add(Grant(role, "container", perm.resource))
            elif perm.kind == "queue":
                # The roles the Functions docs give a queue trigger on its queue; the
                # host moves a poison message by sending it to ``<queue>-poison`` (it
                # creates that queue only when sending finds none, and the stack creates
                # every one), so sending is all it needs there.
                grants |= {Grant(r, "queue", perm.resource) for r in TRIGGER_ROLES}
                grants.add(Grant(QUEUE_SENDER, "queue", f"{perm.resource}-poison"))
            elif perm.kind == "table":
                grants.add(Grant(TABLE_CONTRIBUTOR, "table", perm.resource))
            elif perm.kind == "bus":
                grants.add(Grant(EVENTGRID_SENDER, "topic", perm.resource))
            elif perm.kind == "topic":
                # Alerts go to a queue of the same name (QueueAlerts).
                grants.add(Grant(QUEUE_SENDER, "queue", perm.resource))
            elif "measure" in perm.verbs:
                # Metrics go to the stack's Application Insights.
                grants.add(Grant(METRICS_PUBLISHER, "insights", "insights"))
            elif perm.kind == "jobs":
                # Jobs and online endpoints live in the workspace: its custom role.
                grants.add(Grant(WORKSPACE_ROLE, "workspace", "workspace"))
    # A schedule is a timer whose queue output binding sends to the schedule's queue.
    for schedule in topology.schedules:
        grants.add(Grant(QUEUE_SENDER, "queue", schedule.target_queue))
    # The host sends its own telemetry to Application Insights, which takes only
    # Entra-authenticated telemetry (local auth is off): Monitoring Metrics Publisher.
    grants.add(Grant(METRICS_PUBLISHER, "insights", "insights"))
    return sorted(grants)


# The Azure ML compute clusters' identities (identity-based datastores: the job reaches
# storage as its cluster). The CPU cluster runs `python -m shared.jobs.validate`, which
# does storage only: it reads the staged object (mounted through the staging datastore),
# writes the curated copy or the quarantined copy with its report, and leaves its result
# JSON beside the staged data (shared.services.validate.job_result_ref). The validate
# function does the lineage and the events when the job's end comes back, so the cluster
# holds no table and no topic role. The GPU cluster reads curated files and writes models.
VALIDATION_JOB_WRITES = ("staging", "curated", "quarantine")


def cluster_grants(topology: Topology) -> dict[str, list[Grant]]:
    """What each compute cluster's identity needs, by cluster kind (``cpu``, ``gpu``)."""
    cpu = {Grant(BLOB_CONTRIBUTOR, "container", c) for c in VALIDATION_JOB_WRITES}
    gpu = {
        Grant(BLOB_READER, "container", "curated"),
        Grant(BLOB_CONTRIBUTOR, "container", "models"),
    }
    return {"cpu": sorted(cpu), "gpu": sorted(gpu)}


# The workspace's own storage account (its default datastores: code snapshots, job
# outputs, MLflow artifacts) has shared keys off, so each identity that reaches it needs
# a data role there (fact azure.ml.identity_storage_roles): the clusters' identities and
# the app's (its code upload). Azure ML names that account's containers itself, so the
# role is on the account. The endpoints' identities get theirs from Azure ML.
_ROLE_IDS = {"Storage Blob Data Contributor": BLOB_CONTRIBUTOR}


def workspace_storage_roles() -> dict[str, list[str]]:
    """Role definition ids on the workspace's storage account, by identity (``cpu`` and
    ``gpu`` clusters, ``app``)."""
    rule = value("azure.ml.identity_storage_roles")
    cluster = [_ROLE_IDS[r] for r in rule["cluster"]]
    return {"cpu": cluster, "gpu": cluster, "app": [_ROLE_IDS[r] for r in rule["app"]]}


# The Function App's custom role in the Azure ML workspace: exactly the actions of the
# operations its azure-ai-ml calls send (fact azure.ml.workspace_operation_actions),
# where AzureML Data Scientist would grant every */read, */write, */delete and */action
# of the workspace. Assigned at the workspace, it covers the online endpoints and their
# deployments (children of the workspace), their metrics included.


def workspace_role_actions() -> list[str]:
    """The custom role's actions: one per documented operation, no wildcard."""
    return sorted(set(value("azure.ml.workspace_operation_actions").values()))


def workspace_role_guid(subscription: str, stage: str) -> str:
    """A custom role definition's name is a GUID (fact azure.rbac.custom_role_definition):
    derived from the subscription and stage, so a redeploy keeps it and two stages or two
    subscriptions never share it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dhow/{subscription}/{stage}/workspace-role"))


def workspace_role_name(stage: str, subscription: str) -> str:
    """The role's display name, unique in the tenant (stage and subscription in it)."""
    return f"Dhow workspace operator ({stage}, {subscription})"
