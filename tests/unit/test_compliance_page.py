"""The compliance report's reading of each resource's properties (held to the cloud facts
they rely on) and its HTML page: well-formed, self-contained, failures first, and every
value escaped, hostile names included."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

from infra.compliance import ComplianceReport, StackResource, stack_report
from infra.compliance_page import render_html, write
from shared.cloud_facts import value
from shared.topology import build_topology

AWS = {"region": "me-central-1"}
AZURE = {"location": "uaenorth"}
KEY = "arn:aws:kms:me-central-1:123456789012:key/k"
HOSTILE = '<script>alert("x")</script>&\'"'


def _bucket(name: str, *, algorithm: str | None = "aws:kms", flags: int = 4) -> list[StackResource]:
    out = [StackResource("aws:s3/bucket:Bucket", name, name, {"bucket": name}, AWS)]
    if algorithm:
        default = {"sseAlgorithm": algorithm}
        if algorithm != "AES256":
            default["kmsMasterKeyId"] = KEY
        out.append(
            StackResource(
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                f"{name}-sse",
                "x",
                {"bucket": name, "rules": [{"applyServerSideEncryptionByDefault": default}]},
                AWS,
            )
        )
    settings = value("aws.s3.public_access_block_settings")
    out.append(
        StackResource(
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            f"{name}-pab",
            "x",
            {"bucket": name, **{f: True for f in settings[:flags]}},
            AWS,
        )
    )
    return out


def _report(*resources: StackResource) -> Any:
    return stack_report("aws-uae", list(resources), [], source="test", topology=build_topology("t"))


def _one(report: Any, typ: str) -> Any:
    (found,) = [e for e in report.resources if e.type == typ]
    return found


def test_bucket_encryption_reads_the_default_encryption_rule() -> None:
    fact = value("aws.s3.default_encryption")
    for algorithm in fact["kms"]:
        entry = _one(_report(*_bucket("b", algorithm=algorithm)), "aws:s3/bucket:Bucket")
        assert entry.encryption == f"SSE-KMS ({algorithm})"
        assert entry.key == KEY
    entry = _one(_report(*_bucket("b", algorithm=fact["s3_managed"])), "aws:s3/bucket:Bucket")
    assert entry.encryption == "SSE-S3 (AES256)"
    assert entry.failures == []
    entry = _one(_report(*_bucket("b", algorithm=None)), "aws:s3/bucket:Bucket")
    assert entry.encryption == "none"
    assert entry.failures == ["holds data without encryption at rest"]


def test_a_bucket_is_private_only_with_all_four_block_settings() -> None:
    settings = value("aws.s3.public_access_block_settings")
    assert len(settings) == 4
    assert _one(_report(*_bucket("b")), "aws:s3/bucket:Bucket").failures == []
    entry = _one(_report(*_bucket("b", flags=3)), "aws:s3/bucket:Bucket")
    assert entry.failures == [f"open to the public: public access block missing {settings[3]}"]


def test_bucket_retention_reads_enabled_lifecycle_rules() -> None:
    fact = value("aws.s3.lifecycle_expiration")
    (outer, inner), (old_outer, old_inner) = fact["current"], fact["noncurrent"]
    rules = [
        {"status": "Enabled", outer: {inner: 90}},
        {"status": "Enabled", old_outer: {old_inner: 30}},
        {"status": "Disabled", outer: {inner: 1}},
    ]
    lifecycle = StackResource(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        "b-lifecycle",
        "x",
        {"bucket": "b", "rules": rules},
        AWS,
    )
    entry = _one(_report(*_bucket("b"), lifecycle), "aws:s3/bucket:Bucket")
    assert entry.retention == "current objects 90 days; old versions 30 days (versioning off)"
    entry = _one(_report(*_bucket("b")), "aws:s3/bucket:Bucket")
    assert entry.retention == "current objects until deleted (versioning off)"


def test_a_queue_without_retention_keeps_messages_for_sqs_default() -> None:
    fact = value("aws.sqs.message_retention")
    queue = StackResource("aws:sqs/queue:Queue", "q", "q", {"kmsMasterKeyId": KEY}, AWS)
    entry = _one(_report(queue), "aws:sqs/queue:Queue")
    assert entry.retention == f"messages {fact['default_s'] / 86400:g} days"
    longest = StackResource(
        "aws:sqs/queue:Queue", "q", "q", {"messageRetentionSeconds": fact["max_s"]}, AWS
    )
    entry = _one(_report(longest), "aws:sqs/queue:Queue")
    assert entry.retention == "messages 14 days"
    assert entry.failures == ["holds data without encryption at rest"]


def test_log_groups_never_expire_without_retention_and_name_their_key() -> None:
    fact = value("aws.logs.retention_and_key")
    typ = "aws:cloudwatch/logGroup:LogGroup"
    for never in fact["never_expire"]:
        props = {"retentionInDays": never} if never is not None else {}
        entry = _one(_report(StackResource(typ, "g", "g", props, AWS)), typ)
        assert entry.retention == "never expires"
        assert entry.encryption == "CloudWatch Logs server-side encryption"
        assert entry.failures == []  # CloudWatch Logs always encrypts
    props = {"retentionInDays": 365, fact["key_field"]: KEY}
    entry = _one(_report(StackResource(typ, "g", "g", props, AWS)), typ)
    assert (entry.retention, entry.encryption, entry.key) == (
        "365 days",
        "customer managed KMS key",
        KEY,
    )


def _account(encryption: dict[str, Any], **props: Any) -> StackResource:
    return StackResource(
        "azure-native:storage:StorageAccount",
        "data",
        "data",
        {"accountName": "acct", "location": "uaenorth", "encryption": encryption, **props},
        AZURE,
    )


def test_storage_encryption_names_whose_key() -> None:
    fact = value("azure.storage.encryption_key_source")
    cmk = _account(
        {
            "keySource": fact["customer_managed"],
            "keyVaultProperties": {"keyVaultUri": "https://v.vault.azure.net/", "keyName": "k"},
        },
        allowBlobPublicAccess=False,
    )
    container = StackResource(
        "azure-native:storage:BlobContainer",
        "raw",
        "raw",
        {"accountName": "acct", "containerName": "raw", "publicAccess": "None"},
        AZURE,
    )
    report = _report(cmk, container)
    account = _one(report, "azure-native:storage:StorageAccount")
    assert (account.encryption, account.key) == (
        "customer-managed key",
        "https://v.vault.azure.net/k",
    )
    assert _one(report, "azure-native:storage:BlobContainer").encryption == (
        "customer-managed key, of account acct"
    )
    managed = _account({"keySource": fact["microsoft_managed"]}, allowBlobPublicAccess=False)
    entry = _one(_report(managed), "azure-native:storage:StorageAccount")
    assert entry.encryption == "Microsoft-managed keys"
    assert entry.failures == []


def test_anonymous_blob_access_is_a_failure_unless_the_account_disallows_it() -> None:
    fact = value("azure.storage.blob_public_access")
    entry = _one(_report(_account({})), "azure-native:storage:StorageAccount")
    assert entry.failures == [
        "open to the public: anonymous blob access allowed; network default Allow; shared keys on"
    ]
    closed = _account({}, **{fact["account_field"]: False})
    assert _one(_report(closed), "azure-native:storage:StorageAccount").failures == []
    for access, failing in [("None", False), (None, False), ("Blob", True), ("Container", True)]:
        container = StackResource(
            "azure-native:storage:BlobContainer", "c", "c", {"publicAccess": access}, AZURE
        )
        entry = _one(_report(container), "azure-native:storage:BlobContainer")
        assert bool(entry.failures) is failing
        assert (access in fact["private_container"]) is not failing


class _Checker(HTMLParser):
    """Collects what a browser would build: nesting, tags, attributes and text."""

    VOID = frozenset({"meta", "br"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_page_is_well_formed_self_contained_and_escapes_hostile_names(tmp_path: Any) -> None:
    hostile = StackResource(
        "aws:sqs/queue:Queue", HOSTILE, HOSTILE, {"name": HOSTILE, "region": "eu-west-1"}, AWS
    )
    report = ComplianceReport([_report(hostile, *_bucket("fine"))])
    page = render_html(report)
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert "script" not in checker.tags
    # Self-contained: nothing to fetch.
    assert {name for name, _ in checker.attrs} <= {"lang", "charset", "class"}
    text = "".join(checker.text)
    assert HOSTILE in text  # shown as text, not run
    # The summary of failures comes first, then the stack's resources.
    assert text.index("Failures") < text.index("Resources")
    assert text.count(HOSTILE) >= 2  # in the summary and in the resource table
    assert "eu-west-1" in text

    html_path, json_path = write(report, tmp_path / "out")
    assert html_path.read_text() == page
    document = json.loads(json_path.read_text())
    assert document["ok"] is False
    assert {f["what"] for f in document["failures"]} >= {"holds data without encryption at rest"}
