"""The residency and privacy evidence behind ``dhow compliance report``.

The report is read from the resources a stack registers, generically: every resource by
its type token and its properties, as the Pulumi engine (and the policy pack) sees them,
never by the program's file layout or its components' internals. They come from one of
two places:

- the Pulumi program itself, run under the recording mocks the tests use
  (``infra/mocked.py``): what ``pulumi up`` would ask for, and
- a real stack's state (``pulumi stack export`` JSON): what it created.

For every resource the report says where it is (the resource's region or location, else
its provider's), how it is encrypted at rest and with which key, who can reach it, and
how long it keeps data; for every role or managed identity, what it may do where and
which functions use it; the policy pack's verdicts on the same resources; and for each
dataset, the columns its spec marks as personal data, the stores that hold copies of
them, and for how long. The rules it reads the properties by are cloud facts
(``shared/cloud_facts/*-compliance.yaml``).

A failure is anything an auditor must not find: a resource outside the UAE, a store
without encryption at rest, a store open to the public, or any policy-pack violation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pulumi.runtime import config as pulumi_config

from infra.config import REPO_ROOT, StackConfig, StackConfigError, load
from infra.policy import rules
from shared.cloud_facts import value
from shared.errors import DhowError
from shared.reasons import Reason
from shared.specs import DatasetSpec
from shared.topology import Topology, build_topology

Cloud = Literal["aws", "azure"]


class StateUnreadable(DhowError):
    """A ``--from-state`` file is not a ``pulumi stack export`` document."""

    reason = Reason.STATE_UNREADABLE


class StackFileInvalid(DhowError):
    """A stack file (infra/stacks/Pulumi.<stack>.yaml) cannot build a Dhow stack."""

    reason = Reason.STACK_CONFIG_INVALID


@dataclass(frozen=True)
class StackResource:
    """One resource as the engine records it: type token, logical name, the id other
    resources refer to it by, its properties, and its provider's properties."""

    typ: str
    name: str
    id: str
    props: Mapping[str, Any]
    provider: Mapping[str, Any] | None = None

    @property
    def policy_view(self) -> rules.Res:
        return rules.Res(self.typ, self.name, self.props, self.provider)


# --- reading the resources -------------------------------------------------------------


def _inputs_over_outputs(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """What the program asked for, completed by what the provider answered: an output
    fills what the program left to its default (an ARN, an identity's principal id)."""
    merged = dict(outputs)
    for key, asked in inputs.items():
        answered = outputs.get(key)
        if isinstance(asked, Mapping) and isinstance(answered, Mapping):
            merged[key] = {**answered, **asked}
        else:
            merged[key] = asked
    return merged


def from_mocked_program(program: Any) -> list[StackResource]:
    """Every resource an ``infra.mocked.Program`` recorded, providers and components
    included, with its provider's properties (read as ``from_state`` reads a state)."""
    providers = {
        f"{r.name}_id": r.inputs for r in program.resources if r.typ.startswith("pulumi:providers:")
    }
    return [
        StackResource(
            r.typ,
            r.name,
            r.id,
            _inputs_over_outputs(r.inputs, r.outputs),
            providers.get(r.provider_id.rsplit("::", 1)[-1]) if r.provider_id else None,
        )
        for r in program.resources
    ]


def from_state(document: Mapping[str, Any]) -> list[StackResource]:
    """Every resource of a ``pulumi stack export`` document but the stack itself.

    Properties are the inputs the program gave, over the outputs the provider read back."""
    deployment = document.get("deployment") if isinstance(document, Mapping) else None
    resources = deployment.get("resources") if isinstance(deployment, Mapping) else None
    if not isinstance(resources, list):
        raise StateUnreadable(
            "the state file has no deployment.resources",
            hint="write it with `pulumi stack export --file state.json` for the stack",
        )
    providers: dict[str, Mapping[str, Any]] = {}
    for r in resources:
        if str(r.get("type", "")).startswith("pulumi:providers:"):
            providers[f"{r.get('urn')}::{r.get('id')}"] = r.get("inputs") or {}
    out = []
    for r in resources:
        typ = str(r.get("type", ""))
        if typ == "pulumi:pulumi:Stack":
            continue
        urn = str(r.get("urn", ""))
        props = _inputs_over_outputs(r.get("inputs") or {}, r.get("outputs") or {})
        provider = providers.get(str(r.get("provider", "")))
        out.append(
            StackResource(typ, urn.rsplit("::", 1)[-1], str(r.get("id", "")), props, provider)
        )
    return out


def read_state(path: Path) -> list[StackResource]:
    """``from_state`` of a file, or ``StateUnreadable`` saying how to write one."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StateUnreadable(
            f"cannot read the state file {path}: {exc}",
            hint="write it with `pulumi stack export --file state.json`",
        ) from None
    return from_state(document)


# --- one resource ----------------------------------------------------------------------


@dataclass
class ResourceEntry:
    """What the report says of one resource."""

    type: str
    name: str
    physical_name: str
    region: str | None
    encryption: str
    key: str | None
    public_access: str
    retention: str
    failures: list[str] = field(default_factory=list)


def _cloud_of(typ: str) -> str | None:
    if typ.startswith("aws:") or typ == "pulumi:providers:aws":
        return "aws"
    if typ.startswith("azure-native:") or typ == "pulumi:providers:azure-native":
        return "azure"
    return None


def region_of(res: StackResource) -> str | None:
    """The resource's own region (location), else its provider's."""
    if _cloud_of(res.typ) == "aws":
        return str(res.props.get("region") or (res.provider or {}).get("region") or "") or None
    if _cloud_of(res.typ) == "azure":
        return str(res.props.get("location") or (res.provider or {}).get("location") or "") or None
    return None


_AZURE_NAME_KEYS = (
    "accountName",
    "containerName",
    "queueName",
    "tableName",
    "vaultName",
    "workspaceName",
    "registryName",
    "resourceName",
    "topicName",
    "endpointName",
)


def physical_name(res: StackResource) -> str:
    """The name the cloud knows the resource by."""
    p = res.props
    if res.typ.startswith("azure-native:"):
        for key in ("containerName", "queueName", "tableName"):
            if p.get(key):
                return str(p[key])
        for key in _AZURE_NAME_KEYS:
            if p.get(key):
                return str(p[key])
    return str(p.get("name") or p.get("bucket") or p.get("functionName") or res.name)


class _Index:
    """The stack's resources looked up by what other resources name them by."""

    def __init__(self, resources: Sequence[StackResource]) -> None:
        self.resources = resources
        self.by_bucket: dict[str, list[StackResource]] = {}
        self.accounts: dict[str, StackResource] = {}
        for r in resources:
            if r.typ.startswith("aws:s3/") and r.typ != "aws:s3/bucket:Bucket":
                self.by_bucket.setdefault(str(r.props.get("bucket")), []).append(r)
            if r.typ == "azure-native:storage:StorageAccount":
                self.accounts[physical_name(r)] = r

    def bucket_config(self, bucket: str, kind: str) -> StackResource | None:
        for r in self.by_bucket.get(bucket, []):
            if r.typ.split("/")[1].split(":")[0].startswith(kind):
                return r
        return None


def _days(n: Any) -> str:
    return f"{int(float(n))} days"


def _s3_encryption(res: StackResource, index: _Index) -> tuple[str, str | None]:
    fact = value("aws.s3.default_encryption")
    sse = index.bucket_config(physical_name(res), "bucketServerSideEncryptionConfiguration")
    for rule in (sse.props.get("rules") or []) if sse else []:
        default = rule.get("applyServerSideEncryptionByDefault") or {}
        algorithm = default.get("sseAlgorithm")
        if algorithm in fact["kms"]:
            key = default.get(fact["key_field"])
            return f"SSE-KMS ({algorithm})", str(key) if key else "aws/s3 (AWS managed key)"
        if algorithm == fact["s3_managed"]:
            return "SSE-S3 (AES256)", "S3 managed keys"
    return "none", None


def _kms_or(props: Mapping[str, Any], key_field: str, otherwise: str) -> tuple[str, str | None]:
    key = props.get(key_field)
    return ("customer managed KMS key", str(key)) if key else (otherwise, None)


def encryption_of(res: StackResource, index: _Index) -> tuple[str, str | None]:
    """How the resource's data is encrypted at rest, and which key; ``none`` is a store
    without encryption, ``n/a`` a resource that holds no data of its own."""
    p = res.props
    t = res.typ
    if t == "aws:s3/bucket:Bucket":
        return _s3_encryption(res, index)
    if t == "aws:sqs/queue:Queue":
        if p.get("kmsMasterKeyId"):
            return "SSE-KMS", str(p["kmsMasterKeyId"])
        return ("SSE-SQS", "SQS owned keys") if p.get("sqsManagedSseEnabled") else ("none", None)
    if t == "aws:sns/topic:Topic":
        return _kms_or(p, "kmsMasterKeyId", "none")
    if t == "aws:dynamodb/table:Table":
        sse = p.get("serverSideEncryption") or {}
        if sse.get("enabled"):
            return "customer managed KMS key", str(sse.get("kmsKeyArn") or "aws/dynamodb")
        return "AWS owned key", None
    if t == "aws:cloudwatch/logGroup:LogGroup":
        key_field = value("aws.logs.retention_and_key")["key_field"]
        return _kms_or(p, key_field, "CloudWatch Logs server-side encryption")
    if t == "aws:lambda/function:Function":
        return _kms_or(p, "kmsKeyArn", "AWS managed key (environment)")
    if t == "aws:ecr/repository:Repository":
        for conf in p.get("encryptionConfigurations") or []:
            if conf.get("encryptionType") == "KMS":
                return "customer managed KMS key", str(conf.get("kmsKey") or "aws/ecr")
        return "AES256 (ECR managed)", None
    if t == "aws:s3/bucketObjectv2:BucketObjectv2":
        return "the bucket's default", None
    if t == "azure-native:storage:StorageAccount":
        return _azure_account_encryption(p)
    if t in _AZURE_ACCOUNT_CHILDREN:
        account = index.accounts.get(str(p.get("accountName")))
        if account is None:
            return "its storage account's (not in this stack)", None
        state, key = _azure_account_encryption(account.props)
        return f"{state}, of account {physical_name(account)}", key
    return "n/a", None


_AZURE_ACCOUNT_CHILDREN = (
    "azure-native:storage:BlobContainer",
    "azure-native:storage:Queue",
    "azure-native:storage:Table",
)


def _azure_account_encryption(p: Mapping[str, Any]) -> tuple[str, str | None]:
    fact = value("azure.storage.encryption_key_source")
    enc = p.get("encryption") or {}
    double = " + infrastructure encryption" if enc.get("requireInfrastructureEncryption") else ""
    if str(enc.get("keySource", "")).lower() == fact["customer_managed"].lower():
        vault = enc.get("keyVaultProperties") or enc.get("keyvaultproperties") or {}
        key = f"{vault.get('keyVaultUri', '')}{vault.get('keyName', '')}" or None
        return f"customer-managed key{double}", key
    return f"Microsoft-managed keys{double}", fact["microsoft_managed"]


def public_access_of(res: StackResource, index: _Index) -> tuple[str, bool]:
    """Who can reach the resource from outside its account, and whether that is open."""
    p = res.props
    t = res.typ
    if t == "aws:s3/bucket:Bucket":
        flags = value("aws.s3.public_access_block_settings")
        pab = index.bucket_config(physical_name(res), "bucketPublicAccessBlock")
        on = [f for f in flags if pab is not None and pab.props.get(f) is True]
        if len(on) == len(flags):
            return "public access blocked (all four settings)", False
        missing = [f for f in flags if f not in on]
        return f"public access block missing {', '.join(missing)}", True
    if t == "azure-native:storage:StorageAccount":
        field_name = value("azure.storage.blob_public_access")["account_field"]
        network = (p.get("networkRuleSet") or {}).get("defaultAction", "Allow")
        shared_key = "off" if p.get("allowSharedKeyAccess") is False else "on"
        text = f"network default {network}; shared keys {shared_key}"
        if p.get(field_name) is False:
            return f"anonymous blob access disallowed; {text}", False
        return f"anonymous blob access allowed; {text}", True
    if t == "azure-native:storage:BlobContainer":
        access = p.get("publicAccess")
        if access in value("azure.storage.blob_public_access")["private_container"]:
            return "private", False
        return f"anonymous {access} reads", True
    if t == "aws:apigatewayv2/route:Route":
        auth = p.get("authorizationType") or "NONE"
        return f"route auth {auth}", auth == "NONE"
    if t == "aws:lambda/functionUrl:FunctionUrl":
        auth = p.get("authorizationType") or "NONE"
        return f"function URL auth {auth}", auth == "NONE"
    if t == "azure-native:machinelearningservices:OnlineEndpoint":
        props = p.get("properties") or {}
        return (
            f"auth {props.get('authMode')}; network {props.get('publicNetworkAccess')}",
            False,
        )
    if t == "azure-native:web:WebApp":
        return f"HTTPS only {bool(p.get('httpsOnly'))}; functions authorize each call", False
    # Anything else that can be reached from a network: its own switches, as it has them.
    nested = p.get("properties")
    merged = {**(nested if isinstance(nested, Mapping) else {}), **p}
    details = [f"{k} {merged[k]}" for k in _NETWORK_SWITCHES if k in merged]
    if details:
        return "; ".join(details), merged.get("anonymousPullEnabled") is True
    return "n/a", False


_NETWORK_SWITCHES = ("publicNetworkAccess", "anonymousPullEnabled", "disableLocalAuth")


def retention_of(res: StackResource, index: _Index) -> str:
    """How long the resource keeps what it holds."""
    p = res.props
    t = res.typ
    if t == "aws:s3/bucket:Bucket":
        return _s3_retention(res, index)
    if t == "aws:sqs/queue:Queue":
        seconds = (
            p.get("messageRetentionSeconds") or value("aws.sqs.message_retention")["default_s"]
        )
        return f"messages {float(seconds) / 86400:g} days"
    if t == "aws:cloudwatch/logGroup:LogGroup":
        days = p.get("retentionInDays")
        never = value("aws.logs.retention_and_key")["never_expire"]
        return "never expires" if days in never else _days(days)
    if t == "aws:dynamodb/table:Table":
        pitr = (p.get("pointInTimeRecovery") or {}).get("enabled")
        return "items until deleted" + ("; point-in-time recovery on" if pitr else "")
    if t == "aws:kms/key:Key":
        return f"deletion window {_days(p.get('deletionWindowInDays') or 30)}"
    if t == "azure-native:operationalinsights:Workspace":
        return _days(p.get("retentionInDays") or 30)
    if t == "azure-native:keyvault:Vault":
        props = p.get("properties") or {}
        return f"soft delete {_days(props.get('softDeleteRetentionInDays') or 90)}"
    if t in ("azure-native:storage:BlobContainer", "azure-native:storage:StorageAccount"):
        policies = [r for r in index.resources if r.typ == "azure-native:storage:ManagementPolicy"]
        if not policies:
            return "until deleted (no lifecycle management policy)"
        return "lifecycle management policy: " + ", ".join(physical_name(r) for r in policies)
    if t == "azure-native:storage:Queue":
        return "per message time-to-live (set by the sender)"
    return "n/a"


def _s3_retention(res: StackResource, index: _Index) -> str:
    fact = value("aws.s3.lifecycle_expiration")
    lifecycle = index.bucket_config(physical_name(res), "bucketLifecycleConfiguration")
    versioning = index.bucket_config(physical_name(res), "bucketVersioning")
    status = ((versioning.props.get("versioningConfiguration") or {}) if versioning else {}).get(
        "status", "off"
    )
    current = "current objects until deleted"
    old = ""
    for rule in (lifecycle.props.get("rules") or []) if lifecycle else []:
        if rule.get("status") != "Enabled":
            continue
        outer, inner = fact["current"]
        if (rule.get(outer) or {}).get(inner):
            current = f"current objects {_days(rule[outer][inner])}"
        outer, inner = fact["noncurrent"]
        if (rule.get(outer) or {}).get(inner):
            old = f"; old versions {_days(rule[outer][inner])}"
    return f"{current}{old} (versioning {status})"


_DATA_STORES = (
    "aws:s3/bucket:Bucket",
    "aws:sqs/queue:Queue",
    "aws:sns/topic:Topic",
    "aws:dynamodb/table:Table",
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:ecr/repository:Repository",
    "azure-native:storage:StorageAccount",
    *_AZURE_ACCOUNT_CHILDREN,
)


def describe(res: StackResource, index: _Index) -> ResourceEntry:
    """One resource as the report lists it, with what fails in it."""
    encryption, key = encryption_of(res, index)
    public, open_ = public_access_of(res, index)
    failures = list(rules.region_violations(res.policy_view))
    if res.typ in _DATA_STORES and encryption == "none":
        failures.append("holds data without encryption at rest")
    if open_:
        failures.append(f"open to the public: {public}")
    return ResourceEntry(
        type=res.typ,
        name=res.name,
        physical_name=physical_name(res),
        region=region_of(res),
        encryption=encryption,
        key=key,
        public_access=public,
        retention=retention_of(res, index),
        failures=failures,
    )


# --- roles and identities --------------------------------------------------------------


@dataclass
class Grant:
    """What a role may do: actions (data actions on Azure) on resources (a scope)."""

    actions: list[str]
    resources: list[str]
    effect: str = "Allow"
    role: str | None = None  # Azure: the role definition's name


@dataclass
class RoleEntry:
    """A role (AWS) or a managed identity (Azure), its grants and who uses it."""

    kind: str
    name: str
    principal: str
    assumed_by: list[str]
    grants: list[Grant]
    used_by: list[str]


def _statements(document: Any) -> list[Mapping[str, Any]]:
    doc = json.loads(document) if isinstance(document, str) else document
    if not isinstance(doc, Mapping):
        return []
    stmts = doc.get("Statement") or []
    return [s for s in (stmts if isinstance(stmts, list) else [stmts]) if isinstance(s, Mapping)]


def _as_list(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else [str(v)] if v is not None else []


def _grants(document: Any) -> list[Grant]:
    return [
        Grant(
            _as_list(s.get("Action") or s.get("NotAction")),
            _as_list(s.get("Resource") or s.get("NotResource")),
            str(s.get("Effect", "Allow")),
        )
        for s in _statements(document)
    ]


def aws_roles(resources: Sequence[StackResource]) -> list[RoleEntry]:
    """Every IAM role with its inline and attached policies' statements, the services
    that assume it, and the functions that run as it or hand it to a job."""
    managed = {
        str(r.props.get("arn")): r.props.get("policy")
        for r in resources
        if r.typ == "aws:iam/policy:Policy"
    }
    functions = [r for r in resources if r.typ == "aws:lambda/function:Function"]
    out = []
    for role in (r for r in resources if r.typ == "aws:iam/role:Role"):
        refs = {role.id, role.name, str(role.props.get("name")), str(role.props.get("arn"))}
        grants = [
            g for p in role.props.get("inlinePolicies") or [] for g in _grants(p.get("policy"))
        ]
        for r in resources:
            if r.typ == "aws:iam/rolePolicy:RolePolicy" and str(r.props.get("role")) in refs:
                grants += _grants(r.props.get("policy"))
            if (
                r.typ == "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
                and str(r.props.get("role")) in refs
            ):
                arn = str(r.props.get("policyArn"))
                grants += _grants(managed[arn]) if arn in managed else [Grant(["(managed)"], [arn])]
        arn = str(role.props.get("arn", ""))
        used_by = []
        for fn in functions:
            env = ((fn.props.get("environment") or {}).get("variables") or {}).values()
            if arn and fn.props.get("role") == arn:
                used_by.append(f"{physical_name(fn)} (runs as it)")
            elif arn and arn in {str(v) for v in env}:
                used_by.append(f"{physical_name(fn)} (passes it to its jobs)")
        assumed = [
            p
            for s in _statements(role.props.get("assumeRolePolicy"))
            for p in _as_list((s.get("Principal") or {}).get("Service"))
        ]
        out.append(
            RoleEntry("IAM role", physical_name(role), arn, assumed, grants, sorted(used_by))
        )
    return out


def _guid(role_definition_id: Any) -> str:
    return str(role_definition_id or "").rsplit("/", 1)[-1]


def azure_identities(
    resources: Sequence[StackResource], topology: Topology | None
) -> list[RoleEntry]:
    """Every principal the stack's role assignments name, with each assignment's role
    (its actions and data actions) and scope, and the resource whose identity it is."""
    builtin: Mapping[str, Any] = value("azure.rbac.builtin_role_data_actions")
    custom = {}
    for r in resources:
        if r.typ == "azure-native:authorization:RoleDefinition":
            for key in (r.props.get("roleDefinitionId"), r.props.get("name"), r.id):
                custom[_guid(key)] = r
    # A resource with a managed identity declares its type (SystemAssigned, ...).
    owners = {}
    for r in resources:
        identity = r.props.get("identity") or {}
        if identity.get("type") and identity.get("principalId"):
            owners[str(identity["principalId"])] = r
    grants: dict[str, list[Grant]] = {}
    for a in (r for r in resources if r.typ == "azure-native:authorization:RoleAssignment"):
        guid = _guid(a.props.get("roleDefinitionId"))
        scope = [str(a.props.get("scope", ""))]
        if guid in custom:
            perms = custom[guid].props.get("permissions") or []
            actions = [
                str(x)
                for p in perms
                for x in (p.get("actions") or []) + (p.get("dataActions") or [])
            ]
            grant = Grant(actions, scope, role=str(custom[guid].props.get("roleName") or guid))
        elif guid in builtin:
            grant = Grant(list(builtin[guid]["dataActions"]), scope, role=builtin[guid]["name"])
        else:
            grant = Grant([f"(built-in role {guid})"], scope, role=guid)
        grants.setdefault(str(a.props.get("principalId")), []).append(grant)
    out = []
    for principal, held in grants.items():
        owner = owners.get(principal)
        used_by = []
        if owner is not None and owner.typ == "azure-native:web:WebApp" and topology:
            used_by = [f"{fn.name} (runs in the Function App)" for fn in topology.functions]
        elif owner is not None:
            used_by = [f"{owner.typ} {physical_name(owner)}"]
        out.append(
            RoleEntry(
                "managed identity" if owner is not None else "principal (outside the stack)",
                physical_name(owner) if owner is not None else principal,
                principal,
                [],
                held,
                used_by,
            )
        )
    return out


# --- datasets --------------------------------------------------------------------------


@dataclass
class DataCopy:
    """One store that holds copies of a dataset's rows, and for how long."""

    store: str
    name: str
    resource_type: str | None
    region: str | None
    retention: str
    encryption: str


@dataclass
class DatasetEntry:
    """A dataset's personal-data columns and where their copies live."""

    dataset: str
    spec_version: str
    personal_data: list[str]
    copies: list[DataCopy]


# The topology's stores that hold a dataset's rows, or values of its columns: the upload,
# its staged copy, the validated copy, the rejected rows with their report, what serving
# captured, and the drift reports (which quote column statistics).
DATA_COPY_STORES = ("raw", "staging", "curated", "quarantine", "capture", "reports")


def datasets(
    specs: Iterable[DatasetSpec], topology: Topology, entries: Sequence[ResourceEntry]
) -> list[DatasetEntry]:
    """Each spec's personal-data columns with the stores holding their copies."""
    by_name = {
        e.physical_name: e
        for e in entries
        if e.type in ("aws:s3/bucket:Bucket", "azure-native:storage:BlobContainer")
    }
    out = []
    for spec in specs:
        copies = []
        for logical in DATA_COPY_STORES:
            bucket = topology.bucket(logical)
            entry = by_name.get(bucket.name)
            copies.append(
                DataCopy(
                    logical,
                    bucket.name,
                    entry.type if entry else None,
                    entry.region if entry else None,
                    entry.retention if entry else "not in this stack",
                    entry.encryption if entry else "not in this stack",
                )
            )
        out.append(DatasetEntry(spec.name, spec.spec_version, spec.personal_data_columns, copies))
    return out


# --- the report ------------------------------------------------------------------------


@dataclass
class Verdict:
    """One policy-pack violation."""

    policy: str
    resource: str
    message: str


@dataclass
class Failure:
    """One thing an auditor must not find, and where."""

    stack: str
    resource: str
    what: str


@dataclass
class StackReport:
    """Everything the report says of one stack."""

    stack: str
    cloud: str
    source: str
    resources: list[ResourceEntry]
    roles: list[RoleEntry]
    verdicts: list[Verdict]
    datasets: list[DatasetEntry]

    @property
    def failures(self) -> list[Failure]:
        out = [
            Failure(self.stack, f"{e.type} {e.name}", what)
            for e in self.resources
            for what in e.failures
        ]
        seen = {(f.resource.rsplit(" ", 1)[-1], f.what) for f in out}
        for v in self.verdicts:
            if (v.resource, v.message) not in seen:
                out.append(Failure(self.stack, v.resource, f"policy {v.policy}: {v.message}"))
        return out


@dataclass
class ComplianceReport:
    """The report over one or both stacks."""

    stacks: list[StackReport]
    generated_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    @property
    def failures(self) -> list[Failure]:
        return [f for s in self.stacks for f in s.failures]

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "ok": not self.failures,
            "failures": [asdict(f) for f in self.failures],
            "stacks": [asdict(s) for s in self.stacks],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False, default=str)


def _stage_of(resources: Sequence[StackResource]) -> str | None:
    for r in resources:
        stage = (
            (r.props.get("tags") or {}).get("dhow:stage")
            if isinstance(r.props.get("tags"), Mapping)
            else None
        )
        if stage:
            return str(stage)
    return None


def stack_report(
    stack: str,
    resources: Sequence[StackResource],
    specs: Sequence[DatasetSpec],
    *,
    source: str,
    topology: Topology | None = None,
) -> StackReport:
    """The report of one stack's resources; the topology defaults to the stage the
    resources are tagged with."""
    clouds = {c for r in resources if (c := _cloud_of(r.typ))}
    cloud = (
        "azure" if clouds == {"azure"} else "aws" if clouds == {"aws"} else "/".join(sorted(clouds))
    )
    if topology is None:
        stage = _stage_of(resources)
        topology = build_topology(stage) if stage else None
    index = _Index(resources)
    entries = [describe(r, index) for r in resources]
    # As the engine hands them to the pack: no providers, no components.
    policy_resources = [
        r.policy_view for r in resources if not r.typ.startswith(("pulumi:providers:", "dhow:"))
    ]
    verdicts = [
        Verdict(v.policy, v.resource, v.message) for v in rules.violations(policy_resources)
    ]
    roles = aws_roles(resources) + azure_identities(resources, topology)
    return StackReport(
        stack,
        cloud,
        source,
        entries,
        roles,
        verdicts,
        datasets(specs, topology, entries) if topology else [],
    )


def mocked_stack_report(cfg: StackConfig) -> StackReport:
    """The report of ``cfg``'s stack as the Pulumi program would create it (run under
    the tests' recording mocks)."""
    from infra.mocked import run

    program = run(cfg)
    return stack_report(
        f"{cfg.cloud}-uae",
        from_mocked_program(program),
        cfg.specs,
        source="the Pulumi program under mocks",
        topology=cfg.topology,
    )


STACKS_DIR = REPO_ROOT / "infra" / "stacks"
STACKS: dict[Cloud, str] = {"aws": "aws-uae", "azure": "azure-uae"}


def stack_config(stack: str, stacks_dir: Path | None = None) -> StackConfig:
    """The configuration ``pulumi up`` would give the program for ``stack``: its stack
    file's values, read by ``infra.config.load`` as the program reads them (so a
    region outside the UAE is refused here as it is there)."""
    path = (stacks_dir or STACKS_DIR) / f"Pulumi.{stack}.yaml"
    try:
        values = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StackFileInvalid(
            f"cannot read the stack file {path}: {exc}",
            hint="run from the repository, or pass --from-state with a stack export",
        ) from None
    # Pulumi hands the program every value as a string, objects as JSON. The runtime's
    # configuration is set only for the read, and put back after it: the process (a
    # test session, say) may run other stacks.
    saved = pulumi_config.CONFIG.get()
    pulumi_config.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}, []
    )
    try:
        return load()
    except StackConfigError as exc:
        raise StackFileInvalid(str(exc), hint=f"fix {path}") from None
    finally:
        pulumi_config.CONFIG.set(saved)


def build_report(
    clouds: Sequence[Cloud], from_state: Path | None = None, stacks_dir: Path | None = None
) -> ComplianceReport:
    """The report of each cloud's stack, run under mocks; or, given ``from_state``, of
    the one stack that state file exports (its specs from that cloud's stack file)."""
    if from_state is not None:
        resources = read_state(from_state)
        found = {c for r in resources if (c := _cloud_of(r.typ))}
        cloud: Cloud = "azure" if found == {"azure"} else "aws"
        if len(clouds) == 1:
            cloud = clouds[0]
        cfg = stack_config(STACKS[cloud], stacks_dir)
        report = stack_report(
            STACKS[cloud], resources, cfg.specs, source=f"the state file {from_state.name}"
        )
        return ComplianceReport([report])
    return ComplianceReport(
        [mocked_stack_report(stack_config(STACKS[c], stacks_dir)) for c in clouds]
    )
