"""Create the topology in LocalStack (me-central-1) or Azurite. Safe to run again."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from shared.adapters.aws import DynamoLineageStore, aws_client
from shared.identifiers import scheduler_role_name
from shared.ports import AlertInbox
from shared.settings import Settings
from shared.topology import Topology
from shared.wiring import azure_table_name


@dataclass
class Provisioned:
    buckets: list[str] = field(default_factory=list)
    queues: dict[str, str] = field(default_factory=dict)  # name -> url
    tables: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    bus: str | None = None
    topics: dict[str, str] = field(default_factory=dict)  # name -> arn
    schedules: list[str] = field(default_factory=list)


# Each topic gets a local subscriber queue, where `dhow local alerts` reads what on-call
# would have been sent.
def inbox_queue_name(topic_name: str) -> str:
    return f"{topic_name}-local-inbox"


def alert_inbox(settings: Settings, topic_name: str) -> AlertInbox:
    """Where the local platform keeps what the alerts topic ``topic_name`` delivered: the
    local kit of the settings' cloud says (``LocalKit.alert_inbox``)."""
    from dhow_local.kit import LOCAL_KITS

    return LOCAL_KITS[settings.cloud](settings).alert_inbox(topic_name)


LOCAL_ACCOUNT = "000000000000"


def provision_aws(settings: Settings, topo: Topology) -> Provisioned:
    s3 = aws_client("s3", settings)
    sqs = aws_client("sqs", settings)
    events = aws_client("events", settings)
    ddb = aws_client("dynamodb", settings)
    out = Provisioned()

    for bucket in topo.buckets:
        try:
            s3.create_bucket(
                Bucket=bucket.name,
                CreateBucketConfiguration={"LocationConstraint": settings.aws_region},  # type: ignore[typeddict-item]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise
        s3.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
        if bucket.emits_object_events:
            s3.put_bucket_notification_configuration(
                Bucket=bucket.name, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )
        out.buckets.append(bucket.name)

    arns: dict[str, str] = {}
    for queue in topo.queues:
        dlq_url = sqs.create_queue(
            QueueName=queue.dlq_name,
            Attributes={"MessageRetentionPeriod": str(queue.dlq_retention_s)},
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        url = sqs.create_queue(QueueName=queue.name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sqs.set_queue_attributes(
            QueueUrl=url,
            Attributes={
                "VisibilityTimeout": str(queue.visibility_timeout_s),
                "MessageRetentionPeriod": str(queue.retention_s),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": queue.max_receive_count}
                ),
                # EventBridge may deliver to this queue, and nothing else may.
                "Policy": json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": arn,
                            }
                        ],
                    }
                ),
            },
        )
        arns[queue.logical] = arn
        out.queues[queue.name] = url
        out.queues[queue.dlq_name] = dlq_url

    try:
        events.create_event_bus(Name=topo.bus_name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
    out.bus = topo.bus_name

    for rule in topo.rules:
        bus = "default" if rule.bus == "default" else topo.bus_name
        events.put_rule(
            Name=rule.name, EventBusName=bus, EventPattern=json.dumps(rule.pattern), State="ENABLED"
        )
        events.put_targets(
            Rule=rule.name,
            EventBusName=bus,
            Targets=[{"Id": rule.target_queue, "Arn": arns[rule.target_queue]}],
        )
        out.rules.append(rule.name)

    for table in topo.tables:
        DynamoLineageStore.create_table(ddb, table.name)
        out.tables.append(table.name)

    sns = aws_client("sns", settings)
    for topic in topo.topics:
        topic_arn = sns.create_topic(Name=topic.name)["TopicArn"]
        inbox = sqs.create_queue(QueueName=inbox_queue_name(topic.name))["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=inbox_arn)
        out.topics[topic.name] = topic_arn
        out.queues[inbox_queue_name(topic.name)] = inbox

    out.schedules = provision_schedules(settings, topo, arns)
    return out


def provision_schedules(
    settings: Settings, topo: Topology, queue_arns: dict[str, str]
) -> list[str]:
    """One schedule per dataset spec and per schedule of the topology, at the spec's own
    expression, sending ``{"dataset": ...}`` to the target queue (as the stack does)."""
    from shared.specs import load_spec, specs_dir

    scheduler = aws_client("scheduler", settings)
    names: list[str] = []
    role = scheduler_role_name(topo.stage)  # the stack's role of that name (infra/aws)
    datasets = sorted(p.stem for p in specs_dir(settings.specs_dir).glob("*.yaml"))
    for schedule in topo.schedules:
        for dataset in datasets:
            expression = schedule.expression_for(load_spec(dataset, settings.specs_dir))
            name = schedule.name_for(dataset)
            params: dict[str, Any] = {
                "Name": name,
                "ScheduleExpression": expression,
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "State": "ENABLED",
                "Target": {
                    "Arn": queue_arns[schedule.target_queue],
                    "RoleArn": f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{role}",
                    "Input": json.dumps({"dataset": dataset}),
                },
            }
            try:
                scheduler.create_schedule(**params)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConflictException":
                    raise
                scheduler.update_schedule(**params)
            names.append(name)
    return names


def provision_azure(settings: Settings, topo: Topology) -> Provisioned:
    from azure.core.exceptions import ResourceExistsError

    from shared.adapters.azure import azure_clients

    clients = azure_clients(settings)
    out = Provisioned()
    for bucket in topo.buckets:
        with contextlib.suppress(ResourceExistsError):
            clients.blobs.create_container(bucket.name)
        out.buckets.append(bucket.name)
    for queue in topo.queues:
        # The Functions host moves a message that keeps failing to "<name>-poison".
        for name in (queue.name, f"{queue.name}-poison"):
            with contextlib.suppress(ResourceExistsError):
                clients.queues.create_queue(name)
            out.queues[name] = clients.queues.get_queue_client(name).url
    # Alerts stay in a queue of the region (action groups are global; see QueueAlerts).
    for topic in topo.topics:
        with contextlib.suppress(ResourceExistsError):
            clients.queues.create_queue(topic.name)
        out.topics[topic.name] = clients.queues.get_queue_client(topic.name).url
    for table in topo.tables:
        clients.tables.create_table_if_not_exists(azure_table_name(table.name))
        out.tables.append(azure_table_name(table.name))
    return out
