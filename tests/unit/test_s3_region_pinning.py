"""No byte leaves the region: the S3 client refuses S3's answers that point at a bucket in
another region (botocore would re-send the request there), and every request names the
stack's account as the bucket's expected owner.

The requests are the ones botocore really builds and signs; only the wire is replaced, by a
``before-send`` hook that records each request and answers it as S3 would."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders

from shared.adapters.aws import S3ObjectStore, S3RegionRedirectRefused, aws_client
from shared.cloud_facts import value
from shared.events import ObjectRef
from shared.settings import Settings

ACCOUNT = "111122223333"
SETTINGS = Settings(aws_account_id=ACCOUNT)
REGION = SETTINGS.aws_region


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def _answer(status: int, headers: dict[str, str], body: bytes = b"") -> AWSResponse:
    return AWSResponse("https://s3", status, HTTPHeaders.from_dict(headers), _Raw(body))


Answer = Callable[[AWSPreparedRequest], AWSResponse]


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def _client(answer: Answer, sent: list[AWSPreparedRequest]) -> Any:
    client: Any = aws_client("s3", SETTINGS)

    def send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        sent.append(request)
        return answer(request)

    client.meta.events.register("before-send.s3", send)
    return client


def _ok_elsewhere(first: AWSResponse) -> Answer:
    """S3 in me-central-1 says "not here"; the bucket's other region would accept."""

    def answer(request: AWSPreparedRequest) -> AWSResponse:
        if f".{REGION}." in request.url:
            return first
        return _answer(200, {"ETag": '"abc"', "Content-Length": "0"})

    return answer


REDIRECTS = value("aws.s3.wrong_region_answers")
PERMANENT = _answer(
    301,
    {REDIRECTS["region_header"]: "eu-west-1"},
    b"<Error><Code>PermanentRedirect</Code><Message>addressed using the specified endpoint"
    b"</Message><Bucket>dhow-acme-raw</Bucket>"
    b"<Endpoint>dhow-acme-raw.s3.eu-west-1.amazonaws.com</Endpoint></Error>",
)
WRONG_REGION_400 = _answer(
    400,
    {},
    b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'me-central-1' is "
    b"wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>",
)


@pytest.mark.parametrize("first", [PERMANENT, WRONG_REGION_400], ids=["301", "400-region"])
def test_a_put_answered_from_another_region_is_refused_not_resent(first: AWSResponse) -> None:
    sent: list[AWSPreparedRequest] = []
    store = S3ObjectStore(_client(_ok_elsewhere(first), sent))
    with pytest.raises(S3RegionRedirectRefused) as info:
        store.put_bytes(ObjectRef(container="dhow-acme-raw", key="k"), b"customer rows")
    assert info.value.reason == "s3_region_redirect_refused"
    assert info.value.hint
    # One request, in the region: the body was never sent anywhere else.
    assert [r.url for r in sent] == [sent[0].url]
    assert f".{REGION}." in sent[0].url


def test_a_head_answered_with_another_region_is_refused() -> None:
    sent: list[AWSPreparedRequest] = []
    head = _answer(400, {REDIRECTS["region_header"]: "us-east-1"})
    store = S3ObjectStore(_client(_ok_elsewhere(head), sent))
    with pytest.raises(S3RegionRedirectRefused):
        store.head(ObjectRef(container="dhow-acme-raw", key="k"))
    assert [r.url for r in sent if f".{REGION}." not in r.url] == []


_LIST = (
    b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name>'
    b"<KeyCount>1</KeyCount><IsTruncated>false</IsTruncated>"
    b"<Contents><Key>datasets/a</Key></Contents></ListBucketResult>"
)
_COPY = b"<CopyObjectResult><ETag>&quot;abc&quot;</ETag></CopyObjectResult>"


def _s3_like(request: AWSPreparedRequest) -> AWSResponse:
    if request.method == "GET" and "list-type=2" in request.url:
        return _answer(200, {}, _LIST)
    if request.method == "PUT" and "x-amz-copy-source" in request.headers:
        return _answer(200, {}, _COPY)
    if request.method == "DELETE":
        return _answer(204, {})
    if request.method == "GET":  # GetObject: a streaming body
        return _answer(200, {"ETag": '"abc"', "Content-Length": "4"}, b"rows")
    return _answer(200, {"ETag": '"abc"', "Content-Length": "4"})


def _header(request: AWSPreparedRequest, name: str) -> str | None:
    raw: object = request.headers.get(name)
    return raw.decode() if isinstance(raw, bytes) else None if raw is None else str(raw)


def test_every_store_call_names_the_stacks_account_as_bucket_owner(tmp_path: Path) -> None:
    sent: list[AWSPreparedRequest] = []
    store = S3ObjectStore(_client(_s3_like, sent))
    ref = ObjectRef(container="dhow-acme-raw", key="datasets/a")
    other = ObjectRef(container="dhow-acme-staging", key="sha256=x")
    path = tmp_path / "f"
    path.write_bytes(b"rows")
    store.head(ref)
    store.read_prefix(ref, 2)
    b"".join(store.iter_chunks(ref))
    store.put_bytes(other, b"rows")
    store.upload_file(other, path)
    store.delete(other)
    assert list(store.list_keys("dhow-acme-raw", "datasets/")) == ["datasets/a"]
    store.copy(ref, other)
    assert len(sent) == 8
    assert [_header(r, "x-amz-expected-bucket-owner") for r in sent] == [ACCOUNT] * 8
    assert _header(sent[-1], "x-amz-source-expected-bucket-owner") == ACCOUNT
    assert value("aws.s3.expected_bucket_owner_params") == [
        "ExpectedBucketOwner",
        "ExpectedSourceBucketOwner",
    ]
