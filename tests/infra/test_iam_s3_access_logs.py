"""Server access logs reach their bucket: with BucketOwnerEnforced, only the log bucket's
policy can let S3's log delivery write them."""

from __future__ import annotations

import json
from typing import Any

from shared.cloud_facts import value
from shared.topology import build_topology
from tests.infra.harness import ACCOUNT, Program

LOG_BUCKET = "dhow-uae-prod-access-logs"


def _policy(program: Program, bucket: str) -> dict[str, Any]:
    (doc,) = [
        json.loads(r.inputs["policy"])
        for r in program.of_type("aws:s3/bucketPolicy:BucketPolicy")
        if r.inputs["bucket"] == bucket
    ]
    return doc


def test_log_delivery_may_write_each_source_bucket_s_logs(aws_program: Program) -> None:
    rule = value("aws.s3.access_log_delivery_policy")
    statements = _policy(aws_program, LOG_BUCKET)["Statement"]
    delivery = [s for s in statements if s.get("Principal") == {"Service": rule["principal"]}]
    logging = {
        r.inputs["bucket"]: r.inputs["targetPrefix"]
        for r in aws_program.of_type("aws:s3/bucketLogging:BucketLogging")
    }
    assert set(logging) == {b.name for b in build_topology("uae-prod").buckets} | {
        "dhow-uae-prod-artifacts"
    }
    by_source = {s["Condition"][rule["source_arn_operator"]]["aws:SourceArn"]: s for s in delivery}
    for source, prefix in logging.items():
        stmt = by_source[f"arn:aws:s3:::{source}"]
        assert stmt["Effect"] == "Allow"
        assert stmt["Action"] == rule["action"]
        # Each source writes only under the prefix its logging configuration names.
        assert stmt["Resource"] == f"arn:aws:s3:::{LOG_BUCKET}/{prefix}*"
        assert stmt["Condition"][rule["source_account_operator"]] == {"aws:SourceAccount": ACCOUNT}
    assert len(delivery) == len(logging)


def test_the_log_bucket_still_refuses_plain_http(aws_program: Program) -> None:
    deny = _policy(aws_program, LOG_BUCKET)["Statement"][0]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
