"""The UAE policy pack's rules as plain functions over plain resources.

``infra/policy/__main__.py`` runs them at ``pulumi preview``/``up`` (mandatory: a
violation stops the update before anything is created); the tests run the same
functions on resources built by hand and on everything the mocked program registers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.cloud_facts import value
from shared.constants import AWS_REGIONS_ALLOWED, AZURE_LOCATIONS_ALLOWED


@dataclass(frozen=True)
class Res:
    """A resource as a policy sees it: type token, name, properties, provider's props."""

    typ: str
    name: str
    props: Mapping[str, Any]
    provider: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Violation:
    policy: str
    resource: str
    message: str


def _norm_location(location: str) -> str:
    return location.replace(" ", "").lower()


# --- one resource at a time ------------------------------------------------------------


def region_violations(res: Res) -> list[str]:
    """An AWS resource outside me-central-1, or an Azure one outside uaenorth/uaecentral."""
    if res.typ.startswith("aws:"):
        # pulumi-aws 7 lets a resource override its provider's region.
        region = res.props.get("region") or (res.provider or {}).get("region")
        if region not in AWS_REGIONS_ALLOWED:
            return [
                f"AWS resource in region {region!r}: Dhow stacks run only in "
                f"{', '.join(AWS_REGIONS_ALLOWED)} (set the provider's region)"
            ]
    if res.typ.startswith("azure-native:"):
        out = []
        for where, location in (
            ("location", res.props.get("location")),
            ("provider location", (res.provider or {}).get("location")),
        ):
            if (
                isinstance(location, str)
                and _norm_location(location) not in AZURE_LOCATIONS_ALLOWED
            ):
                out.append(
                    f"Azure resource with {where} {location!r}: Dhow stacks run only in "
                    f"{' or '.join(AZURE_LOCATIONS_ALLOWED)}"
                )
        return out
    return []


def encryption_violations(res: Res) -> list[str]:
    """Queues, topics and tables without encryption at rest; Azure storage without
    infrastructure encryption or with plain HTTP. (Buckets: ``bucket_violations``.)"""
    p = res.props
    if res.typ == "aws:sqs/queue:Queue" and not (
        p.get("kmsMasterKeyId") or p.get("sqsManagedSseEnabled")
    ):
        return ["SQS queue without encryption: set kmsMasterKeyId to the stack's key"]
    if res.typ == "aws:sns/topic:Topic" and not p.get("kmsMasterKeyId"):
        return ["SNS topic without encryption: set kmsMasterKeyId to the stack's key"]
    if res.typ == "aws:dynamodb/table:Table":
        sse = p.get("serverSideEncryption") or {}
        if not (sse.get("enabled") and sse.get("kmsKeyArn")):
            return ["DynamoDB table without a customer-managed key: set serverSideEncryption"]
    if res.typ == "azure-native:storage:StorageAccount":
        out = []
        if not (p.get("encryption") or {}).get("requireInfrastructureEncryption"):
            out.append("storage account without infrastructure (double) encryption")
        if p.get("enableHttpsTrafficOnly") is False:
            out.append("storage account accepts plain HTTP")
        if p.get("minimumTlsVersion") not in ("TLS1_2", "TLS1_3"):
            out.append("storage account accepts TLS below 1.2: set minimumTlsVersion TLS1_2")
        return out
    return []


def public_access_violations(res: Res) -> list[str]:
    p = res.props
    if res.typ in ("aws:s3/bucket:Bucket", "aws:s3/bucketAcl:BucketAcl") and str(
        p.get("acl", "")
    ).startswith("public"):
        return [f"bucket ACL {p.get('acl')!r} makes objects public"]
    if (
        res.typ == "azure-native:storage:StorageAccount"
        and p.get("allowBlobPublicAccess") is not False
    ):
        return ["storage account allows public blob access: set allowBlobPublicAccess false"]
    if res.typ == "azure-native:storage:BlobContainer" and p.get("publicAccess") not in (
        None,
        "None",
    ):
        return [f"blob container with public access {p.get('publicAccess')!r}"]
    return []


_IAM_POLICY_TYPES = (
    "aws:iam/policy:Policy",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
)
# Azure's built-in roles that grant everything on their scope.
_AZURE_BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def wildcard_statements(document: str | Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Allow statements with a ``*`` action (or ``service:*``) on a ``*`` resource."""
    doc = json.loads(document) if isinstance(document, str) else document
    bad = []
    for stmt in _as_list(doc.get("Statement", [])):
        if stmt.get("Effect") != "Allow":
            continue
        actions = [str(a) for a in _as_list(stmt.get("Action", []))]
        resources = [str(r) for r in _as_list(stmt.get("Resource", []))]
        if any(a == "*" or a.endswith(":*") for a in actions) and "*" in resources:
            bad.append(stmt)
    return bad


def custom_role_wildcards(props: Mapping[str, Any]) -> list[str]:
    """The actions of a custom role definition that use ``*`` (fact
    azure.rbac.custom_role_definition): only ``<provider>/<type>/*/read`` style reads
    are let through, and never a bare ``*`` or ``*/read``."""
    wildcard = value("azure.rbac.custom_role_definition")["wildcard"]
    bad = []
    for perm in props.get("permissions") or []:
        for key in ("actions", "dataActions"):
            for action in perm.get(key) or []:
                a = str(action)
                if wildcard not in a:
                    continue
                provider_read = a.endswith("/read") and not a.startswith(wildcard)
                if not provider_read or a.count(wildcard) > 1:
                    bad.append(a)
    return bad


def iam_violations(res: Res) -> list[str]:
    docs: list[str | Mapping[str, Any]] = []
    if res.typ in _IAM_POLICY_TYPES and res.props.get("policy"):
        docs.append(res.props["policy"])
    if res.typ == "aws:iam/role:Role":
        docs += [p["policy"] for p in res.props.get("inlinePolicies") or [] if p.get("policy")]
    out = [
        f"IAM statement allows {stmt.get('Action')!r} on every resource: name the actions "
        "and the resources (infra/aws/iam.py generates them from the topology)"
        for doc in docs
        for stmt in wildcard_statements(doc)
    ]
    if res.typ == "azure-native:authorization:RoleDefinition":
        out += [
            f"custom role grants {action!r}: a wildcard grants every matching operation, "
            "present and future; list the actions the identity's calls need "
            "(infra/azure/roles.py)"
            for action in custom_role_wildcards(res.props)
        ]
    if res.typ == "azure-native:authorization:RoleAssignment":
        role = str(res.props.get("roleDefinitionId", "")).rsplit("/", 1)[-1]
        if role in _AZURE_BROAD_ROLES:
            out.append(
                f"role assignment grants {_AZURE_BROAD_ROLES[role]}: assign the data-plane "
                "role the function needs on the one resource it uses"
            )
    return out


def function_url_violations(res: Res) -> list[str]:
    """A Lambda Function URL where Lambda offers none (me-central-1 among them): the
    create would fail at `pulumi up`. Serve through API Gateway instead."""
    if res.typ != "aws:lambda/functionUrl:FunctionUrl":
        return []
    region = res.props.get("region") or (res.provider or {}).get("region")
    if region in value("aws.lambda.function_url_unsupported_regions"):
        return [
            f"Lambda Function URLs do not exist in {region}: put the function behind an "
            "API Gateway HTTP API with IAM auth (infra/aws/serving.py does)"
        ]
    return []


RESOURCE_RULES = {
    "uae-region-only": region_violations,
    "encrypted-at-rest": encryption_violations,
    "no-public-storage": public_access_violations,
    "no-wildcard-iam": iam_violations,
    "no-function-url-where-unsupported": function_url_violations,
}


# --- the whole stack -------------------------------------------------------------------

_SSE_TYPES = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
_PAB_TYPE = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
_PAB_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _bucket_name(res: Res) -> str:
    return str(res.props.get("bucket") or res.props.get("id") or res.name)


StackRule = Callable[[Iterable[Res]], list["Violation"]]


def bucket_violations(resources: Iterable[Res]) -> list[Violation]:
    """Every bucket has a default encryption (SSE-KMS, or SSE-S3 where S3 allows nothing
    else) and a public access block with all four settings on."""
    resources = list(resources)
    encrypted = {
        str(r.props.get("bucket"))
        for r in resources
        if r.typ in _SSE_TYPES
        and any(
            (rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
            in ("aws:kms", "aws:kms:dsse", "AES256")
            for rule in r.props.get("rules") or []
        )
    }
    blocked = {
        str(r.props.get("bucket"))
        for r in resources
        if r.typ == _PAB_TYPE and all(r.props.get(flag) is True for flag in _PAB_FLAGS)
    }
    out = []
    for b in resources:
        if b.typ != "aws:s3/bucket:Bucket":
            continue
        name = _bucket_name(b)
        if name not in encrypted:
            out.append(
                Violation("encrypted-at-rest", b.name, f"bucket {name} has no default encryption")
            )
        if name not in blocked:
            out.append(
                Violation(
                    "no-public-storage",
                    b.name,
                    f"bucket {name} has no complete public access block",
                )
            )
    return out


def lambda_violations(resources: Iterable[Res]) -> list[Violation]:
    """Every Lambda keeps what it fails on: a DLQ or an on-failure destination."""
    resources = list(resources)
    with_destination = {
        str(r.props.get("functionName"))
        for r in resources
        if r.typ == "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig"
        and ((r.props.get("destinationConfig") or {}).get("onFailure") or {}).get("destination")
    }
    out = []
    for fn in resources:
        if fn.typ != "aws:lambda/function:Function":
            continue
        name = str(fn.props.get("name") or fn.name)
        if (fn.props.get("deadLetterConfig") or {}).get("targetArn"):
            continue
        if name in with_destination or str(fn.props.get("arn")) in with_destination:
            continue
        out.append(
            Violation(
                "lambda-failures-kept",
                fn.name,
                f"Lambda {name} has neither a dead-letter queue nor an on-failure destination",
            )
        )
    return out


def violations(resources: Iterable[Res]) -> list[Violation]:
    """Everything the pack refuses in a stack."""
    resources = list(resources)
    out = [
        Violation(policy, r.name, message)
        for r in resources
        for policy, rule in RESOURCE_RULES.items()
        for message in rule(r)
    ]
    return out + bucket_violations(resources) + lambda_violations(resources)
