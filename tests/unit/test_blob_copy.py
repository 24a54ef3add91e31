"""The blob store's copy, as the exact requests it sends to Azure Storage (recorded at the
HTTP layer: Azure cannot run here), checked against the Copy Blob rules in the facts table."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import responses
from azure.core.credentials import AccessToken
from azure.storage.blob import BlobServiceClient
from requests import PreparedRequest

from shared.adapters.azure import BlobCopyFailed, BlobObjectStore
from shared.cloud_facts import fact, value
from shared.errors import ObjectMissing
from shared.events import ObjectRef
from shared.settings import Settings

ACCOUNT = "https://dhowproddata.blob.core.windows.net"
RAW = ObjectRef(container="dhow-prod-raw", key="datasets/customers/big.csv")
STAGED = ObjectRef(container="dhow-prod-staging", key="datasets/customers/sha256=ab/data.csv")
# The SDK sends the key's '=' percent-encoded; match the blob, whatever the query.
DST_URL = re.compile(re.escape(f"{ACCOUNT}/{STAGED.container}/") + r"datasets/customers/[^?]+")
SRC_URL = f"{ACCOUNT}/{RAW.container}/{RAW.key}"


class ManagedIdentity:
    """Stands in for the app's managed identity: a bearer token, never a key."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("entra-token", int(time.time()) + 3600)


class Storage:
    """Answers as Blob storage does: Copy Blob starts ``pending`` and, after ``polls``
    Get Blob Properties, ends ``outcome`` (or never, with ``polls=None``)."""

    def __init__(self, polls: int | None, outcome: str = "success") -> None:
        self.polls, self.outcome, self.seen = polls, outcome, 0

    def _copy_headers(self, status: str) -> dict[str, str]:
        return {
            "x-ms-copy-id": "copy-1",
            "x-ms-copy-status": status,
            "x-ms-copy-status-description": "500 InternalError" if status == "failed" else "",
            "ETag": '"0x1"',
            "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT",
            "x-ms-blob-type": "BlockBlob",
            "Content-Length": "0",
        }

    def put(self, request: PreparedRequest) -> tuple[int, dict[str, str], str]:
        return 202, self._copy_headers("pending"), ""

    def head(self, request: PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.seen += 1
        done = self.polls is not None and self.seen >= self.polls
        return 200, self._copy_headers(self.outcome if done else "pending"), ""


def _store(storage: Storage, sleeps: list[float], timeout_s: float = 600.0) -> BlobObjectStore:
    responses.add_callback(responses.PUT, DST_URL, callback=storage.put)
    responses.add_callback(responses.HEAD, DST_URL, callback=storage.head)
    responses.add(responses.DELETE, DST_URL, status=202)
    clock = [0.0]

    def sleep(s: float) -> None:
        sleeps.append(s)
        clock[0] += s

    now: Callable[[], float] = lambda: clock[0]  # noqa: E731
    client = BlobServiceClient(ACCOUNT, credential=ManagedIdentity(), retry_total=0)
    return BlobObjectStore(client, copy_timeout_s=timeout_s, sleep=sleep, clock=now)


def _requests(method: str, query: str = "") -> list[PreparedRequest]:
    return [
        c.request
        for c in responses.calls
        if c.request.method == method and query in str(c.request.url)
    ]


@responses.activate
def test_the_copy_is_an_asynchronous_copy_blob_read_with_the_identitys_own_token() -> None:
    sleeps: list[float] = []
    _store(Storage(polls=3), sleeps).copy(RAW, STAGED, {"sha256": "ab"})
    [put] = _requests("PUT")
    headers = put.headers
    # Copy Blob, not Copy Blob From URL: the synchronous form stops at 256 MiB, and the
    # stack allows uploads far larger.
    assert "x-ms-requires-sync" not in headers
    assert Settings().max_upload_bytes > value("azure.blob.sync_copy_max_bytes")
    # The source is in the destination's own account, named without a SAS, and read
    # with the caller's Entra token: the rule that makes that allowed, and its version.
    rule = fact("azure.blob.copy_source_same_account").value
    assert rule["same_account_only"] is True
    assert headers["x-ms-copy-source"] == SRC_URL
    assert "?" not in headers["x-ms-copy-source"]
    assert headers["x-ms-copy-source"].startswith(ACCOUNT + "/")
    assert "x-ms-copy-source-authorization" not in headers
    assert headers["Authorization"] == "Bearer entra-token"
    assert headers["x-ms-version"] >= rule["entra_from_version"]
    assert headers["x-ms-meta-sha256"] == "ab"
    # Polled with Get Blob Properties until success, backing off.
    assert len(_requests("HEAD")) == 3
    assert sleeps == [0.5, 1.0, 2.0]
    assert _requests("DELETE") == []


@responses.activate
@pytest.mark.parametrize("outcome", fact("azure.blob.copy_states").value["ended_badly"])
def test_a_copy_that_ends_badly_is_a_typed_error_and_leaves_no_blob(outcome: str) -> None:
    with pytest.raises(BlobCopyFailed) as err:
        _store(Storage(polls=1, outcome=outcome), []).copy(RAW, STAGED)
    assert err.value.reason == "blob_copy_failed"
    assert outcome in err.value.message
    assert len(_requests("DELETE")) == 1


@responses.activate
def test_a_copy_that_never_ends_is_aborted_within_its_bound() -> None:
    abort_url = re.compile(DST_URL.pattern + re.escape("?comp=copy&copyid=copy-1"))
    responses.add(responses.PUT, abort_url, status=204)
    sleeps: list[float] = []
    with pytest.raises(BlobCopyFailed) as err:
        _store(Storage(polls=None), sleeps, timeout_s=60).copy(RAW, STAGED)
    assert err.value.reason == "blob_copy_timeout"
    assert sum(sleeps) <= 60 + 10  # the bound, give or take one back-off step
    [abort] = _requests("PUT", "comp=copy")
    assert abort.headers["x-ms-copy-action"] == "abort"
    assert len(_requests("DELETE")) == 1  # the empty blob an abort leaves is removed


@responses.activate
def test_a_blob_whose_copy_has_not_finished_is_not_an_object_yet() -> None:
    pending = fact("azure.blob.copy_states").value["running"]
    store = _store(Storage(polls=None), [])
    assert pending == "pending"
    with pytest.raises(ObjectMissing):
        store.head(STAGED)
    assert store.exists(STAGED) is False
