"""The local Azure runner retries and poisons as the Functions host does: after host.json's
one ``maxDequeueCount``, whatever the topology's per-queue SQS count says."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dhow_local.azure_runner import QueueTrigger

from shared.cloud_facts import value
from shared.topology import build_topology

HOST_JSON = Path(__file__).resolve().parents[2] / "functions" / "host.json"


class _Queue:
    def __init__(self, name: str) -> None:
        self.queue_name = name
        self.sent: list[Any] = []
        self.deleted: list[str] = []
        self.retried: list[str] = []

    def send_message(self, content: Any) -> None:
        self.sent.append(content)

    def delete_message(self, mid: str, receipt: str) -> None:
        self.deleted.append(mid)

    def update_message(self, mid: str, receipt: str, **kw: Any) -> None:
        self.retried.append(mid)


class _Clients:
    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}

    def queue(self, name: str) -> _Queue:
        return self.queues.setdefault(name, _Queue(name))


def _failing(message: Any) -> None:
    raise RuntimeError("the function failed")


def _message(count: int) -> Any:
    return SimpleNamespace(
        id=f"m{count}",
        content="{}",
        dequeue_count=count,
        expires_on=None,
        inserted_on=None,
        next_visible_on=None,
        pop_receipt="r",
    )


@pytest.mark.parametrize("function", ["deploy", "ingest"])
def test_a_failing_message_is_poisoned_after_host_jsons_count_on_every_queue(
    function: str,
) -> None:
    """Before, the runner used the topology's SQS counts (deploy 10, events 100): a
    rollout check failing three times went to -poison in the cloud and was retried
    locally, so a local run did not show what Azure does."""
    retry = value("azure.functions.queue_retry_schedule")
    assert "maxDequeueCount" in retry["host_json"]
    count = json.loads(HOST_JSON.read_text())["extensions"]["queues"]["maxDequeueCount"]
    topo = build_topology("test")
    fn = topo.function(function)
    assert fn.trigger_queue is not None
    queue_name = topo.queue(fn.trigger_queue).name
    clients = _Clients()
    trigger = QueueTrigger(fn, topo, clients, _failing)  # type: ignore[arg-type]
    for n in range(1, count):
        trigger._run(_message(n))
    assert clients.queue(f"{queue_name}-poison").sent == []
    trigger._run(_message(count))
    assert clients.queue(f"{queue_name}-poison").sent == ["{}"]
    assert clients.queue(queue_name).deleted == [f"m{count}"]
