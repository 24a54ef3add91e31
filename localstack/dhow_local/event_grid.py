"""Event Grid as the local platform plays it on Azurite, which has none: the local Azure
kit's bus, and where the local training job and the router deliver the system events
(an Azure ML run's end, a rollout's end) that Event Grid delivers in the cloud."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.adapters.azure import AzureClients, cloud_event
from shared.errors import DhowError
from shared.event_patterns import matches
from shared.events import PipelineEvent
from shared.ports import EventBus
from shared.reasons import Reason
from shared.topology import Topology


class LocalEventGrid:
    """Event Grid as the local platform plays it on Azurite, which has none.

    Pipeline events go, as the pipeline topic's subscriptions deliver them (CloudEvents,
    base64 JSON), to the queue of every rule of the topology whose pattern they match,
    the same patterns the Pulumi program turns into Event Grid filters. System events
    (a blob created, an Azure ML run's status) go to the queue their rule names, in the
    Event Grid schema, as the stack's system-topic subscriptions deliver them.
    """

    def __init__(self, clients: AzureClients, topology: Topology) -> None:
        self._clients = clients
        self._topo = topology
        self._queues: dict[str, QueueClient] = {}  # one client (and connection) per queue

    def _send(self, queue_logical: str, body: Mapping[str, Any]) -> None:
        queue = self._queues.get(queue_logical)
        if queue is None:
            queue = self._clients.queue(self._topo.queue(queue_logical).name)
            self._queues[queue_logical] = queue
        try:
            queue.send_message(json.dumps(body))
        except ResourceNotFoundError as exc:
            raise DhowError(
                f"queue {queue.queue_name!r} does not exist",
                hint="run `dhow local up --cloud azure` first",
                reason=Reason.EVENT_PUBLISH_FAILED,
            ) from exc

    def publish(self, event: PipelineEvent) -> list[str]:
        """Deliver one pipeline event; returns the queues it went to."""
        ce = cloud_event(event)
        envelope = {"source": ce["source"], "detail-type": ce["type"], "detail": ce["data"]}
        targets = sorted(
            {
                r.target_queue
                for r in self._topo.rules
                if r.bus == "pipeline" and matches(r.pattern, envelope)
            }
        )
        for queue in targets:
            self._send(queue, ce)
        return targets

    def deliver_system_event(self, rule_logical: str, event: Mapping[str, Any]) -> str:
        """Deliver a system event to the queue of the topology's rule ``rule_logical``."""
        queue = self._topo.rule(rule_logical).target_queue
        self._send(queue, event)
        return queue


class LocalEventGridBus(EventBus):
    """``EventBus`` of the local platform on Azure: ``LocalEventGrid`` routes each event."""

    def __init__(self, grid: LocalEventGrid) -> None:
        self._grid = grid

    def publish(self, event: PipelineEvent) -> None:
        self._grid.publish(event)
