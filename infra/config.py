"""The stack's configuration, read once from ``pulumi config`` and checked before any
resource exists: a region or location outside the UAE stops the program here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pulumi

from shared.constants import AWS_REGIONS_ALLOWED, AZURE_LOCATIONS_ALLOWED
from shared.errors import DhowError
from shared.settings import STAGE_RE, check_aws_region, check_azure_location
from shared.specs import DatasetSpec, load_spec
from shared.topology import Topology, build_topology

REPO_ROOT = Path(__file__).resolve().parents[1]

Cloud = Literal["aws", "azure"]
Arch = Literal["x86_64", "arm64"]


class StackConfigError(pulumi.RunError):
    """The stack's configuration cannot build a Dhow stack; nothing has been created.

    A ``RunError`` so that ``pulumi up`` prints the message and the fix, not a traceback.
    """


@dataclass(frozen=True)
class StackConfig:
    cloud: Cloud
    stage: str
    region: str  # AWS
    location: str  # Azure
    specs: tuple[DatasetSpec, ...]
    arch: Arch = "x86_64"
    log_retention_days: int = 365
    alert_emails: tuple[str, ...] = ()
    # Role ARNs (IAM wildcards allowed) of the people who redrive a DLQ: a redrive sends
    # to the source queue with their own permissions, and the queues deny every other
    # sender in the account (infra/aws/events.py).
    queue_operators: tuple[str, ...] = ()
    vpc_cidr: str = "10.42.0.0/16"
    training_image_uri: str = ""  # empty: the SDK resolves it for the region at `pulumi up`
    inference_image_uri: str = ""  # empty: the SDK resolves it for the region, as training
    jobs_image_uri: str = ""
    azure_gpu_vm_size: str = "Standard_NC4as_T4_v3"
    azure_gpu_max_nodes: int = 2
    # A CPU size for the online deployments: the default trainer's models answer in
    # milliseconds on one.
    azure_serving_instance_type: str = "Standard_DS3_v2"
    layers_dir: Path = field(default=REPO_ROOT / "layers" / "dist")

    @property
    def prefix(self) -> str:
        return f"dhow-{self.stage}"

    @property
    def topology(self) -> Topology:
        return build_topology(self.stage)

    @property
    def tags(self) -> dict[str, str]:
        return {"dhow:stage": self.stage, "dhow:managed-by": "pulumi"}


def load() -> StackConfig:
    """The current stack's configuration, checked. Called once, by ``__main__``."""
    cfg = pulumi.Config("dhow")
    emails = cfg.get_object("alertEmails")
    operators = cfg.get_object("queueOperators")
    values: dict[str, Any] = {
        "cloud": cfg.get("cloud"),
        "region": cfg.get("region"),
        "location": cfg.get("location"),
        "arch": cfg.get("arch"),
        "log_retention_days": cfg.get_int("logRetentionDays"),
        "alert_emails": tuple(emails) if isinstance(emails, list) else None,
        "queue_operators": tuple(operators) if isinstance(operators, list) else None,
        "vpc_cidr": cfg.get("vpcCidr"),
        "training_image_uri": cfg.get("trainingImageUri"),
        "inference_image_uri": cfg.get("inferenceImageUri"),
        "jobs_image_uri": cfg.get("jobsImageUri"),
        "azure_gpu_vm_size": cfg.get("azureGpuVmSize"),
        "azure_gpu_max_nodes": cfg.get_int("azureGpuMaxNodes"),
        "azure_serving_instance_type": cfg.get("azureServingInstanceType"),
        "specs_dir": cfg.get("specsDir"),
    }
    # Unset keys take Pulumi.yaml's defaults, or else StackConfig's: one default each.
    return check(stage=cfg.require("stage"), **{k: v for k, v in values.items() if v is not None})


def check(
    *,
    stage: str,
    cloud: str = "aws",
    region: str = AWS_REGIONS_ALLOWED[0],
    location: str = AZURE_LOCATIONS_ALLOWED[0],
    specs_dir: str = "shared/specs",
    arch: str = "x86_64",
    **rest: object,
) -> StackConfig:
    """A ``StackConfig`` from plain values, or ``StackConfigError`` saying what to set."""
    if cloud not in ("aws", "azure"):
        raise StackConfigError(f"dhow:cloud is {cloud!r}: set it to aws or azure")
    if not STAGE_RE.match(stage):
        raise StackConfigError(
            f"dhow:stage {stage!r} is not usable in resource names: "
            "2-21 characters of a-z 0-9 and single '-' between them, starting with a letter"
        )
    if arch not in ("x86_64", "arm64"):
        raise StackConfigError(f"dhow:arch is {arch!r}: set it to x86_64 or arm64")
    # Both are checked whatever the cloud: a stack file cannot carry a foreign region
    # that a later change of dhow:cloud would start using.
    try:
        region = check_aws_region(region)
    except DhowError as exc:
        raise StackConfigError(
            f"{exc.message}: Dhow stacks run only in me-central-1; "
            "run `pulumi config set dhow:region me-central-1`"
        ) from None
    try:
        location = check_azure_location(location)
    except DhowError as exc:
        raise StackConfigError(
            f"{exc.message}: Dhow stacks run only in uaenorth or uaecentral; "
            "run `pulumi config set dhow:location uaenorth`"
        ) from None
    directory = Path(specs_dir)
    if not directory.is_absolute():
        directory = REPO_ROOT / directory
    names = sorted(p.stem for p in directory.glob("*.yaml"))
    if not names:
        raise StackConfigError(
            f"no dataset specs in {directory}: a stack serves and watches at least one; "
            "create one with `dhow dataset init` or set dhow:specsDir"
        )
    try:
        specs = tuple(load_spec(name, directory) for name in names)
    except DhowError as exc:
        raise StackConfigError(str(exc)) from None
    return StackConfig(
        cloud=cloud,  # type: ignore[arg-type]
        stage=stage,
        region=region,
        location=location,
        specs=specs,
        arch=arch,  # type: ignore[arg-type]
        **rest,  # type: ignore[arg-type]
    )
