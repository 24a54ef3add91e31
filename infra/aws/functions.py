"""One Lambda per function of the topology (the serve function once per dataset), each
with its own least-privilege role, encrypted log group, X-Ray, a dead-letter queue for
failed asynchronous calls and, when queue-triggered, an event-source mapping that
reports partial batch failures."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.events import queue_policy, role_arns, sender_roles
from infra.aws.iam import AwsScope, assume_role_policy, function_policy, function_role_name
from infra.code_bundle import code_archive, layer_archive, layer_path
from infra.config import StackConfig
from layers.catalogue import FUNCTION_LAYERS
from shared import constants as c
from shared.adapters.codedeploy import serve_function_name
from shared.identifiers import family_head
from shared.stack_contract import environment
from shared.topology import Function

RUNTIME = "python3.12"
Env = dict[str, pulumi.Input[str]]


@dataclass(frozen=True)
class FunctionsArgs:
    cfg: StackConfig
    account: pulumi.Output[str]
    key: aws.kms.Key
    queues: dict[str, aws.sqs.Queue]
    dlqs: dict[str, aws.sqs.Queue]
    # Every value the stack offers, by env var name (each function takes its share).
    env: Env
    jobs_image_uri: pulumi.Input[str]
    artifacts: aws.s3.Bucket


class Functions(pulumi.ComponentResource):
    lambdas: dict[str, aws.lambda_.Function]
    roles: dict[str, aws.iam.Role]

    def __init__(
        self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:aws:Functions", name, None, opts)
        cfg, account, key, env = args.cfg, args.account, args.key, args.env
        self._artifacts = args.artifacts
        self._cfg, self._account, self._key = cfg, account, key
        self._image_uri = args.jobs_image_uri
        self._code = code_archive()
        child = pulumi.ResourceOptions(parent=self)
        topo = cfg.topology
        # Failed asynchronous calls of the functions no queue triggers (serve) land here.
        self.failures = aws.sqs.Queue(
            "async-failures",
            name=cfg.name("async-failures"),
            kms_master_key_id=key.arn,
            message_retention_seconds=14 * 24 * 3600,
            tags=cfg.tags,
            opts=child,
        )
        # Only the serve functions' own roles may send there (infra/aws/events.py).
        serve_roles = sender_roles(cfg).get("async-failures", [])
        aws.sqs.QueuePolicy(
            "async-failures-senders",
            queue_url=self.failures.url,
            policy=pulumi.Output.all(account, self.failures.arn).apply(
                lambda v: queue_policy(v[1], [], role_arns(str(v[0]), serve_roles, cfg))
            ),
            opts=child,
        )
        self.layers: dict[str, aws.lambda_.LayerVersion] = {}
        self.lambdas, self.roles = {}, {}
        for fn in topo.functions:
            if fn.trigger_queue is None:
                for spec in cfg.specs:
                    if spec.serving.target == "lambda":
                        # One copy per dataset: the dataset is the copy's own setting.
                        own = environment("aws", fn.logical, env, per_function=(c.SERVE_DATASET,))
                        self._function(
                            fn,
                            # dhow-<stage>--serve-<dataset>, the deployer's name for it,
                            # which IAM and the deployment rules match by prefix.
                            serve_function_name(family_head(cfg.stage), spec.name),
                            self.failures,
                            {**own, c.SERVE_DATASET: spec.name},
                            publish=True,
                        )
                continue
            # Each function gets exactly the settings it reads (shared/stack_contract.py).
            function = self._function(
                fn, fn.name, args.dlqs[fn.trigger_queue], environment("aws", fn.logical, env)
            )
            aws.lambda_.EventSourceMapping(
                fn.logical,
                event_source_arn=args.queues[fn.trigger_queue].arn,
                function_name=function.arn,
                batch_size=fn.batch_size,
                function_response_types=["ReportBatchItemFailures"],
                opts=child,
            )
        self.register_outputs({"functions": {k: f.arn for k, f in self.lambdas.items()}})

    def _layer(self, fn: Function) -> aws.lambda_.LayerVersion:
        layer = FUNCTION_LAYERS[fn.logical]
        if layer not in self.layers:
            arch, child = self._cfg.arch, pulumi.ResourceOptions(parent=self)
            archive = layer_archive(self._cfg, fn.logical)
            obj = aws.s3.BucketObjectv2(
                f"layer-{layer}",
                bucket=self._artifacts.id,
                key=f"layers/{layer_path(self._cfg, fn.logical).name}",
                source=archive,
                server_side_encryption="aws:kms",
                kms_key_id=self._key.arn,
                opts=child,
            )
            self.layers[layer] = aws.lambda_.LayerVersion(
                f"layer-{layer}",
                layer_name=self._cfg.name(layer, arch.replace("_", "-")),
                s3_bucket=obj.bucket,
                s3_key=obj.key,
                s3_object_version=obj.version_id,
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[arch],
                opts=child,
            )
        return self.layers[layer]

    def _function(
        self,
        fn: Function,
        deployed: str,
        dlq: aws.sqs.Queue,
        env: Env,
        *,
        publish: bool = False,
    ) -> aws.lambda_.Function:
        cfg, child = self._cfg, pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            deployed,
            name=function_role_name(deployed),
            assume_role_policy=json.dumps(assume_role_policy("lambda.amazonaws.com")),
            tags=cfg.tags,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            deployed,
            role=role.id,
            policy=pulumi.Output.all(self._account, self._key.arn, dlq.arn).apply(
                lambda v: json.dumps(
                    function_policy(
                        cfg.topology,
                        fn,
                        AwsScope(cfg.region, v[0], cfg.stage),
                        function_name=deployed,
                        key_arn=v[1],
                        dlq_arn=v[2],
                    )
                )
            ),
            opts=child,
        )
        logs = aws.cloudwatch.LogGroup(
            deployed,
            name=f"/aws/lambda/{deployed}",
            retention_in_days=cfg.log_retention_days,
            kms_key_id=self._key.arn,
            tags=cfg.tags,
            opts=child,
        )
        package: dict[str, object]
        if fn.package == "image":
            # The jobs image holds every dependency; the command picks the handler.
            package = {
                "package_type": "Image",
                "image_uri": self._image_uri,
                "image_config": {"commands": [fn.aws_handler]},
                "architectures": ["x86_64"],
            }
        else:
            package = {
                "package_type": "Zip",
                "runtime": RUNTIME,
                "handler": fn.aws_handler,
                "code": self._code,
                "layers": [self._layer(fn).arn],
                "architectures": [cfg.arch],
            }
        function = aws.lambda_.Function(
            deployed,
            name=deployed,
            role=role.arn,
            memory_size=fn.memory_mb,
            timeout=fn.timeout_s,
            # /tmp: validate keeps the staged file and its curated copy there.
            ephemeral_storage={"size": fn.ephemeral_storage_mb},
            reserved_concurrent_executions=fn.reserved_concurrency,
            environment={"variables": env},
            kms_key_arn=self._key.arn,
            tracing_config={"mode": "Active"},
            dead_letter_config={"target_arn": dlq.arn},
            logging_config={"log_format": "JSON", "log_group": logs.name},
            publish=publish,
            tags=cfg.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy, logs]),
            **package,
        )
        self.lambdas[deployed] = function
        self.roles[deployed] = role
        return function
