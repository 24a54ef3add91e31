"""AWS adapters: S3, EventBridge, DynamoDB. Clients are injected.

``aws_client`` is the only place in Dhow that creates a boto3 client, and it
only ever creates one for the settings' pinned region (tests check that no
other module calls ``boto3.client``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from shared.constants import EVENT_SOURCE
from shared.errors import DhowError, EventParseError, ObjectMissing
from shared.events import ObjectRef, PipelineEvent
from shared.ports import (
    EventBus,
    EventTap,
    LineageRecord,
    LineageStore,
    ObjectInfo,
    ObjectStore,
    TappedEvent,
)
from shared.settings import Settings, check_aws_region
from shared.triggers import parse_bus_event

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@overload
def aws_client(service: Literal["s3"], settings: Settings) -> S3Client: ...
@overload
def aws_client(service: Literal["events"], settings: Settings) -> EventBridgeClient: ...
@overload
def aws_client(service: Literal["dynamodb"], settings: Settings) -> DynamoDBClient: ...
@overload
def aws_client(service: Literal["sqs"], settings: Settings) -> SQSClient: ...
def aws_client(service: str, settings: Settings) -> Any:
    """A boto3 client in the pinned region (and at the local endpoint, when set)."""
    region = check_aws_region(settings.aws_region)
    kwargs: dict[str, Any] = {
        "region_name": region,
        "config": Config(retries={"mode": "standard", "max_attempts": 5}),
    }
    endpoint = settings.aws_endpoint_url
    if service == "dynamodb" and settings.aws_dynamodb_endpoint_url:
        endpoint = settings.aws_dynamodb_endpoint_url
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        if service == "s3":
            # LocalStack serves buckets by path; virtual hosts need DNS we do not run.
            kwargs["config"] = kwargs["config"].merge(Config(s3={"addressing_style": "path"}))
    return boto3.client(service, **kwargs)  # type: ignore[call-overload]


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ObjectStore(ObjectStore):
    """``ObjectStore`` on S3."""

    def __init__(self, client: S3Client) -> None:
        self._s3 = client

    def head(self, ref: ObjectRef) -> ObjectInfo:
        try:
            r = self._s3.head_object(Bucket=ref.container, Key=ref.key)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(f"no object at s3://{ref.uri}") from exc
            raise
        return ObjectInfo(
            size=r["ContentLength"], etag=r["ETag"].strip('"'), metadata=r.get("Metadata", {})
        )

    def read_prefix(self, ref: ObjectRef, length: int) -> bytes:
        try:
            r = self._s3.get_object(
                Bucket=ref.container, Key=ref.key, Range=f"bytes=0-{length - 1}"
            )
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":  # empty object
                return b""
            if _error_code(exc) in ("404", "NoSuchKey"):
                raise ObjectMissing(f"no object at s3://{ref.uri}") from exc
            raise
        return r["Body"].read()

    def iter_chunks(self, ref: ObjectRef, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        try:
            r = self._s3.get_object(Bucket=ref.container, Key=ref.key)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey"):
                raise ObjectMissing(f"no object at s3://{ref.uri}") from exc
            raise
        body = r["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def put_bytes(
        self, ref: ObjectRef, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> None:
        self._s3.put_object(
            Bucket=ref.container, Key=ref.key, Body=data, Metadata=dict(metadata or {})
        )

    def upload_file(
        self, ref: ObjectRef, path: Path, metadata: Mapping[str, str] | None = None
    ) -> None:
        self._s3.upload_file(
            str(path), ref.container, ref.key, ExtraArgs={"Metadata": dict(metadata or {})}
        )

    def copy(
        self, source: ObjectRef, target: ObjectRef, metadata: Mapping[str, str] | None = None
    ) -> None:
        self._s3.copy_object(
            Bucket=target.container,
            Key=target.key,
            CopySource={"Bucket": source.container, "Key": source.key},
            Metadata=dict(metadata or {}),
            MetadataDirective="REPLACE",
        )


class EventBridgeBus(EventBus):
    """``EventBus`` on an EventBridge custom bus."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._events = client
        self._bus = bus_name

    def publish(self, event: PipelineEvent) -> None:
        r = self._events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": event.event_type,
                    "Detail": event.model_dump_json(),
                    "EventBusName": self._bus,
                    "Resources": [],
                }
            ]
        )
        if r.get("FailedEntryCount"):
            entry = r["Entries"][0]
            raise DhowError(
                f"EventBridge refused {event.event_type}: {entry.get('ErrorCode')}",
                hint=str(entry.get("ErrorMessage", "")),
                reason="event_publish_failed",
            )


class DynamoLineageStore(LineageStore):
    """``LineageStore`` on a DynamoDB table with keys ``pk`` (dataset) and ``sk`` (record id)."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    @staticmethod
    def create_table(client: DynamoDBClient, table_name: str) -> bool:
        """Create the table this store expects; False if it already exists."""
        try:
            client.create_table(
                TableName=table_name,
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if _error_code(exc) == "ResourceInUseException":
                return False
            raise
        client.get_waiter("table_exists").wait(
            TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        return True

    @staticmethod
    def _item(record: LineageRecord) -> dict[str, Any]:
        return {
            "pk": {"S": record.dataset},
            "sk": {"S": record.record_id},
            "kind": {"S": record.kind},
            "status": {"S": record.status},
            "attributes": {"S": json.dumps(record.attributes, default=str, sort_keys=True)},
            "created_at": {"S": record.created_at.isoformat()},
            "updated_at": {"S": record.updated_at.isoformat()},
            "revision": {"N": str(record.revision)},
        }

    @staticmethod
    def _record(item: Mapping[str, Any]) -> LineageRecord:
        return LineageRecord(
            dataset=item["pk"]["S"],
            record_id=item["sk"]["S"],
            kind=item["kind"]["S"],
            status=item["status"]["S"],
            attributes=json.loads(item["attributes"]["S"]),
            created_at=datetime.fromisoformat(item["created_at"]["S"]),
            updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
            revision=int(item["revision"]["N"]),
        )

    def put_if_absent(self, record: LineageRecord) -> bool:
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=self._item(record),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get(self, dataset: str, record_id: str) -> LineageRecord | None:
        r = self._ddb.get_item(
            TableName=self._table,
            Key={"pk": {"S": dataset}, "sk": {"S": record_id}},
            ConsistentRead=True,
        )
        return self._record(r["Item"]) if "Item" in r else None

    def replace(self, record: LineageRecord, expected_revision: int) -> bool:
        new = record.model_copy(update={"revision": expected_revision + 1})
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=self._item(new),
                ConditionExpression="revision = :r",
                ExpressionAttributeValues={":r": {"N": str(expected_revision)}},
            )
        except ClientError as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def list(self, dataset: str) -> list[LineageRecord]:
        rows: list[LineageRecord] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": dataset}},
        }
        while True:
            r = self._ddb.query(**kwargs)
            rows.extend(self._record(i) for i in r.get("Items", []))
            if "LastEvaluatedKey" not in r:
                break
            kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]
        return sorted(rows, key=lambda row: row.created_at)


class SqsEventTap(EventTap):
    """``EventTap`` on the SQS queue that an EventBridge rule copies every pipeline event to."""

    def __init__(self, client: SQSClient, queue_name: str) -> None:
        self._sqs = client
        self._url = client.get_queue_url(QueueName=queue_name)["QueueUrl"]

    def receive(self, wait_s: int = 1) -> list[TappedEvent]:
        r = self._sqs.receive_message(
            QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
        )
        out = []
        for m in r.get("Messages", []):
            try:
                out.append(TappedEvent(event=parse_bus_event(m["Body"]), handle=m["ReceiptHandle"]))
            except EventParseError:
                continue  # not ours to judge; the redrive policy will move it to the DLQ
        return out

    def ack(self, tapped: TappedEvent) -> None:
        self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=tapped.handle)

    def release(self, tapped: TappedEvent) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=tapped.handle, VisibilityTimeout=0
        )
