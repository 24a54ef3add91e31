"""The stack's configuration, read once from ``pulumi config`` and checked before any
resource exists: a region or location outside the UAE stops the program here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pulumi

from shared.errors import DhowError
from shared.settings import check_aws_region, check_azure_location
from shared.specs import DatasetSpec, load_spec
from shared.topology import Topology, build_topology

REPO_ROOT = Path(__file__).resolve().parents[1]
_STAGE_RE = re.compile(r"^[a-z][a-z0-9-]{1,20}$")

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
    vpc_cidr: str = "10.42.0.0/16"
    training_image_uri: str = ""
    inference_image_uri: str = ""
    jobs_image_uri: str = ""
    azure_gpu_vm_size: str = "Standard_NC4as_T4_v3"
    azure_gpu_max_nodes: int = 2
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
    return check(
        cloud=cfg.get("cloud") or "aws",
        stage=cfg.require("stage"),
        region=cfg.get("region") or "me-central-1",
        location=cfg.get("location") or "uaenorth",
        arch=cfg.get("arch") or "x86_64",
        log_retention_days=cfg.get_int("logRetentionDays") or 365,
        alert_emails=tuple(cfg.get_object("alertEmails") or ()),
        vpc_cidr=cfg.get("vpcCidr") or "10.42.0.0/16",
        training_image_uri=cfg.get("trainingImageUri") or "",
        inference_image_uri=cfg.get("inferenceImageUri") or "",
        jobs_image_uri=cfg.get("jobsImageUri") or "",
        azure_gpu_vm_size=cfg.get("azureGpuVmSize") or "Standard_NC4as_T4_v3",
        azure_gpu_max_nodes=cfg.get_int("azureGpuMaxNodes") or 2,
        specs_dir=cfg.get("specsDir") or "shared/specs",
    )


def check(
    *,
    cloud: str,
    stage: str,
    region: str,
    location: str,
    specs_dir: str,
    arch: str = "x86_64",
    **rest: object,
) -> StackConfig:
    """A ``StackConfig`` from plain values, or ``StackConfigError`` saying what to set."""
    if cloud not in ("aws", "azure"):
        raise StackConfigError(f"dhow:cloud is {cloud!r}: set it to aws or azure")
    if not _STAGE_RE.match(stage):
        raise StackConfigError(
            f"dhow:stage {stage!r} is not usable in resource names: "
            "2-21 characters of a-z 0-9 -, starting with a letter"
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
