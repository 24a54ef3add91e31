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


def test_head_trusts_only_a_full_object_sha256() -> None:
    import base64
    import hashlib

    from shared.cloud_facts import value
    from shared.events import ObjectRef

    rule = value("aws.s3.full_object_sha256")
    s3 = aws_client("s3", SETTINGS)
    s3.create_bucket(Bucket="raw", CreateBucketConfiguration={"LocationConstraint": "me-central-1"})
    store = S3ObjectStore(s3)
    data = b"a,b\n1,2\n"
    # A single PUT with a SHA-256: S3 checks it and keeps it as the whole object's.
    s3.put_object(Bucket="raw", Key="one.csv", Body=data, ChecksumAlgorithm="SHA256")
    assert store.head(ObjectRef(container="raw", key="one.csv")).sha256 == (
        hashlib.sha256(data).hexdigest()
    )
    # No checksum asked for: nothing to trust, ingest streams.
    s3.put_object(Bucket="raw", Key="plain.csv", Body=data)
    assert store.head(ObjectRef(container="raw", key="plain.csv")).sha256 is None
    # What a multipart upload's SHA-256 is: a checksum of part checksums, never trusted.
    part = hashlib.sha256(data).digest()
    composite = base64.b64encode(hashlib.sha256(part).digest()).decode() + "-1"
    from shared.adapters.aws import _full_object_sha256

    head = {"ChecksumSHA256": composite, "ChecksumType": rule["multipart_sha256_type"]}
    assert _full_object_sha256(head) is None
    assert _full_object_sha256({"ChecksumSHA256": composite}) is None  # the -N form, untyped
    whole = base64.b64encode(part).decode()
    assert _full_object_sha256({"ChecksumSHA256": whole, "ChecksumType": "COMPOSITE"}) is None
    assert _full_object_sha256({"ChecksumSHA256": whole, "ChecksumType": rule["trusted_type"]})


def test_head_asks_for_the_checksum_and_names_a_403() -> None:
    from botocore.stub import Stubber

    from shared.adapters.aws import StorageAccessDenied
    from shared.cloud_facts import value
    from shared.events import ObjectRef

    s3 = aws_client("s3", SETTINGS)
    expected = {
        "Bucket": "raw",
        "Key": "k",
        "ChecksumMode": value("aws.s3.full_object_sha256")["checksum_mode"],
    }
    with Stubber(s3) as stub:
        stub.add_client_error("head_object", "403", "Forbidden", 403, expected_params=expected)
        with pytest.raises(StorageAccessDenied) as info:
            S3ObjectStore(s3).head(ObjectRef(container="raw", key="k"))
    assert "s3:ListBucket" in info.value.hint


def test_the_staged_copy_does_not_carry_the_uploader_s_tags() -> None:
    """CopyObject copies the source's tags unless told otherwise (fact
    aws.s3.copy_tagging_default), which in the cloud also needs s3:GetObjectTagging and
    s3:PutObjectTagging that no function holds: a tagged upload would have failed into
    the DLQ. The copy replaces them with none."""
    from shared.cloud_facts import value
    from shared.events import ObjectRef

    assert value("aws.s3.copy_tagging_default")["default"] == "COPY"
    s3 = aws_client("s3", SETTINGS)
    for bucket in ("raw", "staging"):
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "me-central-1"}
        )
    s3.put_object(Bucket="raw", Key="d.csv", Body=b"a\n1\n", Tagging="owner=mallory&x=1")
    S3ObjectStore(s3).copy(
        ObjectRef(container="raw", key="d.csv"), ObjectRef(container="staging", key="d.csv")
    )
    assert s3.get_object_tagging(Bucket="staging", Key="d.csv")["TagSet"] == []
    assert s3.get_object(Bucket="staging", Key="d.csv")["Body"].read() == b"a\n1\n"


def test_a_null_version_pins_nothing() -> None:
    """An object written before versioning was on has the version id "null", which a later
    PUT overwrites in place (fact aws.s3.event_version_id): HEAD reports no version, so
    reads are pinned by ETag instead. (moto omits the version of such an object; S3's
    answer is stubbed through botocore's own model.)"""
    from botocore.stub import Stubber

    from shared.events import ObjectRef

    s3 = aws_client("s3", SETTINGS)
    store = S3ObjectStore(s3)
    with Stubber(s3) as stub:
        for version in ("null", "3sL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY"):
            stub.add_response(
                "head_object",
                {"ContentLength": 4, "ETag": '"abc"', "VersionId": version, "Metadata": {}},
            )
        assert store.head(ObjectRef(container="raw", key="d.csv")).version_id is None
        pinned = store.head(ObjectRef(container="raw", key="d.csv"))
    assert pinned.version_id == "3sL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY"
    assert pinned.etag == "abc"
