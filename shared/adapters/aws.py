"""AWS adapters: S3, EventBridge, DynamoDB. Clients are injected.

``aws_client`` is the only place in Dhow that creates a boto3 client, and it
only ever creates one for the settings' pinned region (tests check that no
other module calls ``boto3.client``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from shared.adapters.aws_calls import instrument
from shared.cloud_facts import value as cloud_fact
from shared.constants import EVENT_SOURCE
from shared.errors import DhowError, EventParseError, ObjectMissing
from shared.events import ObjectRef, PipelineEvent
from shared.job_names import validation_job_name
from shared.lineage import FINISHED_STATUSES, from_stored, to_stored
from shared.ports import (
    AlertChannel,
    AlertInbox,
    DeliveredAlert,
    EventBus,
    EventTap,
    FinishedEntryImmutable,
    LineagePage,
    LineageRecord,
    LineageStore,
    MetricPoint,
    MetricsSink,
    ObjectChanged,
    ObjectInfo,
    ObjectPin,
    ObjectStore,
    TappedEvent,
    ValidationJobLauncher,
    ValidationJobRequest,
    ValidationJobState,
)
from shared.reasons import Reason
from shared.settings import Settings, check_aws_region
from shared.triggers import STAGED_INPUT_NAME, parse_bus_event

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_codedeploy import CodeDeployClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
    from mypy_boto3_service_quotas import ServiceQuotasClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient


@overload
def aws_client(service: Literal["s3"], settings: Settings) -> S3Client: ...
@overload
def aws_client(service: Literal["events"], settings: Settings) -> EventBridgeClient: ...
@overload
def aws_client(service: Literal["dynamodb"], settings: Settings) -> DynamoDBClient: ...
@overload
def aws_client(service: Literal["sqs"], settings: Settings) -> SQSClient: ...
@overload
def aws_client(service: Literal["sagemaker"], settings: Settings) -> SageMakerClient: ...
@overload
def aws_client(service: Literal["service-quotas"], settings: Settings) -> ServiceQuotasClient: ...
@overload
def aws_client(service: Literal["lambda"], settings: Settings) -> LambdaClient: ...
@overload
def aws_client(service: Literal["codedeploy"], settings: Settings) -> CodeDeployClient: ...
@overload
def aws_client(service: Literal["sns"], settings: Settings) -> SNSClient: ...
@overload
def aws_client(service: Literal["cloudwatch"], settings: Settings) -> CloudWatchClient: ...
@overload
def aws_client(service: Literal["scheduler"], settings: Settings) -> EventBridgeSchedulerClient: ...
@overload
def aws_client(service: Literal["sts"], settings: Settings) -> Any: ...  # no stubs installed
def aws_client(service: str, settings: Settings) -> Any:
    """A boto3 client in the pinned region (and at the local endpoint, when set).

    An S3 client never leaves the region: it refuses S3's answers that point at another
    region instead of following them (botocore's redirector would re-send the request,
    body and all, to a bucket of the same name elsewhere), and, when the settings know the
    stack's account, every request names it as the bucket's expected owner."""
    region = check_aws_region(settings.aws_region)
    kwargs: dict[str, Any] = {
        "region_name": region,
        "config": Config(retries={"mode": "standard", "max_attempts": 5}),
    }
    endpoint = settings.aws_endpoint_url
    if service == "dynamodb" and settings.aws_dynamodb_endpoint_url:
        endpoint = settings.aws_dynamodb_endpoint_url
    if service == "sagemaker" and settings.aws_sagemaker_endpoint_url:
        endpoint = settings.aws_sagemaker_endpoint_url
    if endpoint:
        kwargs["endpoint_url"] = endpoint
        if service == "s3":
            # LocalStack serves buckets by path; virtual hosts need DNS we do not run.
            kwargs["config"] = kwargs["config"].merge(Config(s3={"addressing_style": "path"}))
    client = boto3.client(service, **kwargs)  # type: ignore[call-overload]
    if service == "s3":
        _pin_s3_client(client, region, settings.aws_account_id)
    # Recorded only when DHOW_AWS_CALL_LOG is set (the integration tests' IAM check).
    return instrument(client)


class S3RegionRedirectRefused(DhowError):
    """S3 answered that the bucket lives in another region; the request was not re-sent."""

    reason = Reason.S3_REGION_REDIRECT_REFUSED


# What S3 answers a request for a bucket in another region (cloud facts: aws-s3.yaml);
# botocore's S3RegionRedirectorv2 acts on exactly these and re-sends the request there.
_REDIRECT = cloud_fact("aws.s3.wrong_region_answers")
_OWNER_PARAMS = cloud_fact("aws.s3.expected_bucket_owner_params")


def _pin_s3_client(client: Any, region: str, account: str | None) -> None:
    events = client.meta.events

    def refuse_redirect(
        request_dict: Mapping[str, Any],
        response: tuple[Any, Mapping[str, Any]] | None,
        operation: Any,
        **_: Any,
    ) -> None:
        if response is None:  # a transport error: retried as before
            return
        http, parsed = response
        error = parsed.get("Error", {})
        code = str(error.get("Code", ""))
        headers = parsed.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        elsewhere = headers.get(_REDIRECT["region_header"], region) != region
        redirected = (
            elsewhere
            or (http is not None and http.status_code in _REDIRECT["statuses"])
            or code in _REDIRECT["error_codes"]
            or (code == "AuthorizationHeaderMalformed" and "Region" in error)
            or (code in ("301", "400") and operation.name in ("HeadObject", "HeadBucket"))
        )
        if not redirected:
            return
        bucket = request_dict.get("context", {}).get("s3_redirect", {}).get("bucket", "?")
        answer = code or str(http.status_code if http is not None else "?")
        if elsewhere:
            answer += f", bucket in {headers[_REDIRECT['region_header']]}"
        raise S3RegionRedirectRefused(
            f"S3 {operation.name} on bucket {bucket!r} was answered as outside {region} "
            f"({answer}); not following it",
            hint=f"the bucket is not the stack's bucket in {region}: check the bucket name "
            "and the stage; Dhow never reads or writes outside its region",
        )

    # First, so it answers before botocore's redirector (registered on the same event).
    events.register_first("needs-retry.s3", refuse_redirect, unique_id="dhow-refuse-redirect")
    if account is None:
        return

    def name_owner(params: dict[str, Any], model: Any, **_: Any) -> None:
        members = model.input_shape.members if model.input_shape is not None else {}
        for param in _OWNER_PARAMS:
            if param in members:
                params.setdefault(param, account)

    events.register_first(
        "before-parameter-build.s3", name_owner, unique_id="dhow-expected-bucket-owner"
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class StorageAccessDenied(DhowError):
    """S3 refused to say whether an object is there (HTTP 403)."""

    reason = Reason.STORAGE_ACCESS_DENIED


def _full_object_sha256(head: Mapping[str, Any]) -> str | None:
    """The object's SHA-256 as hex, when S3 vouches that it covers the whole object.

    A multipart upload's SHA-256 is COMPOSITE: a checksum of the parts' checksums,
    written ``<base64>-<parts>``, which is no hash of the bytes; only FULL_OBJECT is. A
    response without ChecksumType (older objects, emulators) is trusted only in the
    single-part form: 32 bytes of base64, no ``-<parts>`` suffix."""
    value, kind = head.get("ChecksumSHA256"), head.get("ChecksumType")
    if not value or kind not in (None, "FULL_OBJECT"):
        return None
    try:
        digest = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == hashlib.sha256().digest_size else None


def _pin_params(pin: ObjectPin | None) -> dict[str, Any]:
    """The parameters that hold a read to the pinned bytes (fact aws.s3.pinned_reads): a
    version id where the bucket keeps versions (a version never changes, so it needs no
    condition), else If-Match on the ETag, which S3 answers with 412 for other bytes."""
    if pin is None:
        return {}
    if pin.version_id:
        return {"VersionId": pin.version_id}
    return {"IfMatch": f'"{pin.etag}"'} if pin.etag else {}


def _changed(exc: ClientError, ref: ObjectRef) -> ObjectChanged | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if _error_code(exc) in ("412", "PreconditionFailed") or status == 412:
        return ObjectChanged(
            f"s3://{ref.uri} was overwritten while it was being read",
            hint="the upload that replaced it is ingested from its own event",
        )
    return None


class S3ObjectStore(ObjectStore):
    """``ObjectStore`` on S3."""

    def __init__(self, client: S3Client) -> None:
        self._s3 = client

    def head(self, ref: ObjectRef, *, pin: ObjectPin | None = None) -> ObjectInfo:
        try:
            # ChecksumMode asks S3 for the checksum it verified at upload, if any.
            r = self._s3.head_object(
                Bucket=ref.container, Key=ref.key, ChecksumMode="ENABLED", **_pin_params(pin)
            )
        except ClientError as exc:
            if (changed := _changed(exc, ref)) is not None:
                raise changed from exc
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
                raise ObjectMissing(f"no object at s3://{ref.uri}") from exc
            if _error_code(exc) in ("403", "AccessDenied", "Forbidden"):
                raise StorageAccessDenied(
                    f"S3 refused HEAD of s3://{ref.uri}",
                    hint="without s3:ListBucket on the bucket S3 answers a missing key with "
                    "403; grant it (shared/topology.py) where the code tests for absence",
                ) from exc
            raise
        return ObjectInfo(
            size=r["ContentLength"],
            etag=r["ETag"].strip('"'),
            metadata=r.get("Metadata", {}),
            sha256=_full_object_sha256(r),
            # "null" (written while versioning was off) is overwritten in place: it pins
            # nothing, so reads fall back to If-Match (fact aws.s3.event_version_id).
            version_id=None if r.get("VersionId") in (None, "", "null") else r["VersionId"],
        )

    def read_prefix(self, ref: ObjectRef, length: int, *, pin: ObjectPin | None = None) -> bytes:
        try:
            r = self._s3.get_object(
                Bucket=ref.container,
                Key=ref.key,
                Range=f"bytes=0-{length - 1}",
                **_pin_params(pin),
            )
        except ClientError as exc:
            if (changed := _changed(exc, ref)) is not None:
                raise changed from exc
            if _error_code(exc) == "InvalidRange":  # empty object
                return b""
            if _error_code(exc) in ("404", "NoSuchKey", "NoSuchVersion"):
                raise ObjectMissing(f"no object at s3://{ref.uri}") from exc
            raise
        return r["Body"].read()

    def iter_chunks(
        self, ref: ObjectRef, chunk_size: int = 1024 * 1024, *, pin: ObjectPin | None = None
    ) -> Iterator[bytes]:
        try:
            r = self._s3.get_object(Bucket=ref.container, Key=ref.key, **_pin_params(pin))
        except ClientError as exc:
            if (changed := _changed(exc, ref)) is not None:
                raise changed from exc
            if _error_code(exc) in ("404", "NoSuchKey", "NoSuchVersion"):
                raise ObjectMissing(f"no object at s3://{ref.uri}") from exc
            raise
        body = r["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def put_bytes(
        self,
        ref: ObjectRef,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> None:
        # PutObject's ContentType and ContentDisposition are what S3 answers a GET with
        # (fact aws.s3.object_response_headers); unset, S3 serves binary/octet-stream.
        headers = {"ContentType": content_type, "ContentDisposition": content_disposition}
        self._s3.put_object(
            Bucket=ref.container,
            Key=ref.key,
            Body=data,
            Metadata=dict(metadata or {}),
            **{k: v for k, v in headers.items() if v is not None},  # type: ignore[arg-type]
        )

    def upload_file(
        self,
        ref: ObjectRef,
        path: Path,
        metadata: Mapping[str, str] | None = None,
        *,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        callback = None
        if on_sent is not None:
            # boto3's Callback gets the bytes of each part as sent, from the transfer's
            # worker threads: summed under a lock, so on_sent sees one growing total.
            lock, sent = threading.Lock(), [0]

            def callback(n: int) -> None:
                with lock:
                    sent[0] += n
                    on_sent(sent[0])

        self._s3.upload_file(
            str(path),
            ref.container,
            ref.key,
            ExtraArgs={"Metadata": dict(metadata or {})},
            Callback=callback,
        )

    def delete(self, ref: ObjectRef) -> None:
        self._s3.delete_object(Bucket=ref.container, Key=ref.key)

    def list_keys(self, container: str, prefix: str) -> Iterator[str]:
        # ListObjectsV2 returns keys in UTF-8 binary order, which is lexical for our keys.
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=container, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def copy(
        self,
        source: ObjectRef,
        target: ObjectRef,
        metadata: Mapping[str, str] | None = None,
        *,
        source_pin: ObjectPin | None = None,
    ) -> None:
        copy_source: dict[str, Any] = {"Bucket": source.container, "Key": source.key}
        condition: dict[str, Any] = {}
        pinned = _pin_params(source_pin)
        if "VersionId" in pinned:
            copy_source["VersionId"] = pinned["VersionId"]
        elif "IfMatch" in pinned:
            condition["CopySourceIfMatch"] = pinned["IfMatch"]
        try:
            self._s3.copy_object(
                Bucket=target.container,
                Key=target.key,
                CopySource=copy_source,  # type: ignore[arg-type]
                Metadata=dict(metadata or {}),
                MetadataDirective="REPLACE",
                # Not the uploader's tags (COPY is the default, aws.s3.copy_tagging_default):
                # copying them would also need s3:GetObjectTagging and s3:PutObjectTagging,
                # which no function holds, so a tagged upload would fail into the DLQ.
                TaggingDirective=cloud_fact("aws.s3.copy_tagging_default")["dhow_sends"],
                **condition,
            )
        except ClientError as exc:
            if (changed := _changed(exc, source)) is not None:
                raise changed from exc
            raise


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
                reason=Reason.EVENT_PUBLISH_FAILED,
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
        # Keyed by dataset (pk) and record id (sk); every column a string but the revision.
        columns = to_stored(record)
        return {
            "pk": {"S": record.dataset},
            "sk": {"S": record.record_id},
            **{k: {"N": str(v)} if k == "revision" else {"S": v} for k, v in columns.items()},
        }

    @staticmethod
    def _record(item: Mapping[str, Any]) -> LineageRecord:
        columns = {k: next(iter(v.values())) for k, v in item.items()}
        return from_stored(columns.pop("pk"), columns.pop("sk"), columns)

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

    @staticmethod
    def replace_condition(record: LineageRecord, expected_revision: int) -> dict[str, Any]:
        """The PutItem condition of ``replace``: the revision read, the row's own kind, and
        a status that is not finished for that kind (``FINISHED_STATUSES``), all checked by
        DynamoDB in the one write, so a finished row is never written over. Names go
        through aliases, which any attribute name may use (a reserved word or not)."""
        finished = sorted(FINISHED_STATUSES.get(record.kind, frozenset()))
        limit = int(cloud_fact("aws.dynamodb.condition_in_max_operands"))
        if len(finished) > limit:  # a table change the test would catch first
            raise DhowError(f"{record.kind} has more finished statuses than IN allows")
        values: dict[str, Any] = {
            ":r": {"N": str(expected_revision)},
            ":k": {"S": record.kind},
            **{f":f{i}": {"S": status} for i, status in enumerate(finished)},
        }
        condition = "revision = :r AND #k = :k"
        if finished:
            condition += f" AND NOT (#s IN ({', '.join(f':f{i}' for i in range(len(finished)))}))"
        return {
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#k": "kind", "#s": "status"}
            if finished
            else {"#k": "kind"},
            "ExpressionAttributeValues": values,
        }

    def replace(self, record: LineageRecord, expected_revision: int) -> bool:
        new = record.model_copy(update={"revision": expected_revision + 1})
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=self._item(new),
                # The refused item comes back with the error (fact
                # aws.dynamodb.condition_failure_returns_item): why it was refused.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **self.replace_condition(record, expected_revision),
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            response: Any = exc.response  # the error's own members, Item among them
            item = response.get("Item")
            stored = self._record(item) if item else self.get(record.dataset, record.record_id)
            if stored is None or stored.revision != expected_revision:
                return False  # another writer won, or no row: the ordinary lost race
            raise FinishedEntryImmutable(
                f"{stored.kind} row {stored.record_id} of {stored.dataset} is "
                f"{stored.status}: a finished entry is not written over",
                hint="record what happened next in a row of its own",
            ) from None
        return True

    def scan(self, cursor: str | None = None, page_size: int = 500) -> LineagePage:
        # One Scan request: at most Limit items or 1 MB, and LastEvaluatedKey where the
        # next one starts (fact aws.dynamodb.scan_page).
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Limit": page_size,
            "ConsistentRead": True,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = json.loads(cursor)
        r = self._ddb.scan(**kwargs)
        last = r.get("LastEvaluatedKey")
        return LineagePage(
            records=[self._record(i) for i in r.get("Items", [])],
            next_cursor=json.dumps(last, sort_keys=True) if last else None,
        )

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


class _SqsReader:
    """One SQS queue read by a watcher: a batch at a time, long-polled, deleted by handle."""

    def __init__(self, client: SQSClient, queue_name: str) -> None:
        self._sqs = client
        self._url = client.get_queue_url(QueueName=queue_name)["QueueUrl"]

    def _batch(self, wait_s: int) -> list[tuple[str, str]]:
        """(body, receipt handle) of up to 10 messages."""
        r = self._sqs.receive_message(
            QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
        )
        return [(m["Body"], m["ReceiptHandle"]) for m in r.get("Messages", [])]

    def _delete(self, handle: str) -> None:
        self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=handle)


class SqsEventTap(_SqsReader, EventTap):
    """``EventTap`` on the SQS queue that an EventBridge rule copies every pipeline event to."""

    def receive(self, wait_s: int = 1) -> list[TappedEvent]:
        out = []
        for body, handle in self._batch(wait_s):
            try:
                out.append(TappedEvent(event=parse_bus_event(body), handle=handle))
            except EventParseError:
                continue  # not ours to judge; the redrive policy will move it to the DLQ
        return out

    def ack(self, tapped: TappedEvent) -> None:
        self._delete(tapped.handle)

    def release(self, tapped: TappedEvent) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=tapped.handle, VisibilityTimeout=0
        )


class SqsAlertInbox(_SqsReader, AlertInbox):
    """``AlertInbox`` on an SQS queue subscribed to the alerts topic (SNS's JSON envelope,
    not raw delivery: the body carries Subject and Message)."""

    def receive(self, wait_s: int = 1) -> list[DeliveredAlert]:
        out = []
        for body, handle in self._batch(wait_s):
            envelope = json.loads(body)
            out.append(
                DeliveredAlert(
                    subject=envelope.get("Subject"), message=envelope.get("Message"), handle=handle
                )
            )
        return out

    def ack(self, alert: DeliveredAlert) -> None:
        self._delete(alert.handle)


@dataclass(frozen=True)
class ProcessingJobConfig:
    """Deploy-time facts a SageMaker Processing job needs; all set by the stack."""

    image_uri: str
    role_arn: str
    name_prefix: str  # dhow-<stage>: names, the IAM scope and the end-of-job rule match on it
    instance_type: str = "ml.m5.4xlarge"
    volume_gb: int = 100
    kms_key_id: str | None = None
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    max_runtime_s: int = 4 * 3600
    environment: tuple[tuple[str, str], ...] = ()


# SageMaker's ProcessingJobName: 1 to 63 of letters, digits and single or repeated hyphens,
# starting and ending with a letter or digit (botocore's model; tests check against it).
PROCESSING_JOB_NAME_MAX = int(cloud_fact("aws.sagemaker.processing_job_name")["max_length"])
_NOT_NAME = re.compile(r"[^a-zA-Z0-9]+")
# Where SageMaker puts the staged object: an S3Prefix input lands under LocalPath with the
# object's key relative to the prefix, which for a prefix that is the whole key is its name.
STAGED_LOCAL_DIR = "/opt/ml/processing/input/staged"


def processing_job_name(request: ValidationJobRequest, name_prefix: str) -> str:
    """``<name_prefix>-validate-<dataset>-<sha12>-<tag>`` (``shared.job_names``), in
    SageMaker's limits; the stage's prefix is never cut."""
    return validation_job_name(
        request,
        f"{name_prefix}-validate-",
        max_length=PROCESSING_JOB_NAME_MAX,
        not_name=_NOT_NAME,
        lower=False,
        too_long=f"no room for the dataset in a processing job name under {name_prefix!r}",
    )


class SageMakerValidationJobs(ValidationJobLauncher):
    """``ValidationJobLauncher`` on SageMaker Processing, in the pinned region."""

    def __init__(self, client: SageMakerClient, config: ProcessingJobConfig) -> None:
        self._sm = client
        self._cfg = config

    def request(self, req: ValidationJobRequest) -> dict[str, Any]:
        """The exact CreateProcessingJob parameters (tested field by field)."""
        cfg = self._cfg
        staged_uri = f"s3://{req.staged.container}/{req.staged.key}"
        local_file = f"{STAGED_LOCAL_DIR}/{req.staged.key.rsplit('/', 1)[-1]}"
        params: dict[str, Any] = {
            "ProcessingJobName": processing_job_name(req, cfg.name_prefix),
            "RoleArn": cfg.role_arn,
            "AppSpecification": {
                "ImageUri": cfg.image_uri,
                "ContainerEntrypoint": ["python", "-m", "shared.jobs.validate"],
                "ContainerArguments": [
                    "--dataset",
                    req.dataset,
                    "--sha256",
                    req.sha256,
                    "--staged",
                    staged_uri,
                    "--source",
                    f"s3://{req.source.container}/{req.source.key}",
                    "--size-bytes",
                    str(req.size_bytes),
                    "--correlation-id",
                    req.correlation_id,
                    "--input",
                    local_file,
                ],
            },
            "ProcessingInputs": [
                {
                    "InputName": STAGED_INPUT_NAME,
                    "S3Input": {
                        "S3Uri": staged_uri,
                        "LocalPath": STAGED_LOCAL_DIR,
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                        "S3DataDistributionType": "FullyReplicated",
                    },
                }
            ],
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": cfg.instance_type,
                    "VolumeSizeInGB": cfg.volume_gb,
                    **({"VolumeKmsKeyId": cfg.kms_key_id} if cfg.kms_key_id else {}),
                }
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": cfg.max_runtime_s},
            "Environment": dict(cfg.environment),
            "Tags": [
                {"Key": "dhow:dataset", "Value": req.dataset},
                {"Key": "dhow:sha256", "Value": req.sha256},
                {"Key": "dhow:spec-version", "Value": req.spec_version},
            ],
        }
        if cfg.subnets:
            params["NetworkConfig"] = {
                "EnableInterContainerTrafficEncryption": True,
                "VpcConfig": {
                    "Subnets": list(cfg.subnets),
                    "SecurityGroupIds": list(cfg.security_groups),
                },
            }
        return params

    def launch(self, request: ValidationJobRequest) -> str:
        params = self.request(request)
        try:
            self._sm.create_processing_job(**params)
        except ClientError as exc:
            # Same name, same request: a redelivery found the job it already started.
            if _error_code(exc) != "ResourceInUse" and "already exists" not in str(exc):
                raise
        return str(params["ProcessingJobName"])

    @property
    def max_runtime_s(self) -> int:
        # The request's StoppingCondition.MaxRuntimeInSeconds: SageMaker stops the job then.
        return self._cfg.max_runtime_s

    def state(self, job_name: str) -> ValidationJobState:
        """DescribeProcessingJob: ProcessingJobStatus (InProgress, Completed, Failed,
        Stopping, Stopped; fact aws.sagemaker.processing_job_status) and FailureReason."""
        try:
            d = self._sm.describe_processing_job(ProcessingJobName=job_name)
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFound":
                return ValidationJobState(job_name=job_name, status="Missing")
            raise
        return ValidationJobState(
            job_name=job_name,
            status=d["ProcessingJobStatus"],
            failure_reason=d.get("FailureReason") or d.get("ExitMessage"),
        )

    def stop(self, job_name: str) -> None:
        try:
            self._sm.stop_processing_job(ProcessingJobName=job_name)
        except ClientError as exc:
            # Stopping a job that has ended (or is stopping) is a ValidationException; the
            # caller reads the state again, so that is not an error here.
            if _error_code(exc) not in {"ValidationException", "ResourceNotFound"}:
                raise


class CloudWatchMetrics(MetricsSink):
    """``MetricsSink`` on CloudWatch custom metrics."""

    def __init__(self, client: CloudWatchClient) -> None:
        self._cw = client

    def put(self, namespace: str, points: list[MetricPoint]) -> None:
        # PutMetricData takes at most 1,000 values a call.
        for start in range(0, len(points), 1000):
            self._cw.put_metric_data(
                Namespace=namespace,
                MetricData=[
                    {
                        "MetricName": p.name,
                        "Value": p.value,
                        "Unit": p.unit,
                        "Dimensions": [
                            {"Name": k, "Value": v} for k, v in sorted(p.dimensions.items())
                        ],
                    }
                    for p in points[start : start + 1000]
                ],
            )


class SnsAlerts(AlertChannel):
    """``AlertChannel`` on an SNS topic (email, chat or paging subscribers)."""

    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        self._sns = client
        self._topic = topic_arn

    def send(self, subject: str, message: str, attributes: Mapping[str, str]) -> str:
        # SNS subjects are at most 100 printable ASCII characters.
        safe = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in subject)
        r = self._sns.publish(
            TopicArn=self._topic,
            Subject=safe[:100],
            Message=message,
            MessageAttributes={
                k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
            },
        )
        return r["MessageId"]


def sts_caller_arn(settings: Settings, sts: Any | None = None) -> str:
    """The ARN STS GetCallerIdentity returns for this process's credentials (fact
    aws.sts.get_caller_identity), or a ``no_credentials`` error saying what to do."""
    if sts is None:
        # The region-pinned factory: STS answers at me-central-1's regional endpoint.
        sts = aws_client("sts", settings)
    try:
        return str(sts.get_caller_identity()["Arn"])
    except Exception as exc:  # botocore's NoCredentialsError, ClientError and kin
        raise DhowError(
            f"AWS does not say who you are: {exc}".splitlines()[0],
            hint="log in (aws sso login, or set a profile): actions are recorded "
            "under the identity AWS authenticates",
            reason=Reason.NO_CREDENTIALS,
        ) from exc
