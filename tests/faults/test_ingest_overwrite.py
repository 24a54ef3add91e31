"""The object changes under ingest: an upload overwritten between ingest's reads.

HEAD, the format sniff, the hash and the copy are separate requests for one key. A
second upload to the same key between two of them used to give a dataset version
whose bytes are not the bytes its hash and size name. Each test overwrites the object
at one step boundary, through a store that writes the second upload just before that
step, and looks at what was staged and announced:

- on S3 (moto, a versioned bucket as the stack makes it) every read names the event's
  version, so the first upload is ingested whole, and the second from its own event;
- on Azure (the SDK's own pipeline against Blob storage's conditional rules, recorded
  at the HTTP layer: Azure cannot run here) every read carries If-Match on the event's
  ETag, so the read after the overwrite gets 412 and ingest answers ``object_changed``
  with nothing staged; the second upload is ingested from its own event.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import boto3
import botocore.session
import pytest
import responses
from azure.storage.blob import BlobServiceClient
from moto import mock_aws
from requests import PreparedRequest

from infra.aws.iam import permission_actions
from shared.adapters.aws import S3ObjectStore
from shared.adapters.azure import BlobObjectStore
from shared.cloud_facts import value
from shared.events import DatasetIngested, ObjectRef
from shared.ports import ObjectInfo, ObjectPin, ObjectStore
from shared.services.ingest import IngestService
from shared.topology import build_topology
from shared.triggers import ObjectCreated, parse_object_created
from tests.faults.ledger import Ledger
from tests.helpers import MemoryBus, MemoryLineage, load_event
from tests.unit.test_blob_copy import ManagedIdentity

RAW, STAGING = "dhow-t-raw", "dhow-t-staging"
KEY = "datasets/customers/jan.csv"
FIRST = b"customer_id,age\nC1,30\nC2,41\n"
SECOND = b"customer_id,age\nC9,99\nC8,88\nC7,77\n"
STEPS = ("read_prefix", "iter_chunks", "copy")


class OverwriteBefore(ObjectStore):
    """A store that lets ``overwrite`` write the second upload just before ``step`` runs
    for the first time: the fault, at one step boundary of ingest."""

    def __init__(self, inner: ObjectStore, step: str, overwrite: Callable[[], None]) -> None:
        self.inner, self.step, self._overwrite, self.done = inner, step, overwrite, False

    def _at(self, step: str) -> None:
        if step == self.step and not self.done:
            self.done = True
            self._overwrite()

    def head(self, ref: ObjectRef, *, pin: ObjectPin | None = None) -> ObjectInfo:
        if ref.container == STAGING:  # "staged yet?" is not a read of the upload
            return self.inner.head(ref, pin=pin)
        self._at("head")
        return self.inner.head(ref, pin=pin)

    def read_prefix(self, ref: ObjectRef, length: int, *, pin: ObjectPin | None = None) -> bytes:
        self._at("read_prefix")
        return self.inner.read_prefix(ref, length, pin=pin)

    def iter_chunks(
        self, ref: ObjectRef, chunk_size: int = 1024 * 1024, *, pin: ObjectPin | None = None
    ) -> Iterator[bytes]:
        self._at("iter_chunks")
        return self.inner.iter_chunks(ref, chunk_size, pin=pin)

    def copy(
        self,
        source: ObjectRef,
        target: ObjectRef,
        metadata: Mapping[str, str] | None = None,
        *,
        source_pin: ObjectPin | None = None,
    ) -> None:
        self._at("copy")
        self.inner.copy(source, target, metadata, source_pin=source_pin)

    def put_bytes(
        self, ref: ObjectRef, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> None:
        self.inner.put_bytes(ref, data, metadata)

    def upload_file(
        self, ref: ObjectRef, path: Path, metadata: Mapping[str, str] | None = None
    ) -> None:
        self.inner.upload_file(ref, path, metadata)

    def delete(self, ref: ObjectRef) -> None:
        self.inner.delete(ref)

    def list_keys(self, container: str, prefix: str) -> Iterator[str]:
        return self.inner.list_keys(container, prefix)


def service(store: ObjectStore, bus: MemoryBus, lineage: MemoryLineage) -> IngestService:
    return IngestService(
        store, bus, lineage, staging_container=STAGING, max_upload_bytes=1 << 20, claim_seconds=60
    )


def staged_key(data: bytes) -> str:
    return f"datasets/customers/sha256={hashlib.sha256(data).hexdigest()}/data.csv"


def ingested(bus: MemoryBus, data: bytes) -> int:
    sha = hashlib.sha256(data).hexdigest()
    return sum(1 for e in bus.events if isinstance(e, DatasetIngested) and e.sha256 == sha)


# --- S3: a versioned bucket, reads pinned to the event's version -----------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        client = boto3.client("s3", region_name="me-central-1")
        for bucket in (RAW, STAGING):
            client.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "me-central-1"}
            )
        client.put_bucket_versioning(Bucket=RAW, VersioningConfiguration={"Status": "Enabled"})
        yield client


def s3_event(client: Any, data: bytes, uploader: str) -> ObjectCreated:
    """Put ``data`` and return the EventBridge "Object Created" S3 sends for it, parsed."""
    put = client.put_object(Bucket=RAW, Key=KEY, Body=data, Metadata={"dhow_uploaded_by": uploader})
    event = load_event("eventbridge_s3_object_created.json")
    event["detail"]["bucket"]["name"] = RAW
    event["detail"]["object"].update(
        key=KEY, size=len(data), etag=put["ETag"].strip('"'), **{"version-id": put["VersionId"]}
    )
    [obj] = parse_object_created(event)
    return obj


def recorded_calls(client: Any) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    client.meta.events.register("provide-client-params.s3", record)
    return calls


@pytest.mark.parametrize("step", STEPS)
def test_s3_ingests_the_announced_version_whatever_overwrites_it(
    s3: Any, step: str, ledger: Ledger
) -> None:
    bus, lineage = MemoryBus(), MemoryLineage()
    first = s3_event(s3, FIRST, "amal")
    calls = recorded_calls(s3)
    second: list[ObjectCreated] = []
    store = OverwriteBefore(
        S3ObjectStore(s3), step, lambda: second.append(s3_event(s3, SECOND, "mallory"))
    )
    ledger.fault(f"ingest:before-{step}", "the key overwritten by another upload (S3)")
    out = service(store, bus, lineage).handle(first)
    ledger.answer(f"S3 upload overwritten before {step}", out.reason or out.status)
    [then] = second
    after = service(S3ObjectStore(s3), bus, lineage).handle(then)
    ledger.action(
        f"DatasetIngested of the first upload (S3, overwrite before {step})", ingested(bus, FIRST)
    )
    ledger.action(f"DatasetIngested of the overwrite (S3, before {step})", ingested(bus, SECOND))
    outcomes = [out, after]
    ledger.delivered("S3 object-created events", 2, sum(o.status == "ingested" for o in outcomes))

    assert (out.status, out.sha256) == ("ingested", hashlib.sha256(FIRST).hexdigest())
    # What is staged under each hash is the bytes of that hash, and nothing else.
    for data in (FIRST, SECOND):
        body = s3.get_object(Bucket=STAGING, Key=staged_key(data))["Body"].read()
        assert body == data
    assert (ingested(bus, FIRST), ingested(bus, SECOND)) == (1, 1)
    [announced] = [e for e in bus.events if e.sha256 == out.sha256]  # type: ignore[attr-defined]
    assert announced.size_bytes == len(FIRST)  # type: ignore[attr-defined]
    # Every read of the upload, and the copy's source, named the event's version.
    pinned = value("aws.s3.pinned_reads")
    reads = [(op, p) for op, p in calls if op in ("HeadObject", "GetObject") and p["Bucket"] == RAW]
    assert reads
    assert all(p.get(pinned["version_param"]) == first.version_id for _, p in reads[:3])
    [copied] = [p for op, p in calls if op == "CopyObject" and p["Key"] == staged_key(FIRST)]
    assert copied["CopySource"]["VersionId"] == first.version_id


def test_s3_requests_pinning_a_read_are_ones_botocore_and_iam_know() -> None:
    """The parameters the adapter sends are members of botocore's own S3 model, and the
    action S3 authorizes a versioned read by is granted to ingest on the raw bucket."""
    pinned = value("aws.s3.pinned_reads")
    model = botocore.session.get_session().get_service_model("s3")

    def members(op: str) -> set[str]:
        shape = model.operation_model(op).input_shape
        assert shape is not None
        return set(shape.members)

    for op in ("GetObject", "HeadObject"):
        assert {pinned["version_param"], pinned["etag_param"]} <= members(op)
    assert pinned["copy_etag_param"] in members("CopyObject")
    ingest = next(f for f in build_topology("t").functions if f.name.endswith("-ingest"))
    raw = [p for p in ingest.permissions if p.resource == "raw"]
    assert any(pinned["version_action"] in permission_actions(p) for p in raw)


def test_s3_without_a_version_falls_back_to_if_match(s3: Any, ledger: Ledger) -> None:
    """An unversioned bucket (or S3's "null" version): reads and the copy carry the
    event's ETag, and S3's 412 for other bytes is ``object_changed``."""
    put = s3.put_object(Bucket=STAGING, Key=KEY, Body=FIRST)
    event = load_event("s3_notification.json")
    record = event["Records"][0]["s3"]
    record["bucket"]["name"] = STAGING
    record["object"].update(key=KEY, eTag=put["ETag"].strip('"'), versionId="null")
    [obj] = parse_object_created(event)
    assert obj.version_id is None  # fact: "null" is overwritten in place
    assert value("aws.s3.event_version_id")["overwritten_in_place"] == "null"
    calls = recorded_calls(s3)
    store = OverwriteBefore(
        S3ObjectStore(s3),
        "iter_chunks",
        lambda: s3.put_object(Bucket=STAGING, Key=KEY, Body=SECOND),
    )
    bus = MemoryBus()
    ledger.fault("ingest:before-iter_chunks", "the key overwritten, unversioned bucket (S3)")
    out = service(store, bus, MemoryLineage()).handle(obj)
    ledger.answer("S3 unversioned upload overwritten before the hash", out.reason or out.status)
    assert (out.status, out.reason) == ("superseded", "object_changed")
    assert bus.events == []
    gets = [p for op, p in calls if op == "GetObject"]
    assert gets
    assert all(p["IfMatch"] == put["ETag"] for p in gets)
    # The copy's own condition, as sent (moto does not judge copy preconditions).
    S3ObjectStore(s3).copy(
        obj.ref, ObjectRef(container=RAW, key="c"), source_pin=ObjectPin(etag="abc")
    )
    [copy] = [p for op, p in calls if op == "CopyObject"]
    assert copy[value("aws.s3.pinned_reads")["copy_etag_param"]] == '"abc"'


# --- Azure: Blob storage's If-Match, through the SDK's own pipeline -----------------------

ACCOUNT = "https://dhowtdata.blob.core.windows.net"


class BlobStorage:
    """Blob storage's answers to the requests the adapter sends, judged as its conditional
    header rules say (fact azure.blob.conditional_reads): If-Match on HEAD and GET, and
    x-ms-source-if-match on Copy Blob, answer 412 when the ETag differs."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.seen: list[PreparedRequest] = []
        self._n = 0

    def put(self, container: str, key: str, data: bytes) -> str:
        self._n += 1
        etag = f'"0x8D{self._n:013X}"'
        self.blobs[(container, key)] = (data, etag)
        return etag

    @staticmethod
    def _where(url: str) -> tuple[str, str]:
        container, _, key = unquote(urlparse(url).path).lstrip("/").partition("/")
        return container, key

    def _error(self, status: int, code: str, method: str | None) -> tuple[int, dict[str, str], str]:
        if method == "HEAD":  # a HEAD answer has no body: the code is in its header only
            return status, {"x-ms-error-code": code, "Content-Length": "0"}, ""
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<Error><Code>{code}</Code><Message>{code}</Message></Error>"
        )
        return status, {"x-ms-error-code": code, "Content-Type": "application/xml"}, body

    def _headers(self, data: bytes, etag: str) -> dict[str, str]:
        return {
            "ETag": etag,
            "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT",
            "x-ms-blob-type": "BlockBlob",
            "Content-Length": str(len(data)),
        }

    def __call__(self, request: PreparedRequest) -> tuple[int, dict[str, str], Any]:
        self.seen.append(request)
        where = self._where(str(request.url))
        rule = value("azure.blob.conditional_reads")
        if request.method == "PUT" and "x-ms-copy-source" in request.headers:
            source = self.blobs.get(self._where(str(request.headers["x-ms-copy-source"])))
            if source is None:
                return self._error(404, "BlobNotFound", request.method)
            wanted = request.headers.get(rule["copy_header"])
            if wanted is not None and wanted != source[1]:
                return self._error(rule["status"], "SourceConditionNotMet", request.method)
            etag = self.put(*where, source[0])
            headers = {
                **self._headers(b"", etag),
                "x-ms-copy-id": "c1",
                "x-ms-copy-status": "success",
            }
            return 202, headers, ""
        blob = self.blobs.get(where)
        if blob is None:
            return self._error(404, "BlobNotFound", request.method)
        data, etag = blob
        wanted = request.headers.get(rule["read_header"])
        if wanted is not None and wanted != etag:
            return self._error(rule["status"], rule["read_error_code"], request.method)
        if request.method == "HEAD":
            return 200, self._headers(data, etag), ""
        m = re.match(r"bytes=(\d+)-(\d+)", str(request.headers.get("x-ms-range", "bytes=0-")))
        start, end = (
            (int(m.group(1)), min(int(m.group(2)), len(data) - 1)) if m else (0, len(data) - 1)
        )
        part = data[start : end + 1]
        headers = {**self._headers(part, etag), "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        return 206, headers, part


def blob_event(storage: BlobStorage, data: bytes) -> ObjectCreated:
    """Upload ``data`` and return the BlobCreated Event Grid sends for it, parsed."""
    etag = storage.put(RAW, KEY, data)
    [event] = load_event("eventgrid_blob_created.json")
    event["data"].update(url=f"{ACCOUNT}/{RAW}/{KEY}", eTag=etag, contentLength=len(data))
    [obj] = parse_object_created(event)
    return obj


@pytest.fixture
def blob() -> Iterator[tuple[BlobStorage, BlobObjectStore]]:
    storage = BlobStorage()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("HEAD", "GET", "PUT"):
            mock.add_callback(method, re.compile(re.escape(ACCOUNT) + r"/.*"), callback=storage)
        client = BlobServiceClient(ACCOUNT, credential=ManagedIdentity(), retry_total=0)
        yield storage, BlobObjectStore(client, sleep=lambda s: None)


@pytest.mark.parametrize("step", STEPS)
def test_azure_refuses_bytes_that_are_not_the_events(
    blob: tuple[BlobStorage, BlobObjectStore], step: str, ledger: Ledger
) -> None:
    storage, adapter = blob
    bus, lineage = MemoryBus(), MemoryLineage()
    first = blob_event(storage, FIRST)
    second: list[ObjectCreated] = []
    store = OverwriteBefore(adapter, step, lambda: second.append(blob_event(storage, SECOND)))
    ledger.fault(f"ingest:before-{step}", "the blob overwritten by another upload (Azure)")
    out = service(store, bus, lineage).handle(first)
    ledger.answer(f"Azure blob overwritten before {step}", out.reason or out.status)
    [then] = second
    after = service(adapter, bus, lineage).handle(then)
    ledger.action(f"DatasetIngested of the overwrite (Azure, before {step})", ingested(bus, SECOND))
    outcomes = [out, after]
    ledger.delivered(
        "BlobCreated events", 2, sum(o.status in ("ingested", "superseded") for o in outcomes)
    )

    assert (out.status, out.reason) == ("superseded", "object_changed")
    assert ingested(bus, FIRST) == 0
    assert (STAGING, staged_key(FIRST)) not in storage.blobs  # nothing under the wrong hash
    assert after.status == "ingested"
    assert storage.blobs[(STAGING, staged_key(SECOND))][0] == SECOND
    assert ingested(bus, SECOND) == 1
    # Every request for the first upload named its ETag, exactly as the event gave it.
    rule = value("azure.blob.conditional_reads")
    assert first.etag is not None
    mine = [
        r
        for r in storage.seen
        if r.url is not None
        and f"/{RAW}/" in r.url
        and r.headers.get(rule["read_header"], "") in ("", f'"{first.etag}"')
        and r.method in ("HEAD", "GET")
    ]
    assert mine
    assert all(r.headers[rule["read_header"]] == f'"{first.etag}"' for r in mine)
    copies = [r for r in storage.seen if r.method == "PUT"]
    for r in copies:
        assert rule["copy_header"] in r.headers


def test_azure_event_etag_and_identity_are_read_as_documented() -> None:
    """Event Grid documents eTag quoted and identity optional (fact
    azure.eventgrid.blob_created_fields): the pin is the bare ETag, and a missing
    identity is an unknown uploader, never the metadata's claim."""
    fields = value("azure.eventgrid.blob_created_fields")
    [event] = load_event("eventgrid_blob_created.json")
    event["data"][fields["etag"]] = '"0x8D4BCC2E4835CD0"'
    [obj] = parse_object_created(event)
    assert obj.etag == "0x8D4BCC2E4835CD0"
    assert fields["principal_optional"]
    assert obj.uploader is None
    event["data"][fields["principal"]] = "3f1c-app-object-id"
    assert parse_object_created(event)[0].uploader == "3f1c-app-object-id"
