"""The stack's configuration, read once from ``pulumi config`` and checked before any
resource exists: a region or location outside the UAE stops the program here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pulumi

from shared.constants import AWS_REGIONS_ALLOWED, AZURE_LOCATIONS_ALLOWED
from shared.errors import DhowError
from shared.identifiers import stage_name, stage_prefix
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
        return stage_prefix(self.stage)

    def name(self, *parts: str) -> str:
        """``dhow-<stage>-<part>-...``, as every name the topology holds is built."""
        return stage_name(self.stage, *parts)

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
    if cloud == "aws":
        _check_dataset_names(stage, [spec.name for spec in specs])
    operators = rest.get("queue_operators") or ()
    for arn in operators if isinstance(operators, tuple | list) else [operators]:
        # aws:PrincipalArn is the role's ARN with its path, never the session's: an IAM
        # Identity Center role lives under role/aws-reserved/sso.amazonaws.com/<region>/.
        if not isinstance(arn, str) or not _OPERATOR_ARN.fullmatch(arn):
            raise StackConfigError(
                f"dhow:queueOperators has {arn!r}: list IAM role or user ARNs (wildcards "
                "allowed), e.g. arn:aws:iam::<account>:role/aws-reserved/sso.amazonaws.com/"
                "*/AWSReservedSSO_<permission set>_*"
            )
    return StackConfig(
        cloud=cloud,  # type: ignore[arg-type]
        stage=stage,
        region=region,
        location=location,
        specs=specs,
        arch=arch,  # type: ignore[arg-type]
        **rest,  # type: ignore[arg-type]
    )


_OPERATOR_ARN = re.compile(r"arn:aws:iam::(\d{12}|\*):(role|user)/[\w+=,.@/*-]+")


def dataset_resource_names(stage: str, dataset: str) -> dict[tuple[str, str, str], str]:
    """The AWS names the stack makes for one dataset, each keyed by the service, the
    operation that creates it and the member holding it in botocore's model."""
    from shared.adapters.codedeploy import serve_function_name
    from shared.identifiers import family_head
    from shared.topology import build_topology

    served = serve_function_name(family_head(stage), dataset)
    out: dict[tuple[str, str, str], str] = {
        ("lambda", "CreateFunction", "FunctionName"): served,
        ("iam", "CreateRole", "RoleName"): f"{served}-fn",
    }
    for sched in build_topology(stage).schedules:
        out[("scheduler", "CreateSchedule", "Name")] = max(
            out.get(("scheduler", "CreateSchedule", "Name"), ""),
            sched.name_for(dataset),
            key=len,
        )
    return out


def _check_dataset_names(stage: str, datasets: list[str]) -> None:
    """Refuse, before anything is created, a dataset whose names one of the services would
    refuse (a dataset name may have 63 characters; a schedule's or a function's name
    holds 64 in all, stage and prefixes included), with each limit read from botocore's
    model of the API that creates the name, not written here."""
    from botocore.session import get_session

    session = get_session()
    for dataset in datasets:
        for (service, operation, member), name in dataset_resource_names(stage, dataset).items():
            shape = session.get_service_model(service).operation_model(operation).input_shape
            assert shape is not None, (service, operation)
            limit = int(shape.members[member].metadata.get("max", 10**6))
            if len(name) > limit:
                raise StackConfigError(
                    f"dataset {dataset!r} makes the {service} name {name!r} "
                    f"({len(name)} characters), over the {limit} {operation} takes: "
                    f"shorten the dataset name by {len(name) - limit} or the stage "
                    f"{stage!r}",
                )
