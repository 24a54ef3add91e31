"""Run the Pulumi program under ``pulumi.runtime.set_mocks`` and record every resource
it registers: type, name, inputs (as the engine would receive them), id and provider.

The Pulumi CLI and provider plugins cannot be installed here, so this is how the program
is tested: the exact resources and arguments it asks for, checked by the same policy
functions the policy pack runs at ``pulumi up``. ``dhow compliance report`` reads the
program through the same runner (``infra/compliance.py``), so what the report lists is
what the tests check. ``tests/infra/harness.py`` re-exports it for the tests.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra.config import StackConfig
from infra.policy.rules import Res
from infra.registry import stack_for

ACCOUNT = "123456789012"
# One loop for every run of the session (Pulumi's runtime keeps using the current one).
_LOOP = asyncio.new_event_loop()
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


@dataclass
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider_id: str
    outputs: dict[str, Any] = field(default_factory=dict)
    # The id the mocks answered with, as a reference to the resource carries it (an IAM
    # role policy names its role by this id).
    id: str = ""


# The input that holds an Azure resource's own name, where it is not ``name``.
_AZURE_NAME_KEYS = {
    "azure-native:resources:ResourceGroup": "resourceGroupName",
    "azure-native:storage:StorageAccount": "accountName",
    "azure-native:storage:BlobContainer": "containerName",
    "azure-native:storage:Queue": "queueName",
    "azure-native:storage:Table": "tableName",
    "azure-native:eventgrid:Topic": "topicName",
    "azure-native:eventgrid:SystemTopic": "systemTopicName",
    "azure-native:machinelearningservices:Workspace": "workspaceName",
    "azure-native:machinelearningservices:Compute": "computeName",
    "azure-native:keyvault:Vault": "vaultName",
    "azure-native:applicationinsights:Component": "resourceName",
    "azure-native:containerregistry:Registry": "registryName",
}


def _service(typ: str) -> str:
    return typ.split(":")[1].split("/")[0]


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that answer like the providers (ARNs, URLs, endpoints, principal ids in the
    stack's region) and keep every resource the program registered, in order."""

    def __init__(self, region: str, subscription: str = SUBSCRIPTION) -> None:
        self.region = region
        self.subscription = subscription
        self.resources: list[Recorded] = []
        self.calls: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = copy.deepcopy(dict(args.inputs))
        typ, name = args.typ, args.name
        physical = str(
            inputs.get("name") or inputs.get("bucket") or inputs.get("functionName") or name
        )
        rid = f"{name}_id"
        out: dict[str, Any] = dict(inputs)
        if typ.startswith("aws:"):
            svc = _service(typ)
            if typ == "aws:s3/bucket:Bucket":
                rid = physical
                out["arn"] = f"arn:aws:s3:::{physical}"
            else:
                out.setdefault("arn", f"arn:aws:{svc}:{self.region}:{ACCOUNT}:{physical}")
            if typ == "aws:sqs/queue:Queue":
                out["url"] = f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT}/{physical}"
            if typ == "aws:lambda/function:Function":
                out["version"] = "1"
            if typ == "aws:lambda/alias:Alias":
                qualified = f"function:{inputs['functionName']}:{inputs['name']}"
                out["arn"] = f"arn:aws:lambda:{self.region}:{ACCOUNT}:{qualified}"
            if typ == "aws:apigatewayv2/api:Api":
                rid = f"{name[:6]}apiid"
                out["apiEndpoint"] = f"https://{rid}.execute-api.{self.region}.amazonaws.com"
                out["executionArn"] = f"arn:aws:execute-api:{self.region}:{ACCOUNT}:{rid}"
            if typ == "aws:ecr/repository:Repository":
                out["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{physical}"
                out["registryId"] = ACCOUNT
            if typ == "aws:ec2/vpcEndpoint:VpcEndpoint":
                out["prefixListId"] = "pl-0123456789"
            if typ == "aws:kms/key:Key":
                rid = "key-0001"
                out["arn"] = f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{rid}"
        if typ == "docker-build:index:Image":
            # As the provider's schema has them: ``digest`` alone, and ``ref`` as one tag
            # with the digest appended (repo:tag@sha256:...).
            out["digest"] = f"sha256:{'0' * 64}"
            out["ref"] = f"{inputs['tags'][0]}@{out['digest']}"
        if typ.startswith("azure-native:"):
            physical = str(inputs.get(_AZURE_NAME_KEYS.get(typ, "name")) or name)
            rid = f"/subscriptions/{self.subscription}/resourceGroups/rg/providers/{typ}/{physical}"
            out["name"] = physical
            out["principalId"] = f"{name}-principal"
            out["identity"] = {**(inputs.get("identity") or {}), "principalId": f"{name}-principal"}
            out["primaryEndpoints"] = {
                svc: f"https://{physical}.{svc}.core.windows.net/"
                for svc in ("blob", "queue", "table", "dfs")
            }
            out["connectionString"] = f"InstrumentationKey={name}"
            out["vaultUri"] = f"https://{physical}.vault.azure.net/"
            if typ == "azure-native:eventgrid:Topic":
                out["endpoint"] = (
                    f"https://{physical}.{self.region}-1.eventgrid.azure.net/api/events"
                )
        self.resources.append(Recorded(typ, name, inputs, args.provider or "", out, rid))
        return rid, out

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.calls.append(args.token)
        return self._answer(args.token), []  # no check failures

    def _answer(self, function: str) -> dict[str, Any]:
        """What the provider's invoke ``function`` (its token) would return."""
        if function == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/x", "userId": "x"}
        if function == "aws:index/getAvailabilityZones:getAvailabilityZones":
            zones = [f"{self.region}{z}" for z in "abc"]
            return {"names": zones, "zoneIds": zones, "id": self.region}
        if function == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {"userName": "AWS", "password": "token", "authorizationToken": "t", "id": "x"}
        if function.startswith("azure-native:authorization:getClientConfig"):
            return {
                "subscriptionId": self.subscription,
                "tenantId": "11111111-1111-1111-1111-111111111111",
                "objectId": "22222222-2222-2222-2222-222222222222",
                "clientId": "33333333-3333-3333-3333-333333333333",
            }
        return {}


@dataclass
class Program:
    """What one mocked run of the program registered and exported."""

    resources: list[Recorded]
    outputs: dict[str, Any]

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def providers(self) -> dict[str, Recorded]:
        return {f"{r.name}_id": r for r in self.resources if r.typ.startswith("pulumi:providers:")}

    def policy_view(self) -> list[Res]:
        """The resources as the policy pack sees them (type, properties, provider's)."""
        providers = self.providers()
        out = []
        for r in self.resources:
            if r.typ.startswith("pulumi:providers:") or r.typ.startswith("dhow:"):
                continue
            provider = providers.get(r.provider_id.rsplit("::", 1)[-1])
            out.append(Res(r.typ, r.name, r.outputs, provider.inputs if provider else None))
        return out


def run(
    cfg: StackConfig,
    build: Callable[[StackConfig], dict[str, Any]] | None = None,
    subscription: str = SUBSCRIPTION,
) -> Program:
    """Build ``cfg``'s stack under mocks; ``build`` defaults to the cloud's own; an Azure
    stack runs in ``subscription``."""
    stack = stack_for(cfg.cloud)
    if build is None:
        build = stack.build
    mocks = RecordingMocks(stack.region(cfg), subscription)
    # Pulumi's runtime asks asyncio for the current loop, which Python 3.12 warns about
    # (an error here) when none was set.
    asyncio.set_event_loop(_LOOP)
    pulumi.runtime.set_mocks(mocks, project="dhow", stack=f"{cfg.cloud}-uae", preview=False)
    exported: dict[str, Any] = {}

    builder = build

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[Any]:
        outputs = builder(cfg)
        return pulumi.Output.from_input(outputs).apply(exported.update)

    program()
    return Program(mocks.resources, exported)
