"""Least-privilege IAM documents, generated from the topology's permissions.

The topology says what a function does to a resource in neutral verbs (read, write,
consume, launch, ...); ``ACTIONS`` below is where each becomes IAM actions. Each
function's role may take exactly those actions, on exactly the resources it names (an
object action on ``bucket/*``, a bucket action on the bucket, a SageMaker action on the
stage's own jobs and models). The few actions AWS cannot scope to a resource (listing
quotas or model packages, putting metrics, X-Ray) get ``*`` as their resource, one named
action at a time, never ``*`` as an action.

Pure functions of plain strings, so the tests read the documents without Pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.cloud_facts import value
from shared.constants import EVENT_SOURCE
from shared.identifiers import family_prefix, sagemaker_role_name
from shared.layout import VALIDATION_JOBS_PREFIX
from shared.topology import Function, Permission, Topology, Verb

# The IAM actions of each verb, by resource kind (for "jobs", by the resource itself:
# each is a different service's API). A verb a resource has no entry for is refused.
ACTIONS: dict[tuple[str, Verb], tuple[str, ...]] = {
    ("bucket", "read"): ("s3:GetObject",),
    # A read that names a version (VersionId): S3 authorizes it as its own action.
    ("bucket", "read_version"): ("s3:GetObjectVersion",),
    # Where the code asks "is this key there?" (a HEAD, or a GET that may find nothing):
    # without ListBucket, S3 answers a missing key with 403 instead of 404.
    ("bucket", "list"): ("s3:ListBucket",),
    ("bucket", "write"): ("s3:PutObject",),
    ("bucket", "delete"): ("s3:DeleteObject",),
    ("table", "read"): ("dynamodb:GetItem", "dynamodb:Query"),
    ("table", "write"): ("dynamodb:PutItem",),
    ("queue", "consume"): ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"),
    ("bus", "publish"): ("events:PutEvents",),
    ("topic", "publish"): ("sns:Publish",),
    ("role", "pass"): ("iam:PassRole",),
    # A job is created with tags: SageMaker also authorizes AddTags on it.
    ("processing_jobs", "launch"): ("sagemaker:CreateProcessingJob", "sagemaker:AddTags"),
    ("processing_jobs", "read"): ("sagemaker:DescribeProcessingJob",),
    ("processing_jobs", "stop"): ("sagemaker:StopProcessingJob",),
    ("training_jobs", "launch"): ("sagemaker:CreateTrainingJob", "sagemaker:AddTags"),
    ("training_jobs", "read"): ("sagemaker:DescribeTrainingJob",),
    ("service_quotas", "read"): ("servicequotas:ListServiceQuotas",),
    # The group is created with tags: AddTags is authorized too.
    ("model_registry", "create"): (
        "sagemaker:CreateModelPackage",
        "sagemaker:CreateModelPackageGroup",
        "sagemaker:AddTags",
    ),
    ("model_registry", "read"): ("sagemaker:DescribeModelPackage", "sagemaker:ListModelPackages"),
    ("model_registry", "update"): ("sagemaker:UpdateModelPackage",),
    ("serve_functions", "read"): (
        "lambda:GetFunctionConfiguration",
        "lambda:ListVersionsByFunction",
        "lambda:GetAlias",
    ),
    ("serve_functions", "update"): (
        "lambda:UpdateFunctionConfiguration",
        "lambda:PublishVersion",
        "lambda:UpdateAlias",
    ),
    ("serving_deployments", "launch"): (
        "codedeploy:CreateDeployment",
        "codedeploy:RegisterApplicationRevision",
    ),
    ("serving_deployments", "read"): (
        "codedeploy:GetDeployment",
        "codedeploy:ListDeployments",
        "codedeploy:GetDeploymentConfig",
    ),
    ("serving_deployments", "stop"): ("codedeploy:StopDeployment",),
    ("serve_alarms", "read"): ("cloudwatch:DescribeAlarms",),
    ("serve_alarms", "update"): ("cloudwatch:PutMetricAlarm",),
    ("serving_endpoints", "launch"): (
        "sagemaker:CreateModel",
        "sagemaker:CreateEndpointConfig",
        "sagemaker:CreateEndpoint",
        "sagemaker:AddTags",
    ),
    ("serving_endpoints", "read"): (
        "sagemaker:DescribeEndpoint",
        "sagemaker:DescribeEndpointConfig",
        "sagemaker:DescribeModel",
        "sagemaker:ListEndpointConfigs",
        "sagemaker:ListTags",
    ),
    ("serving_endpoints", "update"): ("sagemaker:UpdateEndpoint",),
    ("drift_metrics", "measure"): ("cloudwatch:PutMetricData",),
}


def permission_actions(perm: Permission) -> tuple[str, ...]:
    """The IAM actions of one permission's verbs, each once, in the table's order."""
    key = perm.resource if perm.kind == "jobs" else perm.kind
    out: list[str] = []
    for verb in perm.verbs:
        if (key, verb) not in ACTIONS:
            raise KeyError(f"no IAM actions for {verb!r} on {key!r}: add them to infra/aws/iam.py")
        out += [a for a in ACTIONS[key, verb] if a not in out]
    return tuple(out)


# Actions with no resource-level permissions in IAM's service authorization reference
# (tests/infra/test_iam_lint.py checks this set against the reference parliament ships).
UNSCOPED_ACTIONS = frozenset(
    {
        "servicequotas:ListServiceQuotas",
        # Rollback stops a deployment: CodeDeploy authorizes StopDeployment on "*" only.
        "codedeploy:StopDeployment",
        "sagemaker:ListModelPackages",
        "sagemaker:ListEndpointConfigs",
        "cloudwatch:PutMetricData",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "ecr:GetAuthorizationToken",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeVpcs",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeDhcpOptions",
    }
)
# What a Lambda API call on a function encrypted with a customer managed key also needs
# on that key (cloud facts: aws-iam.yaml).
_ENV_UPDATES: dict[str, list[str]] = {
    "lambda:UpdateFunctionConfiguration": value("aws.lambda.cmk_environment_update_key_actions")
}
# An unscoped action is still held to the stack's own namespace where IAM has a key for it.
_METRIC_NAMESPACES = {"drift_metrics": "Dhow/Drift"}
S3_BUCKET_ACTIONS = frozenset({"s3:ListBucket", "s3:GetBucketLocation"})

Statement = dict[str, Any]
PolicyDocument = dict[str, Any]


@dataclass(frozen=True)
class AwsScope:
    """Where ARNs point: the stack's region, account and stage (whose names
    shared.identifiers builds)."""

    region: str
    account: str
    stage: str

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def role_arn(self, name: str) -> str:
        return f"arn:aws:iam::{self.account}:role/{name}"


def function_role_name(deployed: str) -> str:
    """The role of one deployed function (IAM role names are at most 64 characters)."""
    return f"{deployed}-fn"[:64]


def _bucket_arns(name: str, actions: tuple[str, ...]) -> list[str]:
    arns = []
    if any(a in S3_BUCKET_ACTIONS for a in actions):
        arns.append(f"arn:aws:s3:::{name}")
    if any(a not in S3_BUCKET_ACTIONS for a in actions):
        arns.append(f"arn:aws:s3:::{name}/*")
    return arns


def _jobs_arns(logical: str, scope: AwsScope) -> list[str]:
    # dhow-<stage>--: IAM's * matches "-" too (fact aws.iam.arn_wildcards), so a pattern
    # on dhow-<stage>-* matched every stage whose name starts <stage>-; no stage holds
    # "--" (shared.identifiers.family_prefix), so this matches one stage's names alone.
    p = family_prefix(scope.stage)

    def sm(resource: str) -> str:
        return scope.arn("sagemaker", resource)

    table: dict[str, list[str]] = {
        # Validation jobs are <prefix>-validate-... (shared/adapters/aws.py), so a stage can
        # neither start nor adopt another stage's.
        "processing_jobs": [sm(f"processing-job/{p}validate-*")],
        "training_jobs": [sm(f"training-job/{p}*")],
        "model_registry": [sm(f"model-package-group/{p}*"), sm(f"model-package/{p}*/*")],
        "serving_endpoints": [
            sm(f"model/{p}*"),
            sm(f"endpoint-config/{p}*"),
            sm(f"endpoint/{p}serve-*"),
        ],
        "serve_functions": [
            scope.arn("lambda", f"function:{p}serve-*"),
            scope.arn("lambda", f"function:{p}serve-*:*"),
        ],
        "serving_deployments": [
            scope.arn("codedeploy", f"application:{p}serving"),
            scope.arn("codedeploy", f"deploymentgroup:{p}serving/*"),
            scope.arn("codedeploy", "deploymentconfig:*"),
        ],
        "serve_alarms": [scope.arn("cloudwatch", f"alarm:{p}serve-*")],
    }
    if logical not in table:
        raise KeyError(f"no ARNs for {logical!r}: add it to infra/aws/iam.py")
    return table[logical]


def resource_arns(perm: Permission, topology: Topology, scope: AwsScope) -> list[str]:
    """The ARNs one permission of the topology names (its scoped actions' resources)."""
    kind, logical = perm.kind, perm.resource
    if kind == "bucket":
        return _bucket_arns(topology.bucket(logical).name, permission_actions(perm))
    if kind == "queue":
        return [scope.arn("sqs", topology.queue(logical).name)]
    if kind == "table":
        return [scope.arn("dynamodb", f"table/{topology.table(logical).name}")]
    if kind == "bus":
        return [scope.arn("events", f"event-bus/{topology.bus_name}")]
    if kind == "topic":
        return [scope.arn("sns", topology.topic(logical).name)]
    if kind == "role":
        return [scope.role_arn(sagemaker_role_name(scope.stage))]
    return _jobs_arns(logical, scope)


def _publish_condition(fn: Function) -> dict[str, Any]:
    """PutEvents for exactly the pipeline event types ``fn`` publishes, as its own source:
    EventBridge authorizes each entry's detail-type and source (cloud facts: aws-iam.yaml)."""
    if not fn.publishes:
        raise ValueError(
            f"{fn.logical} may put events but publishes none: name its event types in "
            "shared/topology.py (Function.publishes) or drop its events:PutEvents"
        )
    keys = value("aws.eventbridge.put_events_condition_keys")
    return {
        "StringEquals": {
            keys["detail_type"]: sorted(fn.publishes),
            keys["source"]: [EVENT_SOURCE],
        }
    }


def _statements(
    perm: Permission, topology: Topology, scope: AwsScope, fn: Function
) -> list[Statement]:
    sid = "".join(part.title() for part in perm.resource.split("_"))
    actions = permission_actions(perm)
    scoped = sorted(a for a in actions if a not in UNSCOPED_ACTIONS)
    unscoped = sorted(a for a in actions if a in UNSCOPED_ACTIONS)
    out: list[Statement] = []
    if scoped:
        stmt: Statement = {
            "Sid": sid,
            "Effect": "Allow",
            "Action": scoped,
            "Resource": resource_arns(perm, topology, scope),
        }
        if perm.kind == "role":
            stmt["Condition"] = {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
        if perm.kind == "bus":
            if scoped != ["events:PutEvents"]:
                raise ValueError(f"{fn.logical}: the bus grants only events:PutEvents")
            stmt["Condition"] = _publish_condition(fn)
        out.append(stmt)
    if unscoped:
        stmt = {"Sid": f"{sid}Unscoped", "Effect": "Allow", "Action": unscoped, "Resource": "*"}
        if perm.resource in _METRIC_NAMESPACES:
            ns = _METRIC_NAMESPACES[perm.resource]
            stmt["Condition"] = {"StringEquals": {"cloudwatch:namespace": ns}}
        out.append(stmt)
    return out


def function_policy(
    topology: Topology,
    fn: Function,
    scope: AwsScope,
    *,
    function_name: str,
    key_arn: str,
    dlq_arn: str,
) -> PolicyDocument:
    """The inline policy of one deployed function's own role (``function_name``: the
    serve function has one per dataset)."""
    statements: list[Statement] = []
    for perm in fn.permissions:
        statements += _statements(perm, topology, scope, fn)
    # Every bucket, queue, table, topic and log group is encrypted with the stack's key.
    key_actions = {"kms:Decrypt", "kms:GenerateDataKey"}
    held = {a for p in fn.permissions for a in permission_actions(p)}
    if held & set(_ENV_UPDATES):
        # The serve functions' environment is encrypted with the key: Lambda encrypts a new
        # one as the caller of UpdateFunctionConfiguration.
        key_actions |= {a for action in held & set(_ENV_UPDATES) for a in _ENV_UPDATES[action]}
    if any(p.kind == "role" for p in fn.permissions):
        # The job's key is checked by the caller before SageMaker takes its grant.
        key_actions.add("kms:DescribeKey")
    statements.append(
        {"Sid": "StackKey", "Effect": "Allow", "Action": sorted(key_actions), "Resource": [key_arn]}
    )
    if any(p.kind == "role" for p in fn.permissions):
        # A job's volumes and outputs are encrypted with the key: SageMaker takes a grant.
        # kms:GrantIsForAWSResource exists only for the grant operations, so CreateGrant
        # alone sits under it (DescribeKey there could never be allowed).
        statements.append(
            {
                "Sid": "StackKeyGrantsForJobs",
                "Effect": "Allow",
                "Action": ["kms:CreateGrant"],
                "Resource": [key_arn],
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            }
        )
    statements += [
        {
            "Sid": "OwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [scope.arn("logs", f"log-group:/aws/lambda/{function_name}:*")],
        },
        {
            "Sid": "AsyncFailures",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [dlq_arn],
        },
        {
            "Sid": "Tracing",
            "Effect": "Allow",
            "Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"],
            "Resource": "*",
        },
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def sagemaker_role_policy(topology: Topology, scope: AwsScope, *, key_arn: str) -> PolicyDocument:
    """What training, processing (validation) jobs and endpoint models may do."""
    b = topology.bucket
    read = ["s3:GetObject"]
    write = ["s3:PutObject"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadInputs",
                "Effect": "Allow",
                "Action": read,
                "Resource": [
                    f"arn:aws:s3:::{b('staging').name}/*",
                    f"arn:aws:s3:::{b('curated').name}/*",
                    f"arn:aws:s3:::{b('models').name}/*",
                ],
            },
            {
                "Sid": "ListInputs",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{b(x).name}" for x in ("staging", "curated", "models")],
            },
            {
                "Sid": "WriteOutputs",
                "Effect": "Allow",
                "Action": write,
                "Resource": [
                    f"arn:aws:s3:::{b(x).name}/*"
                    for x in ("curated", "quarantine", "models", "capture")
                ],
            },
            {
                # The validation job's result, beside the staged data: the only thing a job
                # writes in the staging bucket (shared.services.validate.job_result_ref).
                "Sid": "WriteValidationResults",
                "Effect": "Allow",
                "Action": write,
                "Resource": [f"arn:aws:s3:::{b('staging').name}/{VALIDATION_JOBS_PREFIX}*"],
            },
            {
                # A failed multipart upload (a large curated or quarantined copy) is aborted
                # by the SDK, so no orphaned parts are left to pay for.
                "Sid": "AbortOwnUploads",
                "Effect": "Allow",
                "Action": ["s3:AbortMultipartUpload"],
                "Resource": [f"arn:aws:s3:::{b(x).name}/*" for x in ("curated", "quarantine")],
            },
            {
                "Sid": "StackKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                "Resource": [key_arn],
            },
            {
                "Sid": "JobLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [scope.arn("logs", "log-group:/aws/sagemaker/*")],
            },
            {
                "Sid": "JobMetrics",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData"],
                "Resource": "*",
                "Condition": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            },
            {
                # Jobs run in the stack's private subnets: SageMaker attaches their ENIs.
                "Sid": "JobNetwork",
                "Effect": "Allow",
                "Action": [
                    "ec2:CreateNetworkInterface",
                    "ec2:CreateNetworkInterfacePermission",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission",
                ],
                "Resource": [
                    scope.arn("ec2", "network-interface/*"),
                    scope.arn("ec2", "subnet/*"),
                    scope.arn("ec2", "security-group/*"),
                ],
            },
            {
                "Sid": "JobNetworkDescribe",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeDhcpOptions",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeVpcs",
                ],
                "Resource": "*",
            },
            {
                "Sid": "PullImages",
                "Effect": "Allow",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": [f"arn:aws:ecr:{scope.region}:*:repository/*"],
            },
            {
                "Sid": "PullImagesToken",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": "*",
            },
        ],
    }


def assume_role_policy(service: str, account: str | None = None) -> PolicyDocument:
    """Trust ``service`` (``lambda.amazonaws.com``, ...); with ``account``, only when it
    acts for this account (for services that send ``aws:SourceAccount``: SageMaker,
    Scheduler), against the confused-deputy problem."""
    stmt: Statement = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if account:
        stmt["Condition"] = {"StringEquals": {"aws:SourceAccount": account}}
    return {"Version": "2012-10-17", "Statement": [stmt]}
