"""Azure RBAC judged from the stack's own role assignments and the documented roles.

Which data action a Storage REST operation needs, and which data actions each built-in
role grants, are the tables in shared/cloud_facts/azure-rbac.yaml, copied from the Azure
Storage REST reference and the built-in roles reference. There is no maintained Python
evaluator of Azure RBAC to hand this to: azure-mgmt-authorization only reads and writes
role definitions and assignments, and Azure evaluates them server-side. So the matching
here is kept to what the role-definitions reference documents: an action is granted
when it matches one of the role's dataActions and none of its notDataActions, with "*"
matching any run of characters and case ignored (``fnmatch`` over those patterns); an
assignment covers its scope and everything under it.

Scopes are compared by logical name (shared/topology.py), so a call recorded on a local
stage is judged against the assignments the program makes for another stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from shared.cloud_facts import value
from shared.topology import Topology
from shared.wiring import azure_table_name
from tests.infra.harness import Program

# The resource type of an assignment's scope (as the mocked program writes ids) -> the
# kind of data-plane resource it covers.
_SCOPE_KINDS = {
    "azure-native:storage:BlobContainer": "container",
    "azure-native:storage:Queue": "queue",
    "azure-native:storage:Table": "table",
    "azure-native:eventgrid:Topic": "topic",
    "azure-native:storage:StorageAccount": "account",
    "azure-native:machinelearningservices:Workspace": "workspace",
    "azure-native:applicationinsights:Component": "insights",
}


@dataclass(frozen=True, order=True)
class Assignment:
    """One role assignment of the program: ``scope`` is a logical name for containers,
    queues, tables and the topic, the physical name otherwise."""

    principal: str
    role: str
    kind: str
    scope: str


def names(topo: Topology) -> dict[tuple[str, str], str]:
    """(kind, physical name) -> logical name, for every data-plane resource of ``topo``."""
    out: dict[tuple[str, str], str] = {}
    for b in topo.buckets:
        out[("container", b.name)] = b.logical
    for q in topo.queues:
        out[("queue", q.name)] = q.logical
        out[("queue", f"{q.name}-poison")] = f"{q.logical}-poison"
    for t in topo.topics:  # alerts go to a queue of the topic's name (QueueAlerts)
        out[("queue", t.name)] = t.logical
    for table in topo.tables:
        out[("table", azure_table_name(table.name))] = table.logical
    out[("topic", topo.bus_name)] = "pipeline"
    return out


def assignments(program: Program, topo: Topology) -> list[Assignment]:
    """Every role assignment the mocked program makes, by principal, role and scope."""
    known = names(topo)
    out = []
    for a in program.of_type("azure-native:authorization:RoleAssignment"):
        scope = str(a.inputs["scope"])
        typ, _, physical = scope.rpartition("/")
        kind = _SCOPE_KINDS.get(typ.rsplit("/", 1)[-1], "other")
        if kind == "topic":
            logical = "pipeline" if physical.endswith("-pipeline") else physical
        else:
            logical = known.get((kind, physical), physical)
        role = str(a.inputs["roleDefinitionId"]).rsplit("/", 1)[-1]
        out.append(Assignment(str(a.inputs["principalId"]), role, kind, logical))
    return sorted(out)


def role_grants(role: str, action: str) -> bool:
    """Whether built-in ``role`` grants data ``action`` (the documented matching)."""
    table: dict[str, dict[str, Any]] = value("azure.rbac.builtin_role_data_actions")
    definition = table.get(role)
    if definition is None:  # a role the table does not document grants nothing here
        return False
    wanted = action.lower()
    allowed = any(fnmatchcase(wanted, p.lower()) for p in definition["dataActions"])
    denied = any(fnmatchcase(wanted, p.lower()) for p in definition["notDataActions"])
    return allowed and not denied


@dataclass(frozen=True)
class Need:
    """What one recorded call needs: any one alternative, each a set of actions, on one
    resource (``kind``, logical ``scope``)."""

    alternatives: tuple[tuple[str, ...], ...]
    kind: str
    scope: str


def needs_of(call: dict[str, Any], topo: Topology) -> list[Need] | None:
    """The needs of one recorded call (shared/adapters/azure_calls.py); None when the
    table does not know its operation."""
    known = names(topo)
    if call.get("played") == "event-grid":
        # The local Event Grid delivering what the function published: in the cloud the
        # function's one call is Publish Events on the pipeline topic.
        return [Need((tuple(value("azure.rbac.eventgrid_publish_actions")),), "topic", "pipeline")]
    ops: dict[str, list[list[str]]] = value("azure.rbac.storage_operation_actions")["operations"]
    if call["operation"] not in ops:
        return None
    kind = {"blob": "container", "queue": "queue", "table": "table"}[call["service"]]
    physical = call.get(kind, "")
    scope = known.get((kind, physical), f"?{physical}")
    out = [Need(tuple(tuple(a) for a in ops[call["operation"]]), kind, scope)]
    if "copy_source_container" in call:
        source = call["copy_source_container"]
        same_account: list[list[str]] = value("azure.rbac.storage_operation_actions")[
            "copy_source_same_account"
        ]
        out.append(
            Need(
                tuple(tuple(a) for a in same_account),
                "container",
                known.get(("container", source), f"?{source}"),
            )
        )
    return out


def granted_by(need: Need, held: list[Assignment]) -> set[Assignment]:
    """The assignments that together let ``need`` through (empty when none does): the
    first alternative whose every action some assignment on the resource grants."""
    on_resource = [a for a in held if a.kind == need.kind and a.scope == need.scope]
    for alternative in need.alternatives:
        used: set[Assignment] = set()
        for action in alternative:
            granting = [a for a in on_resource if role_grants(a.role, action)]
            if not granting:
                break
            used.add(granting[0])
        else:
            return used
    return set()
