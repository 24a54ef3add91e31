"""Reports are stored with the headers they are to be served with (issue 16, "Who may do
what" item 5): the drift report as UTF-8 HTML and an attachment, the JSON summaries,
profiles and quarantine reports as JSON. Without them S3 serves binary/octet-stream and
a browser may sniff the HTML and open it in the bucket's origin.

Checked where the cloud answers: moto's S3 (what GetObject returns) and the exact request
the Azure SDK sends to Blob storage (x-ms-blob-content-*), and through the services."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import responses
from azure.core.credentials import AccessToken
from azure.storage.blob import BlobServiceClient
from moto import mock_aws

from shared.adapters.aws import S3ObjectStore, aws_client
from shared.adapters.azure import BlobObjectStore
from shared.cloud_facts import value
from shared.drift_report import REPORT_CONTENT_TYPE, REPORT_DISPOSITION
from shared.events import ObjectRef
from shared.settings import Settings
from shared.validation import ValidationReport
from tests.helpers import MemoryStore
from tests.unit.test_drift_service import T0, World, quick_report, reference, world  # noqa: F401

REPORT = ObjectRef(container="dhow-prod-reports", key="datasets/customers/drift/report.html")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3ObjectStore]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        client = aws_client("s3", Settings())
        client.create_bucket(
            Bucket=REPORT.container,
            CreateBucketConfiguration={"LocationConstraint": "me-central-1"},
        )
        yield S3ObjectStore(client)


def test_s3_serves_the_report_with_its_content_type_and_disposition(s3: S3ObjectStore) -> None:
    s3.put_bytes(
        REPORT,
        b"<html></html>",
        {"dataset": "customers"},
        content_type=REPORT_CONTENT_TYPE,
        content_disposition=REPORT_DISPOSITION,
    )
    got = aws_client("s3", Settings()).get_object(Bucket=REPORT.container, Key=REPORT.key)
    # Both are system metadata S3 answers a GET with (fact aws.s3.object_response_headers).
    assert {"ContentType", "ContentDisposition"} <= set(value("aws.s3.object_response_headers"))
    assert got["ContentType"] == "text/html; charset=utf-8"
    assert got["ContentDisposition"] == 'attachment; filename="report.html"'
    assert got["Metadata"] == {"dataset": "customers"}


class _Identity:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("entra-token", int(time.time()) + 3600)


@responses.activate
def test_blob_storage_is_sent_the_report_s_content_settings() -> None:
    account = "https://dhowproddata.blob.core.windows.net"
    url = f"{account}/{REPORT.container}/{REPORT.key}"
    responses.add(responses.PUT, url, status=201, headers={"ETag": '"0x1"'})
    client = BlobServiceClient(account, credential=_Identity(), retry_total=0)
    BlobObjectStore(client).put_bytes(
        REPORT,
        b"<html></html>",
        content_type=REPORT_CONTENT_TYPE,
        content_disposition=REPORT_DISPOSITION,
    )
    [call] = responses.calls
    headers = call.request.headers
    # Put Blob's x-ms-blob-content-* are the blob's ContentSettings, served back on a GET
    # (fact azure.blob.content_settings).
    assert {"content_type", "content_disposition"} <= set(value("azure.blob.content_settings"))
    assert headers["x-ms-blob-content-type"] == "text/html; charset=utf-8"
    assert headers["x-ms-blob-content-disposition"] == 'attachment; filename="report.html"'


def test_the_drift_check_stores_its_report_as_html_to_download(
    world: World,  # noqa: F811
    quick_report: None,  # noqa: F811
) -> None:
    world.capture(world.shifted, T0 - timedelta(hours=1))
    out = world.svc.check("customers", scheduled_at=T0)
    assert out.report is not None
    assert world.store.headers[(out.report.container, out.report.key)] == {
        "content_type": REPORT_CONTENT_TYPE,
        "content_disposition": REPORT_DISPOSITION,
    }
    summary = world.store.headers[(out.summary.container, out.summary.key)]
    assert summary == {"content_type": "application/json"}


def test_a_quarantined_file_s_report_is_stored_as_json() -> None:
    from shared.services.validate import StagedFileValidator

    store = MemoryStore()
    staged = ObjectRef(container="staging", key="datasets/customers/sha256=ab/data.csv")
    store.put_bytes(staged, b"a,b\n1,2\n")
    svc = StagedFileValidator(store, curated_container="curated", quarantine_container="quarantine")
    report = ValidationReport(
        dataset="customers", spec_version="1+x", ok=False, reason="schema_mismatch"
    )
    out = svc.quarantine(report, "ab" * 32, staged, None)
    [key] = [k for c, k in store.objects if c == "quarantine" and k.endswith(".report.json")]
    assert store.headers[("quarantine", key)] == {"content_type": "application/json"}
    assert not out.ok
