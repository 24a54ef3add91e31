"""The stack's key and its buckets: SSE-KMS with the rotating key, versioned, private,
TLS only, access-logged, with lifecycle rules where objects are transient."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig

# Staged uploads are copied on to curated or quarantine; what is left is a failure
# already recorded in lineage. Captures feed drift windows of at most a few days.
_EXPIRE_DAYS = {"staging": 30, "capture": 90}
_NONCURRENT_DAYS = 30


def key_policy(account: str, region: str) -> str:
    """The root statement keeps the key manageable through IAM (AWS's default); the
    services that write encrypted messages and logs for the stack use it for this
    account only."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AccountAdmin",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "ServicesThatDeliverToEncryptedQueuesAndTopics",
                    "Effect": "Allow",
                    "Principal": {
                        "Service": [
                            "events.amazonaws.com",
                            "cloudwatch.amazonaws.com",
                            "sns.amazonaws.com",
                        ]
                    },
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account}},
                },
                {
                    "Sid": "EncryptedLogGroups",
                    "Effect": "Allow",
                    "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                    "Action": [
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Describe*",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "ArnLike": {
                            "kms:EncryptionContext:aws:logs:arn": (
                                f"arn:aws:logs:{region}:{account}:log-group:*"
                            )
                        }
                    },
                },
            ],
        }
    )


def _tls_only(bucket_arn: str) -> dict[str, Any]:
    return {
        "Sid": "TlsOnly",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def tls_only_policy(bucket_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [_tls_only(bucket_arn)]})


def access_logs_policy(log_bucket_arn: str, account: str, sources: dict[str, str]) -> str:
    """TLS only, and S3's log delivery may write each source bucket's logs under its own
    prefix (``sources``: prefix -> source bucket ARN), for this account only. With
    BucketOwnerEnforced, ACLs cannot grant it: without this statement no log arrives."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                _tls_only(log_bucket_arn),
                *(
                    {
                        "Sid": f"ServerAccessLogs{i}",
                        "Effect": "Allow",
                        "Principal": {"Service": "logging.s3.amazonaws.com"},
                        "Action": "s3:PutObject",
                        "Resource": f"{log_bucket_arn}/{prefix}*",
                        "Condition": {
                            "ArnLike": {"aws:SourceArn": source_arn},
                            "StringEquals": {"aws:SourceAccount": account},
                        },
                    }
                    for i, (prefix, source_arn) in enumerate(sorted(sources.items()))
                ),
            ],
        }
    )


@dataclass(frozen=True)
class DataLakeArgs:
    cfg: StackConfig
    account: pulumi.Output[str]


class DataLake(pulumi.ComponentResource):
    """The KMS key every encrypted resource of the stack uses, and the buckets."""

    key: aws.kms.Key
    buckets: dict[str, aws.s3.Bucket]

    def __init__(
        self, name: str, args: DataLakeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:aws:DataLake", name, None, opts)
        cfg, account = args.cfg, args.account
        child = pulumi.ResourceOptions(parent=self)
        self.key = aws.kms.Key(
            "key",
            description=f"Dhow {cfg.stage}: buckets, queues, topics, tables, logs",
            enable_key_rotation=True,
            rotation_period_in_days=365,
            deletion_window_in_days=30,
            policy=account.apply(lambda a: key_policy(a, cfg.region)),
            tags=cfg.tags,
            opts=child,
        )
        aws.kms.Alias(
            "key-alias", name=f"alias/{cfg.prefix}", target_key_id=self.key.id, opts=child
        )

        # Server access logs can only be delivered to an SSE-S3 bucket (S3 refuses KMS
        # there), so this one bucket uses AES256; it holds request logs, not data.
        self.access_logs = self._bucket(cfg, "access_logs", cfg.name("access-logs"), None)
        self.buckets = {
            b.logical: self._bucket(cfg, b.logical, b.name, self.key) for b in cfg.topology.buckets
        }
        # The stack's own deployment artifacts (Lambda layers, published from here:
        # a direct upload is limited to 50 MB zipped).
        self.artifacts = self._bucket(cfg, "artifacts", cfg.name("artifacts"), self.key)
        logged = [*self.buckets.values(), self.artifacts]
        aws.s3.BucketPolicy(
            "access_logs-policy",
            bucket=self.access_logs.id,
            policy=pulumi.Output.all(
                self.access_logs.arn, account, *[b.bucket for b in logged], *[b.arn for b in logged]
            ).apply(
                lambda v: access_logs_policy(
                    v[0],
                    v[1],
                    dict(
                        zip(
                            [f"{n}/" for n in v[2 : 2 + len(logged)]],
                            v[2 + len(logged) :],
                            strict=True,
                        )
                    ),
                )
            ),
            opts=child,
        )
        for b in cfg.topology.buckets:
            if b.emits_object_events:  # uploads reach EventBridge's default bus
                aws.s3.BucketNotification(
                    f"{b.logical}-notifications",
                    bucket=self.buckets[b.logical].id,
                    eventbridge=True,
                    opts=child,
                )
        self.register_outputs(
            {"key_arn": self.key.arn, "buckets": {k: b.id for k, b in self.buckets.items()}}
        )

    def _bucket(
        self, cfg: StackConfig, logical: str, name: str, key: aws.kms.Key | None
    ) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(logical, bucket=name, tags=cfg.tags, opts=child)
        aws.s3.BucketOwnershipControls(
            f"{logical}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
        aws.s3.BucketPublicAccessBlock(
            f"{logical}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        default: dict[str, str | pulumi.Output[str]] = (
            {"sse_algorithm": "aws:kms", "kms_master_key_id": key.arn}
            if key is not None
            else {"sse_algorithm": "AES256"}
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{logical}-encryption",
            bucket=bucket.id,
            rules=[
                {"apply_server_side_encryption_by_default": default, "bucket_key_enabled": True}
            ],
            opts=child,
        )
        aws.s3.BucketVersioning(
            f"{logical}-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        if key is not None:  # the log bucket's policy also admits log delivery (above)
            aws.s3.BucketPolicy(
                f"{logical}-tls-only",
                bucket=bucket.id,
                policy=bucket.arn.apply(tls_only_policy),
                opts=child,
            )
            aws.s3.BucketLogging(
                f"{logical}-access-logging",
                bucket=bucket.id,
                target_bucket=self.access_logs.id,
                target_prefix=f"{name}/",
                opts=child,
            )
        rules: list[aws.s3.BucketLifecycleConfigurationRuleArgs] = [
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="old-versions",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                noncurrent_version_expiration={"noncurrent_days": _NONCURRENT_DAYS},
                abort_incomplete_multipart_upload={"days_after_initiation": 7},
            )
        ]
        days = _EXPIRE_DAYS.get(logical, 365 if key is None else None)
        if days is not None:
            rules.append(
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id=f"expire-after-{days}-days",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration={"days": days},
                )
            )
        aws.s3.BucketLifecycleConfiguration(
            f"{logical}-lifecycle", bucket=bucket.id, rules=rules, opts=child
        )
        return bucket
