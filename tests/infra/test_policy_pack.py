"""Each policy of the UAE pack, called the way the Pulumi engine calls it, on a resource
that passes and one that must be refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy.pack import policies
from shared.cloud_facts import value

_OPTS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
AWS_UAE = {"region": "me-central-1"}
KEY = "arn:aws:kms:me-central-1:123456789012:key/k"


def _policy(name: str) -> Any:
    (found,) = [p for p in policies() if p.name == name]
    return found


def _provider(props: dict[str, Any] | None) -> PolicyProviderResource | None:
    if props is None:
        return None
    return PolicyProviderResource("pulumi:providers:aws", props, "urn:provider", "uae")


def check_resource(
    name: str, typ: str, props: dict[str, Any], provider: dict[str, Any] | None = None
) -> list[str]:
    policy = _policy(name)
    assert isinstance(policy, ResourceValidationPolicy)
    found: list[str] = []
    args = ResourceValidationArgs(typ, props, f"urn:{typ}::r", "r", _OPTS, _provider(provider))
    policy.validate(args, lambda message, urn=None: found.append(message))
    return found


def check_stack(name: str, resources: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    policy = _policy(name)
    assert isinstance(policy, StackValidationPolicy)
    found: list[str] = []
    args = StackValidationArgs(
        [
            PolicyResource(typ, props, f"urn:{n}", n, _OPTS, _provider(AWS_UAE), None, [], {})
            for typ, n, props in resources
        ]
    )
    policy.validate(args, lambda message, urn=None: found.append(f"{urn}: {message}"))
    return found


def test_every_policy_is_mandatory() -> None:
    assert {p.enforcement_level.value for p in policies()} == {"mandatory"}
    assert len(policies()) == 7


@pytest.mark.parametrize(
    ("typ", "props", "provider", "refused"),
    [
        ("aws:sqs/queue:Queue", {}, {"region": "me-central-1"}, False),
        ("aws:sqs/queue:Queue", {}, {"region": "eu-west-1"}, True),
        ("aws:sqs/queue:Queue", {}, {}, True),  # no region known: refused, not assumed
        ("aws:sqs/queue:Queue", {}, None, True),
        # pulumi-aws 7's per-resource region wins over the provider's.
        ("aws:sqs/queue:Queue", {"region": "us-east-1"}, {"region": "me-central-1"}, True),
        ("azure-native:storage:StorageAccount", {"location": "uaenorth"}, {}, False),
        ("azure-native:storage:StorageAccount", {"location": "UAE Central"}, {}, False),
        ("azure-native:storage:StorageAccount", {"location": "westeurope"}, {}, True),
        ("azure-native:storage:BlobContainer", {}, {"location": "northeurope"}, True),
        ("azure-native:storage:BlobContainer", {}, {}, False),  # inherits its account's
    ],
)
def test_uae_region_only(
    typ: str, props: dict[str, Any], provider: dict[str, Any] | None, refused: bool
) -> None:
    assert bool(check_resource("uae-region-only", typ, props, provider)) is refused


@pytest.mark.parametrize(
    ("typ", "good", "bad"),
    [
        ("aws:sqs/queue:Queue", {"kmsMasterKeyId": KEY}, {"name": "q"}),
        ("aws:sns/topic:Topic", {"kmsMasterKeyId": KEY}, {"name": "t"}),
        (
            "aws:dynamodb/table:Table",
            {"serverSideEncryption": {"enabled": True, "kmsKeyArn": KEY}},
            {"serverSideEncryption": {"enabled": False}},
        ),
        (
            "azure-native:storage:StorageAccount",
            {
                "encryption": {"requireInfrastructureEncryption": True},
                "enableHttpsTrafficOnly": True,
                "minimumTlsVersion": "TLS1_2",
            },
            {"encryption": {}, "minimumTlsVersion": "TLS1_0"},
        ),
    ],
)
def test_encrypted_at_rest(typ: str, good: dict[str, Any], bad: dict[str, Any]) -> None:
    assert check_resource("encrypted-at-rest", typ, good, AWS_UAE) == []
    assert check_resource("encrypted-at-rest", typ, bad, AWS_UAE)


def test_no_public_storage() -> None:
    policy = "no-public-storage"
    assert check_resource(policy, "aws:s3/bucketAcl:BucketAcl", {"acl": "public-read"}, AWS_UAE)
    assert check_resource(policy, "aws:s3/bucketAcl:BucketAcl", {"acl": "private"}, AWS_UAE) == []
    account = "azure-native:storage:StorageAccount"
    assert check_resource(policy, account, {"allowBlobPublicAccess": True})
    assert check_resource(policy, account, {})  # Azure's default would allow it
    assert check_resource(policy, account, {"allowBlobPublicAccess": False}) == []
    container = "azure-native:storage:BlobContainer"
    assert check_resource(policy, container, {"publicAccess": "Blob"})
    assert check_resource(policy, container, {"publicAccess": "None"}) == []


@pytest.mark.parametrize(
    ("statement", "refused"),
    [
        ({"Effect": "Allow", "Action": "*", "Resource": "*"}, True),
        ({"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]}, True),
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::dhow-x-raw/*"}, False),
        ({"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"}, False),
        ({"Effect": "Deny", "Action": "*", "Resource": "*"}, False),
    ],
)
def test_no_wildcard_iam(statement: dict[str, Any], refused: bool) -> None:
    doc = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    for typ, props in (
        ("aws:iam/rolePolicy:RolePolicy", {"policy": doc}),
        ("aws:iam/policy:Policy", {"policy": doc}),
        ("aws:iam/role:Role", {"inlinePolicies": [{"name": "p", "policy": doc}]}),
    ):
        assert bool(check_resource("no-wildcard-iam", typ, props, AWS_UAE)) is refused


def test_no_owner_or_contributor_role_assignments() -> None:
    typ = "azure-native:authorization:RoleAssignment"
    owner = (
        "/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
    )
    reader = (
        "/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    )
    assert check_resource("no-wildcard-iam", typ, {"roleDefinitionId": owner})
    assert check_resource("no-wildcard-iam", typ, {"roleDefinitionId": reader}) == []


@pytest.mark.parametrize(
    ("actions", "refused"),
    [
        (["*"], True),
        (["Microsoft.MachineLearningServices/*"], True),
        (["Microsoft.MachineLearningServices/workspaces/*/write"], True),
        (["*/read"], True),
        (["Microsoft.MachineLearningServices/workspaces/jobs/read", "*"], True),
        (["Microsoft.MachineLearningServices/workspaces/*/read"], False),
        (["Microsoft.MachineLearningServices/workspaces/jobs/write"], False),
    ],
)
def test_a_custom_role_with_wildcard_actions_is_refused(actions: list[str], refused: bool) -> None:
    # fact("azure.rbac.custom_role_definition"): "*" grants every matching operation.
    typ = "azure-native:authorization:RoleDefinition"
    props = {"roleName": "r", "permissions": [{"actions": actions}], "assignableScopes": ["/x"]}
    assert bool(check_resource("no-wildcard-iam", typ, props)) is refused
    data = {**props, "permissions": [{"actions": [], "dataActions": actions}]}
    assert bool(check_resource("no-wildcard-iam", typ, data)) is refused


def _bucket(name: str, *, sse: str | None = "aws:kms", blocked: bool = True) -> list[Any]:
    out: list[Any] = [("aws:s3/bucket:Bucket", name, {"bucket": name})]
    if sse:
        rule = {"applyServerSideEncryptionByDefault": {"sseAlgorithm": sse}}
        out.append(
            (
                "aws:s3/bucketServerSideEncryptionConfiguration:"
                "BucketServerSideEncryptionConfiguration",
                f"{name}-sse",
                {"bucket": name, "rules": [rule]},
            )
        )
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    out.append(
        (
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            f"{name}-pab",
            {"bucket": name, **{f: blocked for f in flags}},
        )
    )
    return out


def test_buckets_encrypted_and_private() -> None:
    policy = "buckets-encrypted-and-private"
    assert check_stack(policy, _bucket("a") + _bucket("logs", sse="AES256")) == []
    assert check_stack(policy, _bucket("a", sse=None)) == [
        "urn:a: bucket a has no default encryption"
    ]
    assert check_stack(policy, _bucket("a", blocked=False)) == [
        "urn:a: bucket a has no complete public access block"
    ]


def test_lambda_failures_kept() -> None:
    fn = "aws:lambda/function:Function"
    with_dlq = (fn, "a", {"name": "a", "deadLetterConfig": {"targetArn": "arn:aws:sqs:x"}})
    bare = (fn, "b", {"name": "b"})
    destination = (
        "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig",
        "b-invoke",
        {"functionName": "b", "destinationConfig": {"onFailure": {"destination": "arn:q"}}},
    )
    assert check_stack("lambda-failures-kept", [with_dlq]) == []
    assert check_stack("lambda-failures-kept", [with_dlq, bare]) == [
        "urn:b: Lambda b has neither a dead-letter queue nor an on-failure destination"
    ]
    assert check_stack("lambda-failures-kept", [with_dlq, bare, destination]) == []


@pytest.mark.parametrize(
    ("provider", "props", "refused"),
    [
        ({"region": "me-central-1"}, {}, True),
        ({"region": "me-central-1"}, {"region": "me-central-1"}, True),
        ({"region": "eu-west-1"}, {}, False),  # offered there (refused by uae-region-only)
        ({"region": "eu-west-1"}, {"region": "il-central-1"}, True),
    ],
)
def test_a_function_url_is_refused_where_lambda_has_none(
    provider: dict[str, Any], props: dict[str, Any], refused: bool
) -> None:
    regions = value("aws.lambda.function_url_unsupported_regions")
    assert "me-central-1" in regions
    typ = "aws:lambda/functionUrl:FunctionUrl"
    url = {"functionName": "dhow-uae-prod-serve-customers", "authorizationType": "AWS_IAM"}
    found = check_resource("no-function-url-where-unsupported", typ, {**url, **props}, provider)
    assert bool(found) is refused
    if refused:
        assert "API Gateway" in found[0]
    # Other resources in the same region are not this rule's business.
    assert not check_resource(
        "no-function-url-where-unsupported", "aws:apigatewayv2/api:Api", {}, AWS_UAE
    )
