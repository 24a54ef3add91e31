"""The Azure program under Pulumi's mocks: what `pulumi up` on an azure-uae stack asks
Azure Resource Manager to create."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, cast

import pytest

from infra.azure import roles
from infra.azure.names import account_name
from infra.config import StackConfig
from infra.policy.rules import violations
from shared.cloud_facts import value
from shared.events import ObjectRef
from shared.wiring import azure_table_name
from tests.helpers import load_event
from tests.infra.harness import SUBSCRIPTION, Program, run

DATA = account_name("uae-prod", "data", SUBSCRIPTION)
ML = account_name("uae-prod", "ml", SUBSCRIPTION)
HOST = account_name("uae-prod", "host", SUBSCRIPTION)


def test_everything_in_uaenorth(azure_program: Program) -> None:
    (provider,) = azure_program.providers().values()
    assert provider.inputs["location"] == "uaenorth"
    located = [r for r in azure_program.resources if "location" in r.inputs]
    assert len(located) >= 14
    assert {r.inputs["location"] for r in located} == {"uaenorth"}
    (group,) = azure_program.of_type("azure-native:resources:ResourceGroup")
    assert group.inputs["resourceGroupName"] == "dhow-uae-prod-rg"


def test_storage_matches_the_topology(azure_program: Program, azure_cfg: StackConfig) -> None:
    topo = azure_cfg.topology
    containers = {
        r.inputs["containerName"]
        for r in azure_program.of_type("azure-native:storage:BlobContainer")
    }
    assert {b.name for b in topo.buckets} <= containers
    queues = {r.inputs["queueName"] for r in azure_program.of_type("azure-native:storage:Queue")}
    assert queues == (
        {q.name for q in topo.queues}
        | {f"{q.name}-poison" for q in topo.queues}
        | {t.name for t in topo.topics}  # alerts stay in a queue of the region
    )
    tables = {r.inputs["tableName"] for r in azure_program.of_type("azure-native:storage:Table")}
    assert tables == {azure_table_name(t.name) for t in topo.tables}


def test_storage_accounts_encrypted_twice_private_identity_only(azure_program: Program) -> None:
    accounts = azure_program.of_type("azure-native:storage:StorageAccount")
    assert sorted(a.inputs["accountName"] for a in accounts) == sorted(
        [DATA, HOST, account_name("uae-prod", "ml", SUBSCRIPTION)]
    )
    assert DATA.startswith("dhowuaeprod")
    for a in accounts:
        assert a.inputs["encryption"]["requireInfrastructureEncryption"] is True
        assert a.inputs["allowBlobPublicAccess"] is False
        assert a.inputs["allowSharedKeyAccess"] is False
        assert a.inputs["minimumTlsVersion"] == "TLS1_2"
    for c in azure_program.of_type("azure-native:storage:BlobContainer"):
        assert c.inputs["publicAccess"] == "None"


def test_uploads_reach_the_ingest_queue_through_event_grid(azure_program: Program) -> None:
    subs = azure_program.of_type("azure-native:eventgrid:SystemTopicEventSubscription")
    (sub,) = [s for s in subs if s.name == "raw_object_created"]
    f = sub.inputs["filter"]
    assert f["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert f["subjectBeginsWith"] == (
        "/blobServices/default/containers/dhow-uae-prod-raw/blobs/datasets/"
    )
    dest = sub.inputs["deliveryWithResourceIdentity"]["destination"]
    assert dest == {
        "endpointType": "StorageQueue",
        "resourceId": dest["resourceId"],
        "queueName": "dhow-uae-prod-ingest",
    }
    assert (
        sub.inputs["deadLetterWithResourceIdentity"]["deadLetterDestination"]["blobContainerName"]
        == "dhow-uae-prod-dead-letters"
    )


def test_ended_azure_ml_runs_reach_the_register_queue(azure_program: Program) -> None:
    (topic,) = [
        t
        for t in azure_program.of_type("azure-native:eventgrid:SystemTopic")
        if t.inputs["topicType"] == "Microsoft.MachineLearningServices.Workspaces"
    ]
    assert topic.inputs["location"] == "uaenorth"
    subs = azure_program.of_type("azure-native:eventgrid:SystemTopicEventSubscription")
    (sub,) = [s for s in subs if s.name == "training_job_ended"]
    f = sub.inputs["filter"]
    assert f["includedEventTypes"] == ["Microsoft.MachineLearningServices.RunStatusChanged"]
    assert f["advancedFilters"] == [
        {
            "operatorType": "StringIn",
            "key": "data.runStatus",
            "values": ["Completed", "Failed", "Canceled"],
        },
        {"operatorType": "StringIn", "key": "data.experimentName", "values": ["dhow-train"]},
        {"operatorType": "StringBeginsWith", "key": "data.runId", "values": ["dhow-uae-prod--"]},
    ]
    dest = sub.inputs["deliveryWithResourceIdentity"]["destination"]
    assert dest["queueName"] == "dhow-uae-prod-register"
    assert sub.inputs["eventDeliverySchema"] == "EventGridSchema"


def _matches(advanced_filters: list[dict[str, Any]], event: dict[str, Any]) -> bool:
    """Event Grid's StringIn / StringBeginsWith on an Event Grid schema event: every filter
    must hold (AND), any of a filter's values may (OR), strings compare case-insensitively
    (https://learn.microsoft.com/azure/event-grid/event-filtering#advanced-filtering)."""
    for flt in advanced_filters:
        found: Any = event
        for part in flt["key"].split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if not isinstance(found, str):
            return False
        got, values = found.lower(), [v.lower() for v in flt["values"]]
        if flt["operatorType"] == "StringIn" and got not in values:
            return False
        if flt["operatorType"] == "StringBeginsWith" and not any(got.startswith(v) for v in values):
            return False
    return True


def _as_stage(event: dict[str, Any], stage: str) -> dict[str, Any]:
    """A sample event from tests/events/ (stage ``prod``) as the stage under test sees it."""
    return cast(
        dict[str, Any], json.loads(json.dumps(event).replace("dhow-prod-", f"dhow-{stage}-"))
    )


def test_each_azure_ml_runs_end_reaches_the_function_that_waits_for_it(
    azure_program: Program,
) -> None:
    """A validation run's end goes to validate (which finishes the handed-off work) and
    only there; a training run's to register and only there."""
    subs = {
        s.name: s
        for s in azure_program.of_type("azure-native:eventgrid:SystemTopicEventSubscription")
        if s.name in ("training_job_ended", "validation_job_ended")
    }
    validation = subs["validation_job_ended"]
    dest = validation.inputs["deliveryWithResourceIdentity"]["destination"]
    assert dest["queueName"] == "dhow-uae-prod-validate"
    assert validation.inputs["eventDeliverySchema"] == "EventGridSchema"
    assert "deadLetterDestination" in validation.inputs["deadLetterWithResourceIdentity"]
    filters = {name: sub.inputs["filter"]["advancedFilters"] for name, sub in subs.items()}
    validation_run = _as_stage(load_event("azureml_validation_run_status_changed.json"), "uae-prod")
    training_run = _as_stage(load_event("azureml_run_status_changed.json"), "uae-prod")
    assert _matches(filters["validation_job_ended"], validation_run)
    assert not _matches(filters["training_job_ended"], validation_run)
    assert _matches(filters["training_job_ended"], training_run)
    assert not _matches(filters["validation_job_ended"], training_run)
    # A training job of a dataset named "validate-…" shares the validation prefix: the
    # experiment keeps it out of validate's queue.
    look_alike = json.loads(json.dumps(training_run))
    look_alike["data"]["runId"] = "dhow-uae-prod--validate-x-ab12ab12-1a2b3c4d5e6f"
    assert not _matches(filters["validation_job_ended"], look_alike)
    # Another stage's runs reach neither, and a run still going reaches nothing.
    other = _as_stage(load_event("azureml_validation_run_status_changed.json"), "uae-dev")
    assert not any(_matches(f, other) for f in filters.values())
    running = json.loads(json.dumps(validation_run))
    running["data"]["runStatus"] = "Running"
    assert not any(_matches(f, running) for f in filters.values())
    # The topic's identity may send to both queues.
    sends = {
        a.name
        for a in azure_program.of_type("azure-native:authorization:RoleAssignment")
        if a.name.startswith("ml-events-sends-")
    }
    assert sends == {"ml-events-sends-register", "ml-events-sends-validate"}


def test_run_status_filters_stay_within_event_grids_limits(azure_program: Program) -> None:
    limits = value("azure.eventgrid.advanced_filter_limits")
    for sub in azure_program.of_type("azure-native:eventgrid:SystemTopicEventSubscription"):
        advanced = sub.inputs["filter"].get("advancedFilters", [])
        assert len(advanced) <= limits["filters"], sub.name
        assert sum(len(f["values"]) for f in advanced) <= limits["values"], sub.name
        assert all(len(v) <= limits["string_chars"] for f in advanced for v in f["values"])
        assert not any("." in part for f in advanced for part in f["key"].split(".")[1:2])


def test_pipeline_rules_become_topic_subscriptions(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    (topic,) = azure_program.of_type("azure-native:eventgrid:Topic")
    assert topic.inputs["dataResidencyBoundary"] == "WithinRegion"
    assert topic.inputs["disableLocalAuth"] is True
    subs = {
        s.inputs["eventSubscriptionName"]: s.inputs
        for s in azure_program.of_type("azure-native:eventgrid:EventSubscription")
    }
    pipeline_rules = [r for r in azure_cfg.topology.rules if r.bus == "pipeline"]
    assert set(subs) == {r.name for r in pipeline_rules}
    retrain = subs["dhow-uae-prod-drift-retrain"]
    assert retrain["filter"]["includedEventTypes"] == ["DriftDetected"]
    assert retrain["filter"]["advancedFilters"] == [
        {"operatorType": "StringIn", "key": "data.action", "values": ["retrain"]}
    ]
    assert retrain["deliveryWithResourceIdentity"]["destination"]["queueName"] == (
        "dhow-uae-prod-train"
    )


def test_function_app_is_flex_consumption_python_with_an_identity(azure_program: Program) -> None:
    (plan,) = azure_program.of_type("azure-native:web:AppServicePlan")
    assert plan.inputs["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    (app,) = azure_program.of_type("azure-native:web:WebApp")
    assert app.inputs["kind"] == "functionapp,linux"
    assert app.inputs["identity"] == {"type": "SystemAssigned"}
    assert app.inputs["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.12"}
    settings = {s["name"]: s["value"] for s in app.inputs["siteConfig"]["appSettings"]}
    assert settings["DHOW_CLOUD"] == "azure"
    assert settings["DHOW_AZURE_LOCATION"] == "uaenorth"
    assert settings["AzureWebJobsStorage__accountName"] == HOST
    # The data account by identity, and the pipeline topic the event bus publishes to.
    assert settings["DHOW_AZURE_STORAGE_ACCOUNT"] == DATA
    assert "DHOW_AZURE_EVENTGRID_ENDPOINT" in settings
    assert not [k for k in settings if "ConnectionString" in k and "STORAGE" in k.upper()]


def test_role_assignments_are_narrow(azure_program: Program, azure_cfg: StackConfig) -> None:
    assignments = azure_program.of_type("azure-native:authorization:RoleAssignment")
    app = [a for a in assignments if a.name.startswith("grant-")]
    assert len(app) == len(roles.function_app_grants(azure_cfg.topology))
    for a in assignments:
        role = a.inputs["roleDefinitionId"].rsplit("/", 1)[-1]
        assert role not in (
            "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
            "b24988ac-6180-42a0-ab88-20f7382dd24c",
        )
        scope = a.inputs["scope"]
        # Never the data account as a whole: a container, queue, table or service.
        assert not scope.endswith(f"azure-native:storage:StorageAccount/{DATA}"), a.name
    by_scope = {
        (a.inputs["scope"].rsplit("/", 1)[-1], a.inputs["roleDefinitionId"][-36:]) for a in app
    }
    # Read-only where the topology only reads: the serve function reads models.
    assert ("dhow-uae-prod-models", roles.BLOB_CONTRIBUTOR) in by_scope  # train writes them
    assert ("dhow-uae-prod-raw", roles.BLOB_READER) in by_scope
    assert ("dhow-uae-prod-raw", roles.BLOB_CONTRIBUTOR) not in by_scope
    # The host moves poison messages by sending them; the trigger reads and processes.
    assert ("dhow-uae-prod-ingest-poison", roles.QUEUE_SENDER) in by_scope
    assert ("dhow-uae-prod-ingest", roles.QUEUE_PROCESSOR) in by_scope
    assert ("dhow-uae-prod-ingest", roles.QUEUE_CONTRIBUTOR) not in by_scope


def test_gpu_cluster_low_priority_only_when_a_spec_asks(azure_cfg: StackConfig) -> None:
    def priority(cfg: StackConfig) -> str:
        program = run(cfg)
        (gpu,) = [
            c
            for c in program.of_type("azure-native:machinelearningservices:Compute")
            if c.inputs["computeName"] == "gpu-cluster"
        ]
        props = gpu.inputs["properties"]["properties"]
        assert props["vmSize"] == "Standard_NC4as_T4_v3"
        assert props["scaleSettings"]["minNodeCount"] == 0
        return str(props["vmPriority"])

    assert priority(azure_cfg) == "Dedicated"
    spec = azure_cfg.specs[0]
    spot = spec.model_copy(update={"training": spec.training.model_copy(update={"use_spot": True})})
    assert priority(dataclasses.replace(azure_cfg, specs=(spot,))) == "LowPriority"


def test_policy_pack_passes_on_the_program(azure_program: Program) -> None:
    assert violations(azure_program.policy_view()) == []


def test_policy_pack_refuses_the_program_in_west_europe(azure_cfg: StackConfig) -> None:
    program = run(dataclasses.replace(azure_cfg, location="westeurope"))
    found = [v for v in violations(program.policy_view()) if v.policy == "uae-region-only"]
    located = [r for r in program.resources if r.typ.startswith("azure-native:")]
    # Every resource: those with a location twice (their own and the provider's).
    assert len({v.resource for v in found}) == len(located)


def test_training_has_identity_datastores_environments_and_cluster_data_roles(
    azure_program: Program,
) -> None:
    """Train-launch and the validation hand-off name datastores and environments the
    stack creates; the clusters' identities, which identity-based datastores read and
    write as, hold the data roles their jobs need."""
    rule = value("azure.storage.ml_identity_datastore_access")
    stores = {
        d.inputs["name"]: d.inputs["properties"]
        for d in azure_program.of_type("azure-native:machinelearningservices:Datastore")
    }
    containers = {p["containerName"]: p for p in stores.values()}
    assert set(containers) == {f"dhow-uae-prod-{b}" for b in ("staging", "curated", "models")}
    for props in stores.values():
        assert props["credentials"] == {"credentialsType": rule["credentials_type"]}
        assert props["accountName"] == DATA
    versions = azure_program.of_type("azure-native:machinelearningservices:EnvironmentVersion")
    # (dhow-serve, the online deployments': tests/infra/test_azure_serving_stack.py)
    assert {v.inputs["name"] for v in versions} == {"dhow-validate", "dhow-train", "dhow-serve"}
    for v in versions:
        assert "xgboost" in v.inputs["properties"]["condaFile"] or v.inputs["name"] != "dhow-train"
        assert v.inputs["properties"]["image"].startswith("mcr.microsoft.com/azureml/")
    held: dict[tuple[str, str], set[str]] = {}
    for a in azure_program.of_type("azure-native:authorization:RoleAssignment"):
        key = (a.inputs["principalId"], a.inputs["scope"].rsplit("/", 1)[-1])
        held.setdefault(key, set()).add(a.inputs["roleDefinitionId"][-36:])
    assert rule["read"] in held[("gpu-principal", "dhow-uae-prod-curated")]
    assert rule["write"] in held[("gpu-principal", "dhow-uae-prod-models")]
    for container in ("staging", "curated", "quarantine"):
        assert rule["write"] in held[("cpu-principal", f"dhow-uae-prod-{container}")]
    # The validation job does storage only: no table, no topic, no other container.
    cpu = {scope for principal, scope in held if principal == "cpu-principal"}
    assert cpu - {ML} == {f"dhow-uae-prod-{c}" for c in ("staging", "curated", "quarantine")}


def test_every_identity_that_reaches_the_workspace_storage_holds_a_data_role_there(
    azure_program: Program,
) -> None:
    """Shared keys are off on the workspace's own account, so the clusters (code
    snapshots, outputs) and the app (its code upload to the default blob datastore) need
    Storage Blob Data Contributor there; no file role (no compute instance, no notebook)."""
    rule = value("azure.ml.identity_storage_roles")
    (account,) = [
        a
        for a in azure_program.of_type("azure-native:storage:StorageAccount")
        if a.inputs["accountName"] == ML
    ]
    assert account.inputs["allowSharedKeyAccess"] is False
    assert rule["cluster"] == rule["app"] == ["Storage Blob Data Contributor"]
    on_ml: dict[str, set[str]] = {}
    for a in azure_program.of_type("azure-native:authorization:RoleAssignment"):
        if a.inputs["scope"].rsplit("/", 1)[-1] == ML:
            on_ml.setdefault(a.inputs["principalId"], set()).add(a.inputs["roleDefinitionId"][-36:])
    assert on_ml == {
        "cpu-principal": {roles.BLOB_CONTRIBUTOR},
        "gpu-principal": {roles.BLOB_CONTRIBUTOR},
        "app-principal": {roles.BLOB_CONTRIBUTOR},
    }


@pytest.mark.parametrize("sample", ["customers.csv", "customers-bad.csv"])
def test_the_cpu_clusters_roles_cover_what_the_validation_job_writes(
    sample: str, tmp_path: Path, azure_cfg: StackConfig
) -> None:
    """Run the job's code (shared.jobs.validate.run) on a validated and on a rejected file
    and compare every container it read or wrote with the cluster's grants."""
    from shared.jobs.validate import run as run_job
    from shared.settings import Settings
    from tests.helpers import MemoryStore

    topo = azure_cfg.topology
    data = (Path(__file__).resolve().parents[2] / "localstack/samples" / sample).read_bytes()
    sha = "ef56" * 16
    staged = ObjectRef(
        container=topo.bucket("staging").name, key=f"datasets/customers/sha256={sha}/data.csv"
    )
    store = MemoryStore()
    (tmp_path / "data.csv").write_bytes(data)
    result = run_job(
        store,
        Settings(cloud="azure", stage=azure_cfg.stage),
        dataset="customers",
        sha256=sha,
        staged=staged,
        given=tmp_path,
    )
    assert result.ok is (sample == "customers.csv")
    written = {container for container, _ in store.objects}
    writable = {
        topo.bucket(g.scope).name
        for g in roles.cluster_grants(topo)["cpu"]
        if g.role == roles.BLOB_CONTRIBUTOR
    }
    assert written | {staged.container} <= writable
    assert staged.container in written  # the result JSON beside the staged data


def test_two_roles_on_the_workspace_storage_are_two_resources_and_the_old_name_is_kept(
    azure_cfg: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second role in fact azure.ml.identity_storage_roles must not give two resources
    one logical name (a duplicate URN fails `pulumi up`), and the assignment a stack
    already holds (Blob Data Contributor, once named ``<kind>-ml-storage``) is aliased
    to its old name, so Pulumi keeps it instead of deleting and recreating it."""
    import pulumi

    from infra.azure import assignments, stack

    reader = roles.BLOB_READER
    two = {k: [roles.BLOB_CONTRIBUTOR, reader] for k in ("cpu", "gpu", "app")}
    monkeypatch.setattr(assignments, "workspace_storage_roles", lambda: two)
    aliases: dict[str, list[str]] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        if args.type_ == "azure-native:authorization:RoleAssignment":
            # (Pulumi adds its own aliases for the parent's; the stack's have a name)
            given = args.opts.aliases or []
            aliases[args.name] = [
                a.name for a in given if isinstance(a, pulumi.Alias) and isinstance(a.name, str)
            ]

    def build(cfg: StackConfig) -> dict[str, Any]:
        pulumi.runtime.register_stack_transformation(record)
        return stack.build(cfg)

    program = run(azure_cfg, build)
    names = [(r.typ, r.name) for r in program.resources]
    assert len(names) == len(set(names))
    on_ml: dict[str, set[str]] = {}
    for a in program.of_type("azure-native:authorization:RoleAssignment"):
        if a.inputs["scope"].rsplit("/", 1)[-1] == ML:
            on_ml.setdefault(a.inputs["principalId"], set()).add(a.inputs["roleDefinitionId"][-36:])
    assert on_ml == {
        p: set(two["app"]) for p in ("cpu-principal", "gpu-principal", "app-principal")
    }
    for kind in ("cpu", "gpu", "app"):
        assert aliases[f"{kind}-ml-storage-{roles.BLOB_CONTRIBUTOR[:8]}"] == [f"{kind}-ml-storage"]
        assert aliases[f"{kind}-ml-storage-{reader[:8]}"] == []
