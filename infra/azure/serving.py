"""Azure serving: one Azure ML managed online endpoint per dataset spec, whose traffic the
deploy function's rollout steps (shared/adapters/azure_serving.py), and the roles that
rollout and the endpoint's deployments need.

- The endpoint: Entra-token auth (``AADToken``), in the stack's location, with public
  network access **enabled**: with it disabled, scoring requests arrive only through the
  workspace's private endpoint (fact azure.serving.endpoint_public_network_access), and
  the stack creates none; clients call the scoring URI with an Entra token instead.
- Its system identity, which the deployments run as: read the models container and the
  lineage table (the registry's rows, so the version is verified as on Lambda), write
  the capture container.
- The Function App's identity: Storage Queue Data Message Sender on the deploy queue (the
  rollout's delayed checks). Creating deployments, setting traffic and reading the
  candidate's Azure Monitor metrics are actions of the app's custom workspace role
  (infra/azure/roles.py), which covers the endpoints as children of the workspace; no
  Monitoring Reader, whose */read would read every resource of the endpoint.
- The serving environment the deployments run in (``DHOW_AZUREML_SERVE_ENVIRONMENT``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_azure_native as az

from infra.azure.assignments import assign, principal_of
from infra.azure.roles import BLOB_CONTRIBUTOR, BLOB_READER, QUEUE_SENDER, TABLE_READER
from infra.config import REPO_ROOT, StackConfig
from shared.adapters.azure_serving import endpoint_name
from shared.cloud_facts import value

# What each endpoint's identity gets, by (scope kind, logical name): what score_online's
# serve app reads and writes.
ENDPOINT_GRANTS = (
    (BLOB_READER, "container", "models"),
    (BLOB_CONTRIBUTOR, "container", "capture"),
    (TABLE_READER, "table", "lineage"),
)
# Every input of an online endpoint an update could PUT (see Serving): frozen after create.
ENDPOINT_FROZEN = ["properties", "tags", "identity"]
SERVE_ENVIRONMENT = "serve"
SERVE_ENVIRONMENT_VERSION = "1"
SERVE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"


def serve_environment_ref() -> str:
    return f"azureml:dhow-{SERVE_ENVIRONMENT}:{SERVE_ENVIRONMENT_VERSION}"


def serve_conda_file() -> str:
    """The project's pins, the trainer's (to load its models) and azure-identity, plus the
    inference server that runs score_online.py. The server pins pydantic to its own minor
    (``~=2.12.0``), so pydantic is the one pin replaced here, by the server's newest match."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    identity = [p for p in extras["azureml"] if p.startswith("azure-identity==")]
    pins = [p for p in project["dependencies"] if not p.startswith("pydantic==")]
    pins += ["pydantic==2.12.5", *extras["train"], *identity]
    pins.append(value("azure.serving.scoring_script_contract")["server_package"])
    lines = ["name: dhow-serve", "channels: [conda-forge]", "dependencies:"]
    lines += ["  - python=3.12", "  - pip", "  - pip:"]
    lines += [f"    - {pin}" for pin in pins]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ServingArgs:
    cfg: StackConfig
    group: az.resources.ResourceGroup
    workspace: az.machinelearningservices.Workspace
    # Every role scope of the stack, by (scope kind, logical name).
    scopes: dict[tuple[str, str], pulumi.Input[str]]
    subscription: pulumi.Input[str]


class Serving(pulumi.ComponentResource):
    """The online endpoints, their serving environment and the roles of the rollout."""

    def __init__(
        self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:azure:Serving", name, None, opts)
        cfg, group, workspace, scopes = args.cfg, args.group, args.workspace, args.scopes
        subscription = args.subscription
        child = pulumi.ResourceOptions(parent=self)
        access = value("azure.serving.endpoint_public_network_access")
        container = az.machinelearningservices.EnvironmentContainer(
            "environment-serve",
            name=f"dhow-{SERVE_ENVIRONMENT}",
            workspace_name=workspace.name,
            resource_group_name=group.name,
            properties=az.machinelearningservices.EnvironmentContainerPropertiesArgs(
                description="Dhow's online deployments (score_online.py)"
            ),
            opts=child,
        )
        self.environment = az.machinelearningservices.EnvironmentVersion(
            f"environment-serve-v{SERVE_ENVIRONMENT_VERSION}",
            name=container.name,
            version=SERVE_ENVIRONMENT_VERSION,
            workspace_name=workspace.name,
            resource_group_name=group.name,
            properties=az.machinelearningservices.EnvironmentVersionPropertiesArgs(
                image=SERVE_IMAGE, conda_file=serve_conda_file(), os_type="Linux"
            ),
            opts=child,
        )
        self.endpoints: dict[str, az.machinelearningservices.OnlineEndpoint] = {}
        for spec in cfg.specs:
            endpoint = az.machinelearningservices.OnlineEndpoint(
                f"endpoint-{spec.name}",
                endpoint_name=endpoint_name(cfg.stage, spec.name),
                workspace_name=workspace.name,
                resource_group_name=group.name,
                location=cfg.location,
                kind="Managed",
                identity={"type": "SystemAssigned"},
                properties=az.machinelearningservices.OnlineEndpointPropertiesArgs(
                    auth_mode=access["auth_mode"],
                    public_network_access=access["public_network_access"],
                    description=f"Dhow serve: {spec.name}",
                ),
                tags=cfg.tags,
                # The deploy function owns the live endpoint's traffic (a PUT with
                # properties.traffic, fact azure.serving.endpoint_traffic); the stack never
                # sets it. A later update would PUT the endpoint with the inputs Pulumi
                # holds, which have no traffic, and reset the live split; ignore_changes
                # on traffic alone would not help, as it sends the old (absent) value
                # from the state. So the stack creates the endpoint and then never
                # updates it: a change to these inputs needs a new endpoint name.
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(ignore_changes=ENDPOINT_FROZEN)
                ),
            )
            self.endpoints[spec.name] = endpoint
            principal = principal_of(endpoint.identity)
            for role, kind, logical in ENDPOINT_GRANTS:
                assign(
                    f"endpoint-{spec.name}-{kind}-{logical}-{role[:8]}",
                    subscription,
                    principal,
                    role,
                    scopes[(kind, logical)],
                    child,
                )
        self.register_outputs({})

    def grant_app(
        self,
        subscription: pulumi.Input[str],
        app_principal: pulumi.Input[str],
        deploy_queue: pulumi.Input[str],
    ) -> None:
        """The deploy function's share outside the workspace role: sending its checks."""
        child = pulumi.ResourceOptions(parent=self)
        assign(
            "serving-checks-deploy", subscription, app_principal, QUEUE_SENDER, deploy_queue, child
        )

    def serve_urls(self) -> dict[str, pulumi.Output[Any]]:
        """Each dataset's scoring URI, what `dhow predict --url` calls with an Entra token."""
        return {
            dataset: endpoint.properties.apply(lambda p: getattr(p, "scoring_uri", None))
            for dataset, endpoint in self.endpoints.items()
        }
