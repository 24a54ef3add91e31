"""Least-privilege Azure role assignments, generated from the topology's permissions.

On Azure every function runs in one Function App with one managed identity, so the
identity holds the union of the functions' permissions, each as the narrowest data-plane
role on the one container, queue or table it names (never the account, never Owner or
Contributor). Pure, so the tests read the plan without Pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.topology import Topology

# Built-in role definition ids (the same in every tenant).
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"  # Storage Blob Data Reader
BLOB_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # Storage Blob Data Contributor
BLOB_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"  # Storage Blob Data Owner
QUEUE_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"  # Storage Queue Data Contributor
QUEUE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"  # Storage Queue Data Message Sender
TABLE_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160be3a"  # Storage Table Data Contributor
EVENTGRID_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"  # EventGrid Data Sender
AZUREML_DATA_SCIENTIST = "f6c7c914-8db3-469d-8ca1-694a8f32e121"  # AzureML Data Scientist
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"  # Monitoring Metrics Publisher

_READ_ONLY = frozenset({"s3:GetObject", "s3:ListBucket"})


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
                role = BLOB_READER if set(perm.actions) <= _READ_ONLY else BLOB_CONTRIBUTOR
                grants.add(Grant(role, "container", perm.resource))
            elif perm.kind == "queue":
                # The queue trigger reads, deletes and moves poison messages.
                grants.add(Grant(QUEUE_CONTRIBUTOR, "queue", perm.resource))
                grants.add(Grant(QUEUE_CONTRIBUTOR, "queue", f"{perm.resource}-poison"))
            elif perm.kind == "table":
                grants.add(Grant(TABLE_CONTRIBUTOR, "table", perm.resource))
            elif perm.kind == "bus":
                grants.add(Grant(EVENTGRID_SENDER, "topic", perm.resource))
            elif perm.kind == "topic":
                # Alerts go to a queue of the same name (QueueAlerts).
                grants.add(Grant(QUEUE_SENDER, "queue", perm.resource))
            elif perm.kind == "jobs" and perm.resource == "drift_metrics":
                grants.add(Grant(METRICS_PUBLISHER, "insights", "insights"))
            elif perm.kind == "jobs":
                # Training, processing, registry and online endpoints live in the workspace.
                grants.add(Grant(AZUREML_DATA_SCIENTIST, "workspace", "workspace"))
    return sorted(grants)
