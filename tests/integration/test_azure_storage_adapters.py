"""Azure adapters against real Azurite, through the same contracts as the AWS ones."""

from __future__ import annotations

import json
import uuid

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from shared.adapters.azure import (
    AzureClients,
    BlobObjectStore,
    StorageQueueBus,
    TableLineageStore,
    azure_clients,
)
from shared.ports import LineageStore, ObjectStore
from shared.settings import Settings
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


def test_storage_queue_bus_delivers_base64_envelopes(clients: AzureClients, azurite: str) -> None:
    name = f"t{uuid.uuid4().hex[:12]}"
    clients.queues.create_queue(name)
    bus = StorageQueueBus(clients.queue(name))
    event = sample_rejected()
    bus.publish(event)
    # Peek decoded, as the Functions host reads it (it decodes base64 first).
    decoded = QueueClient.from_connection_string(
        azurite, name, message_decode_policy=TextBase64DecodePolicy()
    ).peek_messages()
    assert json.loads(decoded[0].content)["source"] == "dhow.pipeline"
    # On the wire it is base64 text, which our queue parser also accepts.
    raw = QueueClient.from_connection_string(azurite, name).receive_message()
    assert raw is not None
    assert not raw.content.lstrip().startswith("{")
    envelope = azure_queue_body(raw.content)
    assert envelope["type"] == "DatasetRejected"
    assert parse_bus_event(envelope) == event
