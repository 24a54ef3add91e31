"""AWS adapters against moto (in-process AWS), through the same contract as every adapter."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from moto import mock_aws

from shared.adapters.aws import DynamoLineageStore, EventBridgeBus, S3ObjectStore, aws_client
from shared.events import DatasetRejected
from shared.ports import LineageStore, ObjectStore
from shared.settings import Settings
from tests.helpers import MemoryLineage, MemoryStore, sample_rejected
from tests.port_contracts import LineageStoreContract, ObjectStoreContract

SETTINGS = Settings()


@pytest.fixture(autouse=True)
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        yield


class TestS3ObjectStore(ObjectStoreContract):
    @pytest.fixture
    def container(self) -> str:
        aws_client("s3", SETTINGS).create_bucket(
            Bucket="raw", CreateBucketConfiguration={"LocationConstraint": "me-central-1"}
        )
        return "raw"

    @pytest.fixture
    def store(self) -> ObjectStore:
        return S3ObjectStore(aws_client("s3", SETTINGS))


class TestMemoryStore(ObjectStoreContract):
    """The fake the unit tests use must keep the same contract."""

    @pytest.fixture
    def container(self) -> str:
        return "raw"

    @pytest.fixture
    def store(self) -> ObjectStore:
        return MemoryStore()


class TestDynamoLineageStore(LineageStoreContract):
    @pytest.fixture
    def lineage(self) -> LineageStore:
        ddb = aws_client("dynamodb", SETTINGS)
        assert DynamoLineageStore.create_table(ddb, "lineage")
        assert not DynamoLineageStore.create_table(ddb, "lineage")  # idempotent
        return DynamoLineageStore(ddb, "lineage")


class TestMemoryLineage(LineageStoreContract):
    @pytest.fixture
    def lineage(self) -> LineageStore:
        return MemoryLineage()


def test_eventbridge_bus_sends_the_typed_event_to_the_pipeline_bus() -> None:
    events, sqs = aws_client("events", SETTINGS), aws_client("sqs", SETTINGS)
    events.create_event_bus(Name="pipe")
    url = sqs.create_queue(QueueName="tap")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="all", EventBusName="pipe", EventPattern=json.dumps({"source": ["dhow.pipeline"]})
    )
    events.put_targets(Rule="all", EventBusName="pipe", Targets=[{"Id": "t", "Arn": arn}])
    event = sample_rejected()
    EventBridgeBus(events, "pipe").publish(event)
    [msg] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    body = json.loads(msg["Body"])
    assert (body["source"], body["detail-type"]) == ("dhow.pipeline", "DatasetRejected")
    assert DatasetRejected.model_validate(body["detail"]) == event
