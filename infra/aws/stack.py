"""The AWS stack: the components wired in order, in the pinned region."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.aws.data_lake import DataLake, DataLakeArgs
from infra.aws.events import EventWiring, EventWiringArgs
from infra.aws.functions import Functions, FunctionsArgs
from infra.aws.lineage import Lineage, LineageArgs
from infra.aws.monitoring import Monitoring, MonitoringArgs
from infra.aws.serving import Serving, ServingArgs
from infra.aws.training import Training, TrainingArgs
from infra.code_bundle import missing_layers
from infra.config import StackConfig, StackConfigError
from shared import constants as c


def region(cfg: StackConfig) -> str:
    return cfg.region


def preflight(cfg: StackConfig) -> None:
    """Every zip function's layer must have been built by ``make layers``."""
    if missing := missing_layers(cfg):
        raise StackConfigError(
            f"{', '.join(map(str, missing))} not built: run `make layers` first "
            f"(it builds the {cfg.arch} layers from PyPI and checks them against Lambda's limits)"
        )


def build(cfg: StackConfig) -> dict[str, pulumi.Input[object]]:
    """Create the stack; returns what ``__main__`` exports."""
    # Explicit provider: every resource is created in the checked region, whatever the
    # engineer's AWS_REGION or aws:region says.
    provider = aws.Provider("uae", region=cfg.region, default_tags={"tags": cfg.tags})
    opts = pulumi.ResourceOptions(providers=[provider])
    account = aws.get_caller_identity_output(
        opts=pulumi.InvokeOutputOptions(provider=provider)
    ).account_id

    lake = DataLake("data-lake", DataLakeArgs(cfg, account), opts)
    lineage = Lineage("lineage", LineageArgs(cfg, lake.key), opts)
    training = Training(
        "training", TrainingArgs(cfg, account, lake.key, lake.buckets["models"], provider), opts
    )
    events = EventWiring("events", EventWiringArgs(cfg, account, lake.key), opts)
    monitoring = Monitoring(
        "monitoring", MonitoringArgs(cfg, account, lake.key, events.queues, events.dlqs), opts
    )
    env: dict[str, pulumi.Input[str]] = {
        c.CLOUD: "aws",
        c.STAGE: cfg.stage,
        c.AWS_ACCOUNT_ID: account,
        c.TRAINING_IMAGE_URI: training.training_image_uri,
        c.INFERENCE_IMAGE_URI: training.inference_image_uri,
        c.PROCESSING_IMAGE_URI: training.jobs_image_uri,
        c.SAGEMAKER_ROLE_ARN: training.role.arn,
        c.KMS_KEY_ID: lake.key.arn,
        c.PRIVATE_SUBNETS: pulumi.Output.all(*[s.id for s in training.subnets]).apply(
            lambda ids: ",".join(ids)
        ),
        c.SECURITY_GROUPS: training.security_group.id,
        c.ALERTS_TOPIC_ARN: monitoring.topics["alerts"].arn,
    }
    functions = Functions(
        "functions",
        FunctionsArgs(
            cfg,
            account,
            lake.key,
            events.queues,
            events.dlqs,
            env,
            training.jobs_image_uri,
            lake.artifacts,
        ),
        opts,
    )
    serving = Serving(
        "serving",
        ServingArgs(cfg, account, functions.lambdas, monitoring.topics["alerts"], lake.key),
        opts,
    )
    return {
        "region": cfg.region,
        "buckets": {k: b.id for k, b in lake.buckets.items()},
        "lineage_table": lineage.tables["lineage"].name,
        "event_bus": events.bus.name,
        "alerts_topic_arn": monitoring.topics["alerts"].arn,
        "functions": {k: f.arn for k, f in functions.lambdas.items()},
        "serve_urls": serving.urls,
        "sagemaker_role_arn": training.role.arn,
        "jobs_image_uri": training.jobs_image_uri,
    }
