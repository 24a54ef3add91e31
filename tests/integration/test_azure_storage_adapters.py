"""Azure adapters against real Azurite, through the same contracts as the AWS ones."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy
from dhow_local.event_grid import LocalEventGrid, LocalEventGridBus

from shared.adapters.azure import (
    AzureClients,
    BlobObjectStore,
    QueueAlerts,
    StorageQueueEventTap,
    TableLineageStore,
    azure_clients,
)
from shared.cloud_facts import value
from shared.events import ObjectRef
from shared.ports import LineageStore, ObjectStore
from shared.settings import Settings
from shared.topology import Topology, build_topology
from shared.triggers import azure_queue_body, parse_bus_event
from tests.helpers import sample_rejected
from tests.port_contracts import LineageStoreContract, ObjectStoreContract


@pytest.fixture(scope="module")
def clients(azurite: str) -> AzureClients:
    return azure_clients(Settings(cloud="azure", azure_storage_connection_string=azurite))


class TestBlobObjectStore(ObjectStoreContract):
    @pytest.fixture
    def container(self, clients: AzureClients) -> str:
        name = f"t{uuid.uuid4().hex[:12]}"
        clients.blobs.create_container(name)
        return name

    @pytest.fixture
    def store(self, clients: AzureClients) -> ObjectStore:
        return BlobObjectStore(clients.blobs)


class TestTableLineageStore(LineageStoreContract):
    @pytest.fixture
    def lineage(self, clients: AzureClients) -> LineageStore:
        name = f"t{uuid.uuid4().hex[:12]}"
        return TableLineageStore(clients.tables.create_table(name))


@pytest.fixture(scope="module")
def grid_topology(clients: AzureClients) -> Topology:
    """A topology of its own stage, with its queues made in Azurite."""
    topo = build_topology(f"g{uuid.uuid4().hex[:8]}")
    for q in topo.queues:
        clients.queues.create_queue(q.name)
    for t in topo.topics:
        clients.queues.create_queue(t.name)
    return topo


def _decoded(azurite: str, name: str) -> list[dict[str, object]]:
    # Peeked decoded, as the Functions host reads them (it decodes base64 first).
    queue = QueueClient.from_connection_string(
        azurite, name, message_decode_policy=TextBase64DecodePolicy()
    )
    return [json.loads(m.content) for m in queue.peek_messages(max_messages=32)]


def test_local_event_grid_routes_by_the_topology_rules(
    clients: AzureClients, azurite: str, grid_topology: Topology
) -> None:
    topo = grid_topology
    bus = LocalEventGridBus(LocalEventGrid(clients, topo))
    event = sample_rejected()
    bus.publish(event)
    # Only the audit queue's rule matches a DatasetRejected.
    (delivered,) = _decoded(azurite, topo.queue("events").name)
    assert delivered["specversion"] == "1.0"
    assert delivered["source"] == "dhow.pipeline"
    assert delivered["type"] == "DatasetRejected"
    assert parse_bus_event(delivered) == event
    for q in ("validate", "train", "deploy"):
        assert _decoded(azurite, topo.queue(q).name) == []
    # On the wire it is base64 text, which our queue parser also accepts.
    raw = QueueClient.from_connection_string(azurite, topo.queue("events").name).peek_messages()
    assert not raw[0].content.lstrip().startswith("{")
    assert parse_bus_event(azure_queue_body(raw[0].content)) == event


def test_local_event_grid_matches_detail_fields(
    clients: AzureClients, azurite: str, grid_topology: Topology
) -> None:
    from shared.events import DriftDetected

    topo = grid_topology
    grid = LocalEventGrid(clients, topo)
    fields = {
        "dataset": "customers",
        "correlation_id": "c1",
        "check_id": "k1",
        "model_version": "1",
        "drifted_columns": ["age"],
        "drift_share": 0.5,
        "summary": {"container": "r", "key": "s.json"},
    }
    retrain = DriftDetected.model_validate({**fields, "action": "retrain"})
    assert grid.publish(retrain) == ["events", "train"]
    rollback = DriftDetected.model_validate({**fields, "action": "rollback"})
    assert grid.publish(rollback) == ["deploy", "events"]


def test_event_tap_reads_acks_and_releases(
    clients: AzureClients, azurite: str, grid_topology: Topology
) -> None:
    topo = build_topology(f"t{uuid.uuid4().hex[:8]}")
    clients.queues.create_queue(topo.queue("events").name)
    LocalEventGridBus(LocalEventGrid(clients, topo)).publish(sample_rejected())
    tap = StorageQueueEventTap(clients.queue(topo.queue("events").name), visibility_s=30)
    (first,) = tap.receive(wait_s=0)
    tap.release(first)
    (again,) = tap.receive(wait_s=0)  # visible at once after a release
    assert again.event == first.event
    tap.ack(again)
    assert tap.receive(wait_s=0) == []


def test_queue_alerts_land_in_the_alerts_queue(
    clients: AzureClients, azurite: str, grid_topology: Topology
) -> None:
    name = grid_topology.topic("alerts").name
    alert_id = QueueAlerts(clients.queue(name)).send("subject", "body", {"dataset": "d"})
    (got,) = _decoded(azurite, name)
    assert alert_id
    assert got == {"Subject": "subject", "Message": "body", "Attributes": {"dataset": "d"}}


def test_a_copy_larger_than_the_synchronous_limit_completes(clients: AzureClients) -> None:
    # Copy Blob From URL would refuse this size; Copy Blob must not (fact
    # azure.blob.sync_copy_max_bytes). Streamed in, so the test holds one block at a time.
    limit = int(value("azure.blob.sync_copy_max_bytes"))
    size = limit + 1024 * 1024
    container = f"t{uuid.uuid4().hex[:12]}"
    clients.blobs.create_container(container)
    block = bytes(range(256)) * 4096  # 1 MiB

    def chunks() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    src = ObjectRef(container=container, key="big/source.bin")
    dst = ObjectRef(container=container, key="big/copy.bin")
    clients.blobs.get_blob_client(container, src.key).upload_blob(chunks(), length=size)
    store = BlobObjectStore(clients.blobs)
    store.copy(src, dst, {"sha256": "x"})
    info = store.head(dst)
    assert info.size == size > limit
    assert info.metadata == {"sha256": "x"}
    assert store.read_prefix(dst, 4) == block[:4]
    clients.blobs.delete_container(container)
