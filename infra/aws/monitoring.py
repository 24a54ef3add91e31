"""What on-call sees: the encrypted alerts topic, the drift schedules (one per dataset
spec, to the drift queue), an alarm on every dead-letter queue and a dashboard."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.iam import assume_role_policy
from infra.config import StackConfig
from shared.cloud_facts import value
from shared.identifiers import scheduler_role_name


def scheduler_policy(queue_arn: str, dlq_arn: str, key_arn: str) -> str:
    """Scheduler sends to the target queue, or to its DLQ when it cannot."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["sqs:SendMessage"],
                    "Resource": [queue_arn, dlq_arn],
                },
                {
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": [key_arn],
                },
            ],
        }
    )


def dashboard_body(cfg: StackConfig) -> str:
    topo = cfg.topology
    region = cfg.region
    functions = [f.name for f in topo.functions if f.trigger_queue is not None]

    def widget(title: str, metrics: list[list[object]], stat: str = "Sum") -> dict[str, object]:
        return {
            "type": "metric",
            "width": 12,
            "height": 6,
            "properties": {
                "title": title,
                "region": region,
                "stat": stat,
                "period": 300,
                "metrics": metrics,
            },
        }

    widgets = [
        widget(
            "Dead-letter queues (messages waiting)",
            [
                ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q.dlq_name]
                for q in topo.queues
            ],
            "Maximum",
        ),
        widget(
            "Function errors",
            [["AWS/Lambda", "Errors", "FunctionName", name] for name in functions],
        ),
        widget(
            "Queue age (oldest message, s)",
            [
                ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", q.name]
                for q in topo.queues
            ],
            "Maximum",
        ),
        widget(
            "Drift share per dataset (%)",
            [["Dhow/Drift", "DriftShare", "Dataset", s.name] for s in cfg.specs],
            "Maximum",
        ),
    ]
    return json.dumps({"widgets": widgets})


@dataclass(frozen=True)
class MonitoringArgs:
    cfg: StackConfig
    account: pulumi.Output[str]
    key: aws.kms.Key
    queues: dict[str, aws.sqs.Queue]
    dlqs: dict[str, aws.sqs.Queue]


class Monitoring(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:aws:Monitoring", name, None, opts)
        cfg, account, key, queues, dlqs = args.cfg, args.account, args.key, args.queues, args.dlqs
        child = pulumi.ResourceOptions(parent=self)
        topo = cfg.topology
        self.topics = {
            t.logical: aws.sns.Topic(
                t.logical, name=t.name, kms_master_key_id=key.arn, tags=cfg.tags, opts=child
            )
            for t in topo.topics
        }
        alerts = self.topics["alerts"]
        for i, email in enumerate(cfg.alert_emails):
            aws.sns.TopicSubscription(
                f"alerts-email-{i}", topic=alerts.arn, protocol="email", endpoint=email, opts=child
            )

        # Nothing is lost silently: a message in any DLQ pages on-call.
        for q in topo.queues:
            aws.cloudwatch.MetricAlarm(
                f"{q.logical}-dlq-not-empty",
                name=f"{q.dlq_name}-not-empty",
                namespace="AWS/SQS",
                metric_name="ApproximateNumberOfMessagesVisible",
                dimensions={"QueueName": q.dlq_name},
                statistic="Maximum",
                period=300,
                evaluation_periods=1,
                threshold=0,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
                alarm_description=(
                    f"messages in {q.dlq_name}: read them with `aws sqs receive-message`, "
                    "then, as a role listed in dhow:queueOperators (the queues deny every "
                    "other sender), redrive with `aws sqs start-message-move-task "
                    f"--source-arn <{q.dlq_name} arn> --destination-arn <{q.name} arn>` "
                    "(EventBridge's and Scheduler's dead letters have no source queue to "
                    "return to by default)"
                ),
                alarm_actions=[alerts.arn],
                opts=child,
            )

        self.scheduler_role = aws.iam.Role(
            "scheduler",
            name=scheduler_role_name(cfg.stage),
            assume_role_policy=account.apply(
                lambda a: json.dumps(assume_role_policy("scheduler.amazonaws.com", a))
            ),
            tags=cfg.tags,
            opts=child,
        )
        self.schedules: list[aws.scheduler.Schedule] = []
        for sched in topo.schedules:
            target = queues[sched.target_queue]
            aws.iam.RolePolicy(
                f"scheduler-{sched.logical}",
                role=self.scheduler_role.id,
                policy=pulumi.Output.all(target.arn, dlqs[sched.target_queue].arn, key.arn).apply(
                    lambda v: scheduler_policy(*v)
                ),
                opts=child,
            )
            for spec in cfg.specs:
                self.schedules.append(
                    aws.scheduler.Schedule(
                        f"{sched.logical}-{spec.name}",
                        name=sched.name_for(spec.name),
                        schedule_expression=sched.expression_for(spec),
                        flexible_time_window={"mode": "OFF"},
                        kms_key_arn=key.arn,
                        target={
                            "arn": target.arn,
                            "role_arn": self.scheduler_role.arn,
                            # Scheduler writes in the time the run was scheduled for (not
                            # the execution id, new on each attempt): the drift check's
                            # window and identity.
                            "input": json.dumps(
                                {
                                    "dataset": spec.name,
                                    "period": value("aws.scheduler.scheduled_time_attribute"),
                                }
                            ),
                            "dead_letter_config": {"arn": dlqs[sched.target_queue].arn},
                            "retry_policy": {"maximum_retry_attempts": 10},
                        },
                        opts=child,
                    )
                )
        self.dashboard = aws.cloudwatch.Dashboard(
            "pipeline", dashboard_name=cfg.prefix, dashboard_body=dashboard_body(cfg), opts=child
        )
        self.register_outputs({"alerts_topic_arn": alerts.arn})
