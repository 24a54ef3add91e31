"""Azure adapters: Blob storage, Event Grid, Table storage, Storage queues for the event
tap and alerts. Clients are injected. (The local platform's stand-in for Event Grid is
``dhow_local.event_grid``.)"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.messaging import CloudEvent
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from shared.adapters.azure_calls import recording
from shared.cloud_facts import value as cloud_fact
from shared.constants import (
    AZURE_STORAGE_ACCOUNT,
    AZURE_STORAGE_CONNECTION_STRING,
    EVENT_SOURCE,
)
from shared.errors import ConfigError, DhowError, EventParseError, ObjectMissing
from shared.events import ObjectRef, PipelineEvent
from shared.lineage import from_stored, is_finished, to_stored
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
)
from shared.reasons import Reason
from shared.settings import Settings, check_azure_location
from shared.triggers import azure_queue_body, parse_bus_event

if TYPE_CHECKING:
    from azure.eventgrid import EventGridPublisherClient


@dataclass(frozen=True)
class AzureClients:
    blobs: BlobServiceClient
    queues: QueueServiceClient
    tables: TableServiceClient
    connection_string: str | None = None
    credential: Any = None  # the managed identity's, when there is no connection string
    # Client keywords that record calls (azure_calls.recording); empty in the cloud.
    queue_hooks: Mapping[str, Any] = field(default_factory=dict)

    def queue(self, name: str) -> QueueClient:
        """A queue client that writes and reads base64, as the Functions host does.

        (``QueueServiceClient.get_queue_client`` does not pass its message
        policies on, so the client is built here with them.)
        """
        policies: dict[str, Any] = {
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
            **self.queue_hooks,
        }
        if self.connection_string:
            return QueueClient.from_connection_string(self.connection_string, name, **policies)
        return QueueClient(self.queues.url, name, credential=self.credential, **policies)


def azure_clients(settings: Settings) -> AzureClients:
    """The storage clients for the settings' account: by connection string (Azurite, or
    a key someone chose to use), or by the stack's account name with the managed identity
    (the function app; no keys anywhere).

    Queue messages are base64 (see ``AzureClients.queue``), which is what the
    Functions host's queue trigger expects by default.
    """
    check_azure_location(settings.azure_location)
    # Recorded only when DHOW_AZURE_CALL_LOG is set (the integration tests' RBAC check).
    blob_hooks, queue_hooks, table_hooks = (recording(s) for s in ("blob", "queue", "table"))
    conn = settings.azure_storage_connection_string
    if conn:
        return AzureClients(
            blobs=BlobServiceClient.from_connection_string(conn, **blob_hooks),
            queues=QueueServiceClient.from_connection_string(conn, **queue_hooks),
            tables=TableServiceClient.from_connection_string(conn, **table_hooks),
            connection_string=conn,
            queue_hooks=queue_hooks,
        )
    account = settings.azure_storage_account
    if not account:
        raise ConfigError(
            "no Azure Storage account to use",
            hint=f"the stack sets {AZURE_STORAGE_ACCOUNT}; or set "
            f"{AZURE_STORAGE_CONNECTION_STRING} (`dhow local up --cloud azure` prints "
            "Azurite's)",
        )
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    return AzureClients(
        blobs=BlobServiceClient(
            f"https://{account}.blob.core.windows.net", credential, **blob_hooks
        ),
        queues=QueueServiceClient(
            f"https://{account}.queue.core.windows.net", credential, **queue_hooks
        ),
        tables=TableServiceClient(
            f"https://{account}.table.core.windows.net", credential=credential, **table_hooks
        ),
        credential=credential,
        queue_hooks=queue_hooks,
    )


class BlobCopyFailed(DhowError):
    """A server-side blob copy failed, was aborted, or did not finish in its time."""

    reason = Reason.BLOB_COPY_FAILED


# What Get Blob Properties reports of a blob's last Copy Blob (fact azure.blob.copy_states).
COPY_PENDING, COPY_SUCCESS = "pending", "success"


def _if_match(pin: ObjectPin | None) -> dict[str, Any]:
    """If-Match on the pinned ETag (fact azure.blob.conditional_reads): Blob storage
    answers 412 instead of other bytes. The SDK sends the ETag as given; the service's
    ETags are quoted, and Event Grid's and ours are kept unquoted."""
    if pin is None or not pin.etag:
        return {}
    return {"etag": f'"{pin.etag}"', "match_condition": MatchConditions.IfNotModified}


def _source_if_match(pin: ObjectPin | None) -> dict[str, Any]:
    """x-ms-source-if-match on Copy Blob: the copy starts only from the pinned bytes."""
    cond = _if_match(pin)
    if not cond:
        return {}
    return {"source_etag": cond["etag"], "source_match_condition": cond["match_condition"]}


def _changed(exc: HttpResponseError, ref: ObjectRef) -> ObjectChanged | None:
    if isinstance(exc, ResourceModifiedError) or exc.status_code == 412:
        return ObjectChanged(
            f"{ref.uri} was overwritten while it was being read",
            hint="the upload that replaced it is ingested from its own BlobCreated event",
        )
    return None


class BlobObjectStore(ObjectStore):
    """``ObjectStore`` on Azure Blob storage.

    ``copy`` is an asynchronous server-side Copy Blob, polled until it ends, for at most
    ``copy_timeout_s`` (``sleep`` and ``clock`` are injected so tests need not wait).
    """

    def __init__(
        self,
        client: BlobServiceClient,
        *,
        copy_timeout_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blobs = client
        self._copy_timeout = copy_timeout_s
        self._sleep = sleep
        self._clock = clock

    def head(self, ref: ObjectRef, *, pin: ObjectPin | None = None) -> ObjectInfo:
        try:
            p = self._blobs.get_blob_client(ref.container, ref.key).get_blob_properties(
                **_if_match(pin)
            )
        except ResourceNotFoundError as exc:
            raise ObjectMissing(f"no blob at {ref.uri}") from exc
        except HttpResponseError as exc:
            if (changed := _changed(exc, ref)) is not None:
                raise changed from exc
            raise
        if p.copy.status is not None and p.copy.status != COPY_SUCCESS:
            # The destination of a copy that is still running, or failed, or was aborted:
            # its bytes are not (all) there, so it must not count as the object.
            raise ObjectMissing(f"the copy into {ref.uri} is {p.copy.status}")
        return ObjectInfo(size=p.size, etag=str(p.etag).strip('"'), metadata=dict(p.metadata))

    def read_prefix(self, ref: ObjectRef, length: int, *, pin: ObjectPin | None = None) -> bytes:
        blob = self._blobs.get_blob_client(ref.container, ref.key)
        try:
            size = blob.get_blob_properties(**_if_match(pin)).size
            if size == 0:
                return b""
            head: bytes = blob.download_blob(
                offset=0, length=min(length, size), **_if_match(pin)
            ).readall()
            return head
        except ResourceNotFoundError as exc:
            raise ObjectMissing(f"no blob at {ref.uri}") from exc
        except HttpResponseError as exc:
            if (changed := _changed(exc, ref)) is not None:
                raise changed from exc
            raise

    def iter_chunks(
        self, ref: ObjectRef, chunk_size: int = 1024 * 1024, *, pin: ObjectPin | None = None
    ) -> Iterator[bytes]:
        blob = self._blobs.get_blob_client(ref.container, ref.key)
        try:
            downloader = blob.download_blob(max_concurrency=1, **_if_match(pin))
            # The SDK streams in its own chunk size; regroup to keep the port's contract.
            buf = bytearray()
            for part in downloader.chunks():
                buf.extend(part)
                while len(buf) >= chunk_size:
                    yield bytes(buf[:chunk_size])
                    del buf[:chunk_size]
        except ResourceNotFoundError as exc:
            raise ObjectMissing(f"no blob at {ref.uri}") from exc
        except HttpResponseError as exc:
            if (changed := _changed(exc, ref)) is not None:
                raise changed from exc
            raise
        if buf:
            yield bytes(buf)

    def put_bytes(
        self,
        ref: ObjectRef,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> None:
        # The blob's ContentSettings are sent as x-ms-blob-content-type and -disposition
        # and served back on a GET (fact azure.blob.content_settings).
        settings = ContentSettings(
            content_type=content_type, content_disposition=content_disposition
        )
        self._blobs.get_blob_client(ref.container, ref.key).upload_blob(
            data, overwrite=True, metadata=dict(metadata or {}), content_settings=settings
        )

    def upload_file(
        self,
        ref: ObjectRef,
        path: Path,
        metadata: Mapping[str, str] | None = None,
        *,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        # upload_blob's progress_hook gets (bytes sent so far, total or None).
        hook = None if on_sent is None else (lambda current, total: on_sent(current))
        with path.open("rb") as f:
            self._blobs.get_blob_client(ref.container, ref.key).upload_blob(
                f, overwrite=True, metadata=dict(metadata or {}), progress_hook=hook
            )

    def delete(self, ref: ObjectRef) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._blobs.get_blob_client(ref.container, ref.key).delete_blob()

    def list_keys(self, container: str, prefix: str) -> Iterator[str]:
        # The service lists blobs in lexical order, a page at a time.
        for blob in self._blobs.get_container_client(container).list_blobs(name_starts_with=prefix):
            yield blob.name

    def copy(
        self,
        source: ObjectRef,
        target: ObjectRef,
        metadata: Mapping[str, str] | None = None,
        *,
        source_pin: ObjectPin | None = None,
    ) -> None:
        src = self._blobs.get_blob_client(source.container, source.key)
        dst = self._blobs.get_blob_client(target.container, target.key)
        # Copy Blob, not Copy Blob From URL: the synchronous form stops at 256 MiB
        # (uploads may be GiBs) and reads its source only when it is public or carries a
        # SAS or a source token, while the asynchronous form reads a source in the same
        # account with the caller's own Entra token (facts azure.blob.sync_copy_max_bytes,
        # azure.blob.copy_source_same_account). Shared keys are off, so no SAS either.
        try:
            started = dst.start_copy_from_url(
                src.url, metadata=dict(metadata or {}), **_source_if_match(source_pin)
            )
            copy_id, status = str(started["copy_id"]), str(started["copy_status"])
        except ResourceNotFoundError as exc:
            raise ObjectMissing(f"no blob at {source.uri} to copy") from exc
        except HttpResponseError as exc:
            if (changed := _changed(exc, source)) is not None:
                raise changed from exc
            if getattr(exc, "error_code", None) != "PendingCopyOperation":
                raise
            # An earlier delivery's copy into this blob is still running: wait for that one.
            props = dst.get_blob_properties()
            copy_id, status = str(props.copy.id), str(props.copy.status)
        self._await_copy(dst, target, copy_id, status)

    def _await_copy(self, dst: BlobClient, target: ObjectRef, copy_id: str, status: str) -> None:
        deadline = self._clock() + self._copy_timeout
        delay, description = 0.5, ""
        while status == COPY_PENDING:
            if self._clock() >= deadline:
                with contextlib.suppress(HttpResponseError):
                    dst.abort_copy(copy_id)
                with contextlib.suppress(ResourceNotFoundError):
                    dst.delete_blob()  # an aborted copy leaves an empty blob behind
                raise BlobCopyFailed(
                    f"the copy into {target.uri} did not finish in {self._copy_timeout:.0f} s",
                    hint="it was aborted and the partial blob removed; the message is retried",
                    reason=Reason.BLOB_COPY_TIMEOUT,
                )
            self._sleep(delay)
            delay = min(delay * 2, 10.0)
            props = dst.get_blob_properties()
            if props.copy.id != copy_id:
                raise BlobCopyFailed(
                    f"another copy ({props.copy.id}) replaced ours into {target.uri}",
                    hint="two writers copy to one blob; the message is retried",
                )
            status, description = str(props.copy.status), str(props.copy.status_description or "")
        if status != COPY_SUCCESS:
            with contextlib.suppress(ResourceNotFoundError):
                dst.delete_blob()
            raise BlobCopyFailed(
                f"the copy into {target.uri} ended {status}: {description}",
                hint="the partial blob was removed; the message is retried",
            )


def cloud_event(event: PipelineEvent) -> dict[str, Any]:
    """A pipeline event as the CloudEvent (1.0, structured JSON) that the stack's pipeline
    topic takes and delivers to its subscribers' queues."""
    return {
        "specversion": "1.0",
        "type": event.event_type,
        "source": EVENT_SOURCE,
        "id": event.event_id,
        "time": event.occurred_at.isoformat(),
        "subject": event.dataset,
        "datacontenttype": "application/json",
        "data": json.loads(event.model_dump_json()),
    }


class EventGridBus(EventBus):
    """``EventBus`` on the stack's Event Grid topic (CloudEvents; its subscriptions route
    each event type to a function's queue). ``client`` is an ``EventGridPublisherClient``."""

    def __init__(self, client: EventGridPublisherClient) -> None:
        self._client = client

    def publish(self, event: PipelineEvent) -> None:
        ce = cloud_event(event)
        self._client.send(
            CloudEvent(
                source=ce["source"],
                type=ce["type"],
                data=ce["data"],
                id=ce["id"],
                time=event.occurred_at,
                subject=ce["subject"],
                datacontenttype=ce["datacontenttype"],
            )
        )


class StorageQueueEventTap(EventTap):
    """``EventTap`` on the Storage queue that gets a copy of every pipeline event.

    Storage queues have no long polling: an empty receive waits ``wait_s`` itself.
    """

    def __init__(self, client: QueueClient, visibility_s: int = 30) -> None:
        self._queue = client
        self._visibility = visibility_s

    def receive(self, wait_s: int = 1) -> list[TappedEvent]:
        out = []
        for m in self._queue.receive_messages(
            messages_per_page=32, max_messages=32, visibility_timeout=self._visibility
        ):
            try:
                event = parse_bus_event(azure_queue_body(m.content))
            except EventParseError:
                continue  # not ours to judge: after enough receives it goes to -poison
            out.append(TappedEvent(event=event, handle=f"{m.id}\n{m.pop_receipt}"))
        if not out and wait_s > 0:
            time.sleep(wait_s)
        return out

    def ack(self, tapped: TappedEvent) -> None:
        message_id, _, receipt = tapped.handle.partition("\n")
        with contextlib.suppress(ResourceNotFoundError):
            self._queue.delete_message(message_id, receipt)

    def release(self, tapped: TappedEvent) -> None:
        message_id, _, receipt = tapped.handle.partition("\n")
        with contextlib.suppress(ResourceNotFoundError):
            self._queue.update_message(message_id, receipt, visibility_timeout=0)


class QueueAlerts(AlertChannel):
    """``AlertChannel`` on a Storage queue in the stack's own (UAE) account.

    Azure Monitor action groups are global resources, which the region policy refuses;
    alerts stay in a queue of the region, where `dhow alerts` and on-call's own
    integrations read them.
    """

    def __init__(self, client: QueueClient) -> None:
        self._queue = client

    def send(self, subject: str, message: str, attributes: Mapping[str, str]) -> str:
        body = {"Subject": subject, "Message": message, "Attributes": dict(attributes)}
        return str(self._queue.send_message(json.dumps(body)).id)


class QueueAlertInbox(AlertInbox):
    """``AlertInbox`` on the Storage queue ``QueueAlerts`` writes to. Storage queues have
    no long polling: an empty receive waits ``wait_s`` itself."""

    def __init__(self, client: QueueClient) -> None:
        self._queue = client

    def receive(self, wait_s: int = 1) -> list[DeliveredAlert]:
        out = []
        for m in self._queue.receive_messages(messages_per_page=32, max_messages=32):
            body = json.loads(m.content)
            out.append(
                DeliveredAlert(
                    subject=body.get("Subject"),
                    message=body.get("Message"),
                    handle=f"{m.id}\n{m.pop_receipt}",
                )
            )
        if not out and wait_s > 0:
            time.sleep(wait_s)
        return out

    def ack(self, alert: DeliveredAlert) -> None:
        message_id, _, receipt = alert.handle.partition("\n")
        self._queue.delete_message(message_id, receipt)


class LoggedMetrics(MetricsSink):
    """``MetricsSink`` as one log record per point, the point itself as JSON in the
    message: ``dhow.metric {"namespace": ..., "name": ..., "value": ..., ...}``.

    The Functions host sends the app's logs to the stack's Application Insights (in the
    region) as ``traces``, but the Python worker hands the host only a record's level,
    formatted message and category (fact azure.functions.python_worker_log_fields): an
    ``extra=`` attribute never reaches ``customDimensions``. Queries and alert rules read
    the point with ``parse_json(substring(message, 12))`` on ``traces`` whose message starts
    with ``dhow.metric ``."""

    PREFIX = "dhow.metric "

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("dhow.metrics")

    def put(self, namespace: str, points: list[MetricPoint]) -> None:
        for p in points:
            point = {"namespace": namespace, **p.model_dump(mode="json")}
            # No %-arguments: logging formats nothing, the message is the JSON as written.
            self._log.info(self.PREFIX + json.dumps(point, sort_keys=True))


class TableLineageStore(LineageStore):
    """``LineageStore`` on Azure Table storage: PartitionKey = dataset, RowKey = record id."""

    def __init__(self, client: TableClient) -> None:
        self._table = client

    @staticmethod
    def _entity(record: LineageRecord) -> dict[str, Any]:
        return {"PartitionKey": record.dataset, "RowKey": record.record_id, **to_stored(record)}

    @staticmethod
    def _record(entity: Mapping[str, Any]) -> LineageRecord:
        return from_stored(entity["PartitionKey"], entity["RowKey"], entity)

    def put_if_absent(self, record: LineageRecord) -> bool:
        try:
            self._table.create_entity(self._entity(record))
        except ResourceExistsError:
            return False
        return True

    def get(self, dataset: str, record_id: str) -> LineageRecord | None:
        try:
            return self._record(self._table.get_entity(dataset, record_id))
        except ResourceNotFoundError:
            return None

    def replace(self, record: LineageRecord, expected_revision: int) -> bool:
        try:
            current = self._table.get_entity(record.dataset, record.record_id)
        except ResourceNotFoundError:
            return False
        if int(current["revision"]) != expected_revision:
            return False
        # Update Entity's one condition is If-Match on the ETag (fact
        # azure.tables.update_if_match): the status is checked here, on the entity as read,
        # and the ETag makes the write fail if anyone changed it since, so what is checked
        # is what is written over.
        if is_finished(current["kind"], current["status"]) or current["kind"] != record.kind:
            raise FinishedEntryImmutable(
                f"{current['kind']} row {record.record_id} of {record.dataset} is "
                f"{current['status']}: a finished entry is not written over",
                hint="record what happened next in a row of its own",
            )
        new = record.model_copy(update={"revision": expected_revision + 1})
        try:
            # The entity's ETag makes the read-compare-write one atomic step.
            self._table.update_entity(
                self._entity(new),
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def list(self, dataset: str) -> list[LineageRecord]:
        rows = [
            self._record(e)
            for e in self._table.query_entities("PartitionKey eq @pk", parameters={"pk": dataset})
        ]
        return sorted(rows, key=lambda row: row.created_at)

    def scan(self, cursor: str | None = None, page_size: int = 500) -> LineagePage:
        # One Query Entities request: at most 1,000 entities (fact azure.tables.query_page),
        # and the next partition and row key where the next one starts.
        size = min(page_size, int(cloud_fact("azure.tables.query_page")["max_entities"]))
        token = json.loads(cursor) if cursor else None
        pages = self._table.list_entities(results_per_page=size).by_page(continuation_token=token)
        entities = [self._record(e) for e in next(pages, [])]
        after = getattr(pages, "continuation_token", None)
        return LineagePage(
            records=entities, next_cursor=json.dumps(after, sort_keys=True) if after else None
        )
