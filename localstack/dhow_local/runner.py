"""The local runner: plays Lambda's SQS event-source mapping against LocalStack.

LocalStack without Docker cannot execute Lambda functions, so for each function
of the topology a thread polls the function's queue and calls the same handler,
with the same batch event shape Lambda would send. ``batchItemFailures`` is
honoured: successful messages are deleted, failed ones are left on the queue,
and a message that keeps failing reaches the DLQ by the queue's own redrive
policy (``maxReceiveCount``), exactly as in the cloud.

Another thread plays EventBridge Scheduler (``dhow_local.scheduler``), which
LocalStack stores but does not fire.

One difference, for speed: Lambda leaves a failed message invisible for the
rest of its visibility timeout (6 minutes in our topology); the runner makes it
visible again after ``retry_delay_s`` (1 s by default).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dhow_local.scheduler import SchedulePlayer
from shared.adapters.aws import aws_client
from shared.adapters.aws_calls import calls_of
from shared.identifiers import stage_prefix
from shared.settings import Settings
from shared.topology import Function, Topology

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)

Handler = Callable[..., Any]  # a Lambda handler or an Azure Functions entry point


@dataclass(frozen=True)
class LambdaContext:
    """The parts of Lambda's context object that handlers may read."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int
    invoked_function_arn: str

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def load_handler(path: str) -> Handler:
    module, _, attr = path.rpartition(".")
    fn: Handler = getattr(importlib.import_module(module), attr)
    return fn


def sqs_event(messages: list[MessageTypeDef], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda's event-source mapping builds from received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class FunctionPoller:
    """Polls one function's queue and invokes its handler."""

    def __init__(
        self,
        fn: Function,
        topo: Topology,
        settings: Settings,
        sqs: SQSClient,
        handler: Handler,
        retry_delay_s: int = 1,
    ) -> None:
        self.fn = fn
        self._sqs = sqs
        self._handler = handler
        self._retry_delay = retry_delay_s
        self._region = settings.aws_region
        assert fn.trigger_queue is not None, f"{fn.name} has no queue to poll"
        self._url = sqs.get_queue_url(QueueName=topo.queue(fn.trigger_queue).name)["QueueUrl"]
        self._arn = sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.invocations = 0
        self.failed_messages = 0

    def poll_once(self, wait_s: int = 1) -> int:
        """Receive one batch and invoke the handler on it; returns the batch size."""
        # Lambda's event-source mapping polls and deletes with the function's own role, so
        # those calls are the function's (aws_calls: the IAM check of the integration tests).
        with calls_of(self.fn.logical):
            r = self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=self.fn.batch_size,
                WaitTimeSeconds=wait_s,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        messages = r.get("Messages", [])
        if not messages:
            return 0
        event = sqs_event(messages, self._arn, self._region)
        context = LambdaContext(
            function_name=self.fn.name,
            aws_request_id=str(uuid.uuid4()),
            memory_limit_in_mb=self.fn.memory_mb,
            invoked_function_arn=f"arn:aws:lambda:{self._region}:000000000000:function:{self.fn.name}",
        )
        self.invocations += 1
        try:
            with calls_of(self.fn.logical):
                response = self._handler(event, context)
            failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}
        except Exception:
            # A handler that raises fails the whole batch, as on Lambda.
            log.exception("%s raised; the whole batch will be retried", self.fn.name)
            failed = {m["MessageId"] for m in messages}
        for m in messages:
            if m["MessageId"] in failed:
                self.failed_messages += 1
                self._sqs.change_message_visibility(
                    QueueUrl=self._url,
                    ReceiptHandle=m["ReceiptHandle"],
                    VisibilityTimeout=self._retry_delay,
                )
            else:
                with calls_of(self.fn.logical):
                    self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=m["ReceiptHandle"])
        return len(messages)


class BackgroundThreads:
    """The threads of a runner, stopped together (SIGTERM calls ``stop``)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        raise NotImplementedError

    def polled(self) -> list[str]:
        """The names of the functions whose triggers this runner plays."""
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop()


class Runner(BackgroundThreads):
    """One polling thread per function of the topology, and one playing the schedules."""

    def __init__(self, settings: Settings, topo: Topology, retry_delay_s: int = 1) -> None:
        super().__init__()
        self.schedules = SchedulePlayer(settings, prefix=f"{stage_prefix(topo.stage)}-")
        sqs = aws_client("sqs", settings)
        # Functions called over HTTP (serve) are the local router's, not the runner's.
        self.pollers = [
            FunctionPoller(fn, topo, settings, sqs, self._load(fn), retry_delay_s)
            for fn in topo.functions
            if fn.trigger_queue is not None
        ]

    @staticmethod
    def _load(fn: Function) -> Handler:
        # A handler builds its clients as it is imported: they are that function's.
        with calls_of(fn.logical):
            return load_handler(fn.aws_handler)

    def polled(self) -> list[str]:
        return [p.fn.name for p in self.pollers]

    def start(self) -> None:
        for poller in self.pollers:
            t = threading.Thread(target=self._loop, args=(poller,), name=poller.fn.logical)
            t.daemon = True
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._play_schedules, name="schedules", daemon=True)
        t.start()
        self._threads.append(t)

    def _play_schedules(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.schedules.tick()
            except Exception:
                log.exception("playing the schedules failed; retrying in 1 s")

    def _loop(self, poller: FunctionPoller) -> None:
        while not self._stop.is_set():
            try:
                poller.poll_once()
            except Exception:
                log.exception("polling %s failed; retrying in 1 s", poller.fn.name)
                time.sleep(1)
