"""Every policy the AWS program generates, judged by parliament and by the Service
Authorization Reference it ships (tests/infra/iam_check.py): statements that can never
allow what they name fail here, before a `pulumi up` meets them as AccessDenied."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from infra.aws import iam
from shared.cloud_facts import fact, value
from shared.topology import build_topology
from tests.infra.harness import ACCOUNT, Program
from tests.infra.iam_check import (
    allows,
    dependent_actions,
    generated_policies,
    lint,
    resource_types,
)

STAGE = "uae-prod"
SCOPE = iam.AwsScope("me-central-1", ACCOUNT, STAGE)
KEY = f"arn:aws:kms:me-central-1:{ACCOUNT}:key/key-0001"


@dataclass(frozen=True)
class Accepted:
    """A finding parliament reports that is right by the cloud's own documentation."""

    typ: str
    issue: str
    reason: str
    detail: str = ""  # a part of the finding's detail, where the issue alone is too broad


# Each accepted finding says why; one that no longer occurs fails the test, so the list
# cannot outlive the policies it excuses.
ACCEPTED = [
    Accepted(
        "aws:iam/role:Role",
        "MALFORMED",
        "a trust policy names a Principal and no Resource ("
        + fact("aws.iam.trust_policy_has_no_resource").source
        + ")",
        detail="neither Resource nor NotResource",
    ),
    Accepted(
        "aws:ecr/repositoryPolicy:RepositoryPolicy",
        "MALFORMED",
        "a repository policy applies to its repository and names no Resource",
        detail="neither Resource nor NotResource",
    ),
    Accepted(
        "aws:kms/key:Key",
        "RESOURCE_STAR",
        'in a key policy "*" is the key itself ('
        + fact("aws.kms.key_policy_resource").source
        + ")",
    ),
    Accepted(
        "aws:kms/key:Key",
        "UNKNOWN_CONDITION_FOR_ACTION",
        "CloudWatch Logs' documented key policy: kms:Describe* under the logs encryption "
        "context, as AWS writes it; the Describe actions it cannot match stay denied",
    ),
    Accepted(
        "aws:kms/key:Key",
        "MISMATCHED_TYPE",
        "CloudWatch Logs' documented key policy matches kms:EncryptionContext:aws:logs:arn "
        "with ArnLike; parliament types that context key as a plain string",
    ),
]


def _function_policies() -> dict[str, dict[str, Any]]:
    topo = build_topology(STAGE)
    return {
        fn.logical: iam.function_policy(
            topo, fn, SCOPE, function_name=fn.name, key_arn=KEY, dlq_arn="arn:aws:sqs:dlq"
        )
        for fn in topo.functions
    }


def test_every_generated_policy_is_lint_clean_or_its_finding_is_accepted(
    aws_program: Program,
) -> None:
    policies = generated_policies(aws_program)
    kinds = {typ for typ, _, _ in policies}
    # The linter sees every kind of policy the stack writes.
    assert {
        "aws:iam/rolePolicy:RolePolicy",
        "aws:iam/role:Role",
        "aws:kms/key:Key",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:sqs/queuePolicy:QueuePolicy",
        "aws:ecr/repositoryPolicy:RepositoryPolicy",
    } <= kinds
    findings, used = [], set()
    for typ, name, doc in policies:
        for f in lint(doc):
            excuse = next(
                (
                    a
                    for a in ACCEPTED
                    if (a.typ, a.issue) == (typ, f.issue) and a.detail in str(f.detail)
                ),
                None,
            )
            if excuse is None:
                findings.append(f"{typ} {name}: {f.issue} {f.detail}")
            else:
                used.add(excuse)
    print(
        f"\nparliament: {len(policies)} policies linted, {len(findings)} findings, "
        f"{len(used)} kinds of finding accepted:"
    )
    for a in used:
        print(f"  accepted {a.typ} {a.issue}: {a.reason}")
    assert not findings, "\n".join(findings)
    assert used == set(ACCEPTED), f"accepted findings that no longer occur: {set(ACCEPTED) - used}"


def test_rollback_can_stop_a_deployment() -> None:
    deploy = _function_policies()["deploy"]
    star = value("aws.codedeploy.stop_deployment_resource")
    # The reference itself says StopDeployment has no resource type to scope it to ...
    assert resource_types("codedeploy:StopDeployment") == set()
    # ... so only a statement on "*" allows it.
    assert allows(deploy, "codedeploy:StopDeployment", star)


def test_unscoped_actions_are_exactly_those_the_reference_cannot_scope() -> None:
    for action in iam.UNSCOPED_ACTIONS:
        # A type marked "*" is required: the action is authorized on it, never on "*".
        required = {t for t in resource_types(action) if t.endswith("*")}
        assert not required, f"{action} is authorized on {required}: give it its ARNs"


def test_grant_condition_only_on_the_grant_operations() -> None:
    grant_ops = set(value("aws.kms.grant_is_for_aws_resource_actions"))
    for logical, policy in _function_policies().items():
        for stmt in policy["Statement"]:
            if "kms:GrantIsForAWSResource" in json.dumps(stmt.get("Condition", {})):
                assert set(stmt["Action"]) <= grant_ops, (logical, stmt["Sid"])


@pytest.mark.parametrize("logical", ["validate", "train_launch", "deploy"])
def test_functions_that_start_encrypted_jobs_can_describe_the_key(logical: str) -> None:
    assert allows(_function_policies()[logical], "kms:DescribeKey", KEY)


def test_creating_with_tags_is_allowed_to_tag() -> None:
    creates = set(value("aws.sagemaker.create_with_tags_needs_add_tags"))
    topo = build_topology(STAGE)
    checked = 0
    for fn in topo.functions:
        policy = _function_policies()[fn.logical]
        for perm in fn.permissions:
            for action in set(iam.permission_actions(perm)) & creates:
                # The reference agrees that the create depends on AddTags.
                assert "sagemaker:AddTags" in dependent_actions(action), action
                for arn in iam.resource_arns(perm, topo, SCOPE):
                    assert allows(policy, "sagemaker:AddTags", arn), (fn.logical, action, arn)
                    checked += 1
    assert checked >= 3  # processing jobs, model package groups, training jobs at least


def test_every_dependent_action_of_a_granted_action_is_granted() -> None:
    # The reference's dependent actions: what IAM checks besides the action itself.
    for logical, policy in _function_policies().items():
        granted = {a for s in policy["Statement"] for a in s["Action"]}
        for action in granted:
            # Within the action's own service (sagemaker:AddTags for a create with tags);
            # other services' entries are conditional (Service Quotas lists a read per
            # quota'd service, which only asking for that service's quotas needs).
            service = action.split(":")[0]
            missing = {
                d
                for d in dependent_actions(action)
                if d.split(":")[0] == service and d not in granted
            }
            assert not missing, f"{logical}: {action} also needs {sorted(missing)}"


def test_deploy_can_write_the_serve_function_s_encrypted_environment() -> None:
    deploy = _function_policies()["deploy"]
    for action in value("aws.lambda.cmk_environment_update_key_actions"):
        assert allows(deploy, action, KEY)
    # ... and nobody else may encrypt with the key.
    for logical, policy in _function_policies().items():
        if logical != "deploy":
            assert not allows(policy, "kms:Encrypt", KEY), logical
