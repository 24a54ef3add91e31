"""Where managed jobs run: the SageMaker execution role, a VPC with private subnets and
only an S3 gateway endpoint (no internet path), and the Dhow jobs image in ECR (the
drift-check function and the validation processing job run it)."""

from __future__ import annotations

import ipaddress
import json
from typing import cast

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.aws.iam import AwsScope, assume_role_policy, sagemaker_role_name, sagemaker_role_policy
from infra.config import REPO_ROOT, StackConfig
from infra.packaging import source_digest

JOBS_DOCKERFILE = "layers/jobs.Dockerfile"
PRIVATE_SUBNETS = 2


def endpoint_policy(prefix: str) -> str:
    """The gateway endpoint reaches the stack's own buckets and nothing else in S3."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "StackBucketsOnly",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
                    "Resource": [f"arn:aws:s3:::{prefix}-*", f"arn:aws:s3:::{prefix}-*/*"],
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


class Training(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        account: pulumi.Output[str],
        key: aws.kms.Key,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("dhow:aws:Training", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        topo = cfg.topology

        self.role = aws.iam.Role(
            "sagemaker",
            name=sagemaker_role_name(cfg.prefix),
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
                    sagemaker_role_policy(
                        topo, AwsScope(cfg.region, v[0], cfg.prefix), key_arn=v[1]
                    )
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
            tags={**cfg.tags, "Name": f"{cfg.prefix}-jobs"},
            opts=child,
        )
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(provider=provider)
        )
        cidrs = list(ipaddress.ip_network(cfg.vpc_cidr).subnets(new_prefix=20))[:PRIVATE_SUBNETS]
        route_table = aws.ec2.RouteTable(
            "private",
            vpc_id=self.vpc.id,
            tags={**cfg.tags, "Name": f"{cfg.prefix}-private"},
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
                tags={**cfg.tags, "Name": f"{cfg.prefix}-private-{i}"},
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
            policy=endpoint_policy(cfg.prefix),
            tags=cfg.tags,
            opts=child,
        )
        self.security_group = aws.ec2.SecurityGroup(
            "jobs",
            name=f"{cfg.prefix}-jobs",
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
            name=f"{cfg.prefix}-jobs",
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
        self.jobs_image_uri = self._jobs_image(cfg, provider)
        self.register_outputs(
            {
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
        tag = source_digest(extra=(JOBS_DOCKERFILE, "pyproject.toml"))
        image = docker_build.Image(
            "jobs",
            context={"location": str(REPO_ROOT)},
            dockerfile={"location": str(REPO_ROOT / JOBS_DOCKERFILE)},
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
        return cast(pulumi.Output[str], image.ref)
