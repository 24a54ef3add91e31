"""Where managed jobs run: the SageMaker execution role, a VPC with private subnets and
only an S3 gateway endpoint (no internet path), the training image and the trainer's
code for it, and the Dhow jobs image in ECR (the register and drift-check functions and
the validation processing job run it)."""

from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import json
import os
import shlex
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.aws.iam import AwsScope, assume_role_policy, sagemaker_role_policy
from infra.config import REPO_ROOT, StackConfig
from shared.adapters.sagemaker_training import TRAINER_PROGRAM, TRAINER_SOURCE, trainer_code_key
from shared.cloud_facts import value
from shared.identifiers import sagemaker_role_name

JOBS_DOCKERFILE = "layers/jobs.Dockerfile"
PRIVATE_SUBNETS = 2
TRAINING_IMAGE = "aws.sagemaker.xgboost_training_image"
INFERENCE_IMAGE = "aws.sagemaker.xgboost_inference_image"
# Pulumi launches a resource provider in the program's directory (Pulumi.yaml's
# `main: infra/`; pkg/engine/project.go getPwdMain, plugin.go `cmd.Dir = pwd`), and
# docker-build resolves a relative context or Dockerfile location against its own working
# directory while storing and diffing the location as written. So the locations are
# given relative to infra/: the same strings on every checkout, wherever it lives.
PROGRAM_DIR = REPO_ROOT / "infra"
JOBS_CONTEXT_LOCATION = os.path.relpath(REPO_ROOT, PROGRAM_DIR)
JOBS_DOCKERFILE_LOCATION = os.path.relpath(REPO_ROOT / JOBS_DOCKERFILE, PROGRAM_DIR)
# What a build context never carries, whatever the Dockerfile copies: byte code differs
# from one machine (and Python) to the next.
CONTEXT_NEVER = ("__pycache__", ".pyc")


def training_image_uri(cfg: StackConfig) -> str:
    """``dhow:trainingImageUri`` when set; else SageMaker's XGBoost framework image for the
    stack's region, from the SageMaker SDK's own region tables."""
    return cfg.training_image_uri or sdk_image_uri(TRAINING_IMAGE, cfg.region)


def inference_image_uri(cfg: StackConfig) -> str:
    """``dhow:inferenceImageUri`` when set; else SageMaker's XGBoost inference image for
    the stack's region, from the SageMaker SDK's own region tables, as for training."""
    return cfg.inference_image_uri or sdk_image_uri(INFERENCE_IMAGE, cfg.region)


def sdk_image_uri(image_fact: str, region: str) -> str:
    """The framework image the fact ``image_fact`` names (framework, version, scope) in
    ``region``, as the SageMaker SDK's region tables give it."""
    # Imported here: the SDK takes seconds to import, and only this needs it.
    from sagemaker.core import image_uris  # type: ignore[import-untyped]

    image = value(image_fact)
    return str(
        image_uris.retrieve(
            image["framework"], region, version=image["version"], image_scope=image["scope"]
        )
    )


def trainer_sourcedir(directory: Path, source: Path = TRAINER_SOURCE) -> Path:
    """The trainer as the SageMaker SDK packs an entry point given without a source_dir:
    ``sourcedir.tar.gz`` with the script at its root. Timestamps and owners are fixed, so
    the same trainer gives the same bytes and ``pulumi up`` uploads it only when it
    changes."""
    data = source.read_bytes()
    member = tarfile.TarInfo(TRAINER_PROGRAM)
    member.size, member.mode, member.mtime = len(data), 0o644, 0
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(data))
    path = directory / trainer_code_key(source).rsplit("/", 1)[-1]
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


def dockerfile_copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths the Dockerfile's COPY and ADD instructions read."""
    sources: list[str] = []
    # One instruction per logical line: a trailing backslash continues it.
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue  # from another stage or image, not from the context
        sources += args[:-1]
    return sources


def jobs_context_files(root: Path = REPO_ROOT) -> list[Path]:
    """Exactly the files the jobs image is built from: what its Dockerfile copies, without
    byte code (``.dockerignore`` sends docker nothing else)."""
    files: set[Path] = set()
    for src in dockerfile_copy_sources(root / JOBS_DOCKERFILE):
        path = root / src
        for p in [path] if path.is_file() else path.rglob("*"):
            if p.is_file() and not any(n in CONTEXT_NEVER or n.endswith(".pyc") for n in p.parts):
                files.add(p)
    return sorted(files)


def jobs_image_tag(root: Path = REPO_ROOT) -> str:
    """The jobs image's tag: a digest of the Dockerfile and of the files it copies, and of
    nothing else, so the same sources give the same tag on any machine, and a change to
    what goes into the image gives a new tag (the repository's tags are immutable).

    Each file counts with its relative path, its bytes and its mode: what docker-build's
    context hash covers (provider/internal/context.go hashFile). Whenever that hash differs
    docker-build rebuilds and pushes, and ECR refuses a new image under an existing tag;
    a checkout whose modes differ (another umask, a lost executable bit) thus gets a tag
    of its own instead of a refused push."""
    h = hashlib.sha256()
    for p in [root / JOBS_DOCKERFILE, *jobs_context_files(root)]:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(stat.filemode(p.stat().st_mode).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:16]


def lambda_image_uri(repository_url: str, digest: str) -> str:
    """The image as Lambda accepts it: by digest alone. docker-build's ``ref`` is
    ``repo:tag@sha256:…``, which Lambda refuses (pulumi-docker-build issue 571)."""
    return f"{repository_url}@{digest}"


def endpoint_policy(buckets: list[str]) -> str:
    """The gateway endpoint reaches the stack's own buckets and nothing else in S3.

    By their names, not ``<prefix>-*``: IAM's ``*`` matches ``-`` too (fact
    ``aws.iam.arn_wildcards``), so ``dhow-acme-*`` also reached stage acme-prod's buckets."""
    arns = [f"arn:aws:s3:::{name}" for name in sorted(buckets)]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "StackBucketsOnly",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
                    "Resource": [*arns, *(f"{arn}/*" for arn in arns)],
                }
            ],
        }
    )


def ecr_pull_policy(region: str, account: str) -> str:
    """Lambda pulls the drift-check image for this account's functions only."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "LambdaPull",
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                    "Condition": {
                        "StringLike": {
                            "aws:sourceArn": f"arn:aws:lambda:{region}:{account}:function:*"
                        }
                    },
                }
            ],
        }
    )


@dataclass(frozen=True)
class TrainingArgs:
    cfg: StackConfig
    account: pulumi.Output[str]
    key: aws.kms.Key
    models: aws.s3.Bucket
    provider: aws.Provider


class Training(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: TrainingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:aws:Training", name, None, opts)
        cfg, account, key, models, provider = (
            args.cfg,
            args.account,
            args.key,
            args.models,
            args.provider,
        )
        child = pulumi.ResourceOptions(parent=self)
        topo = cfg.topology

        self.role = aws.iam.Role(
            "sagemaker",
            name=sagemaker_role_name(cfg.stage),
            assume_role_policy=account.apply(
                lambda a: json.dumps(assume_role_policy("sagemaker.amazonaws.com", a))
            ),
            tags=cfg.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            "sagemaker",
            role=self.role.id,
            policy=pulumi.Output.all(account, key.arn).apply(
                lambda v: json.dumps(
                    sagemaker_role_policy(topo, AwsScope(cfg.region, v[0], cfg.stage), key_arn=v[1])
                )
            ),
            opts=child,
        )

        # Private only: no internet gateway, no NAT. S3 through the gateway endpoint.
        self.vpc = aws.ec2.Vpc(
            "jobs",
            cidr_block=cfg.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**cfg.tags, "Name": cfg.name("jobs")},
            opts=child,
        )
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(provider=provider)
        )
        cidrs = list(ipaddress.ip_network(cfg.vpc_cidr).subnets(new_prefix=20))[:PRIVATE_SUBNETS]
        route_table = aws.ec2.RouteTable(
            "private",
            vpc_id=self.vpc.id,
            tags={**cfg.tags, "Name": cfg.name("private")},
            opts=child,
        )
        self.subnets = []
        for i, cidr in enumerate(cidrs):
            subnet = aws.ec2.Subnet(
                f"private-{i}",
                vpc_id=self.vpc.id,
                cidr_block=str(cidr),
                availability_zone=zones.names[i],
                map_public_ip_on_launch=False,
                tags={**cfg.tags, "Name": cfg.name("private", str(i))},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"private-{i}", subnet_id=subnet.id, route_table_id=route_table.id, opts=child
            )
            self.subnets.append(subnet)
        s3 = aws.ec2.VpcEndpoint(
            "s3",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{cfg.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[route_table.id],
            policy=endpoint_policy([b.name for b in cfg.topology.buckets]),
            tags=cfg.tags,
            opts=child,
        )
        self.security_group = aws.ec2.SecurityGroup(
            "jobs",
            name=cfg.name("jobs"),
            description="Dhow managed jobs: no inbound; out to S3 and to each other only",
            vpc_id=self.vpc.id,
            egress=[
                {
                    "description": "S3 through the gateway endpoint",
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "prefix_list_ids": [s3.prefix_list_id],
                },
                {
                    "description": "distributed training between the job's instances",
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "self": True,
                },
            ],
            ingress=[
                {
                    "description": "distributed training between the job's instances",
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "self": True,
                }
            ],
            tags=cfg.tags,
            opts=child,
        )

        self.repository = aws.ecr.Repository(
            "jobs",
            name=cfg.name("jobs"),
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=[{"encryption_type": "KMS", "kms_key": key.arn}],
            tags=cfg.tags,
            opts=child,
        )
        aws.ecr.RepositoryPolicy(
            "jobs-lambda-pull",
            repository=self.repository.name,
            policy=account.apply(lambda a: ecr_pull_policy(cfg.region, a)),
            opts=child,
        )
        self.training_image_uri = training_image_uri(cfg)
        self.inference_image_uri = inference_image_uri(cfg)
        # The trainer's code, for the training job's code channel (train-launch derives
        # the same key from the same file in its own package).
        staging = Path(tempfile.gettempdir()) / f"dhow-{cfg.prefix}-trainer"
        staging.mkdir(exist_ok=True)
        self.trainer_code = aws.s3.BucketObjectv2(
            "trainer-code",
            bucket=models.id,
            key=trainer_code_key(),
            source=pulumi.FileAsset(str(trainer_sourcedir(staging))),
            server_side_encryption="aws:kms",
            kms_key_id=key.arn,
            tags=cfg.tags,
            opts=child,
        )
        self.jobs_image_uri = self._jobs_image(cfg, provider)
        self.register_outputs(
            {
                "training_image_uri": self.training_image_uri,
                "inference_image_uri": self.inference_image_uri,
                "sagemaker_role_arn": self.role.arn,
                "subnets": [s.id for s in self.subnets],
                "security_group": self.security_group.id,
                "jobs_image_uri": self.jobs_image_uri,
            }
        )

    def _jobs_image(self, cfg: StackConfig, provider: aws.Provider) -> pulumi.Output[str]:
        if cfg.jobs_image_uri:
            return pulumi.Output.from_input(cfg.jobs_image_uri)
        # Built from the checkout and pushed at `pulumi up` (needs a Docker engine there).
        token = aws.ecr.get_authorization_token_output(
            registry_id=self.repository.registry_id,
            opts=pulumi.InvokeOutputOptions(provider=provider),
        )
        tag = jobs_image_tag()
        # The context is the repository root, filtered by its .dockerignore to what the
        # Dockerfile copies: docker-build rebuilds when the context's hash changes, and a
        # .venv or .git in it would change that hash on every machine. It also rebuilds
        # when context.location or the Dockerfile's location differs as a string
        # (provider/internal/image.go Diff), hence the locations relative to infra/, never
        # this checkout's absolute path. The repository stays IMMUTABLE: docker-build has
        # no "skip the push if the tag exists" input, and IMMUTABLE_WITH_EXCLUSION would
        # only make our tags overwritable (a tag then no longer names one image); a tag
        # that changes exactly when docker-build's inputs do is what keeps pushes legal.
        image = docker_build.Image(
            "jobs",
            context={"location": JOBS_CONTEXT_LOCATION},
            dockerfile={"location": JOBS_DOCKERFILE_LOCATION},
            platforms=["linux/amd64"],
            push=True,
            tags=[self.repository.repository_url.apply(lambda url: f"{url}:{tag}")],
            registries=[
                {
                    "address": self.repository.repository_url,
                    "username": token.user_name,
                    "password": token.password,
                }
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return pulumi.Output.all(self.repository.repository_url, image.digest).apply(
            lambda v: lambda_image_uri(v[0], v[1])
        )
