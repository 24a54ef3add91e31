"""The local runner on Azure: plays the Functions host and Event Grid against Azurite.

- One thread per queue-triggered function of the topology does what the Functions
  host's queue trigger does: it receives a message, hands the function's Azure entry
  point a ``func.QueueMessage`` (decoded body, id, pop receipt, dequeue count), deletes
  the message when the function returns, and leaves it for another try when it raises.
  A message that has failed host.json's ``maxDequeueCount`` times is moved to
  ``<queue>-poison``, as the host does: one count for every queue of the app, not the
  topology's per-queue ``max_receive_count``, which is SQS's (AZURE_MAX_DEQUEUE_COUNT).
- A blob watcher plays the storage account's Event Grid system topic, which Azurite
  lacks: each new or rewritten blob under ``datasets/`` in the raw container becomes a
  ``Microsoft.Storage.BlobCreated`` event in the Event Grid schema on the ingest queue.
  What it has announced is kept in ``<local home>/blob-watcher.json``, so a restart
  announces only what is new.
- A timer thread plays the drift timer: each local minute it runs the timer's entry
  point, which sends the due checks to the drift queue.

One difference, for speed: the host leaves a failed message invisible for its
``visibilityTimeout``; the runner makes it visible again after ``retry_delay_s``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageMessage

from dhow_local.event_grid import LocalEventGrid
from dhow_local.runner import BackgroundThreads, load_handler
from shared.adapters.aws_calls import calls_of
from shared.adapters.azure import AzureClients, azure_clients
from shared.settings import Settings
from shared.topology import AZURE_MAX_DEQUEUE_COUNT, DATASETS_PREFIX, Function, Topology

log = logging.getLogger(__name__)

Entry = Callable[[func.QueueMessage], None]


def function_message(m: StorageMessage) -> QueueMessage:
    """The ``func.QueueMessage`` the Functions host builds from a Storage queue message."""
    return QueueMessage(  # type: ignore[no-untyped-call]
        id=m.id,
        body=m.content if isinstance(m.content, bytes) else str(m.content).encode(),
        dequeue_count=m.dequeue_count,
        expiration_time=m.expires_on,
        insertion_time=m.inserted_on,
        time_next_visible=m.next_visible_on,
        pop_receipt=m.pop_receipt,
    )


class QueueTrigger:
    """One function's queue trigger: receive, invoke, delete, retry or poison."""

    def __init__(
        self,
        fn: Function,
        topo: Topology,
        clients: AzureClients,
        entry: Entry,
        retry_delay_s: int = 1,
    ) -> None:
        assert fn.trigger_queue is not None, f"{fn.name} has no queue"
        self.fn = fn
        queue = topo.queue(fn.trigger_queue)
        # Functions has no per-queue count: host.json's extensions.queues.maxDequeueCount
        # holds for every queue trigger of the app (fact azure.functions.queue_retry_schedule).
        self.max_dequeue_count = AZURE_MAX_DEQUEUE_COUNT
        self._queue = clients.queue(queue.name)
        self._poison: QueueClient = clients.queue(f"{queue.name}-poison")
        self._entry = entry
        self._retry_delay = retry_delay_s
        self._visibility = min(queue.visibility_timeout_s, 600)
        self.invocations = 0
        self.failed = 0
        self.poisoned = 0

    def poll_once(self) -> int:
        """Receive up to a batch and run the function on each message; returns how many."""
        # The host receives, deletes and poisons with the app's identity: those calls are
        # the function's (azure_calls: the RBAC check of the integration tests).
        with calls_of(self.fn.logical):
            messages = list(
                self._queue.receive_messages(
                    messages_per_page=self.fn.batch_size,
                    max_messages=self.fn.batch_size,
                    visibility_timeout=self._visibility,
                )
            )
        for m in messages:
            self._run(m)
        return len(messages)

    def _run(self, m: StorageMessage) -> None:
        self.invocations += 1
        try:
            with calls_of(self.fn.logical):
                self._entry(function_message(m))
        except Exception:
            self.failed += 1
            if m.dequeue_count is not None and m.dequeue_count >= self.max_dequeue_count:
                # As the host does: the same content to the poison queue, then deleted here.
                with calls_of(self.fn.logical):
                    self._poison.send_message(m.content)
                    self._queue.delete_message(m.id, m.pop_receipt)
                self.poisoned += 1
                log.exception(
                    "%s failed message %s %d times; moved to %s",
                    self.fn.name,
                    m.id,
                    m.dequeue_count,
                    self._poison.queue_name,
                )
            else:
                log.exception("%s failed message %s; it will be retried", self.fn.name, m.id)
                # The runner's own shortcut (see the module docstring), not the host's:
                # left out of the function's recorded calls.
                self._queue.update_message(
                    m.id, m.pop_receipt, visibility_timeout=self._retry_delay
                )
            return
        with calls_of(self.fn.logical):
            self._queue.delete_message(m.id, m.pop_receipt)


def blob_created_event(
    account: str, container: str, name: str, props: Any, *, blob_url: str
) -> dict[str, Any]:
    """``Microsoft.Storage.BlobCreated`` in the Event Grid schema, as the storage account's
    system topic delivers it to a Storage queue."""
    when: datetime = props.last_modified or datetime.now(UTC)
    return {
        "topic": f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/"
        f"providers/Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": when.isoformat(),
        "id": str(uuid.uuid4()),
        "data": {
            "api": "PutBlob",
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "eTag": str(props.etag),
            "contentType": props.content_settings.content_type or "application/octet-stream",
            "contentLength": props.size,
            "blobType": "BlockBlob",
            "url": blob_url,
            "sequencer": f"{int(when.timestamp() * 1e6):032x}",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


class BlobWatcher:
    """Announces new blobs under ``datasets/`` in the raw container, once per (name, ETag)."""

    def __init__(
        self, clients: AzureClients, topo: Topology, grid: LocalEventGrid, state: Path
    ) -> None:
        self._container = clients.blobs.get_container_client(topo.bucket("raw").name)
        self._account = clients.blobs.account_name or "devstoreaccount1"
        self._grid = grid
        self._state = state
        self.seen: dict[str, str] = json.loads(state.read_text()) if state.exists() else {}
        self.announced = 0

    def poll_once(self) -> int:
        new = 0
        for props in self._container.list_blobs(name_starts_with=DATASETS_PREFIX):
            etag = str(props.etag)
            if self.seen.get(props.name) == etag:
                continue
            blob = self._container.get_blob_client(props.name)
            event = blob_created_event(
                self._account, self._container.container_name, props.name, props, blob_url=blob.url
            )
            self._grid.deliver_system_event("raw_object_created", event)
            self.seen[props.name] = etag
            new += 1
        if new:
            self.announced += new
            self._state.write_text(json.dumps(self.seen))
        return new


class AzureRunner(BackgroundThreads):
    """Queue triggers, the blob watcher and the drift timer, one thread each."""

    def __init__(
        self, settings: Settings, topo: Topology, home: Path, retry_delay_s: int = 1
    ) -> None:
        super().__init__()
        self._settings = settings
        clients = azure_clients(settings)
        self.grid = LocalEventGrid(clients, topo)
        self.watcher = BlobWatcher(clients, topo, self.grid, home / "blob-watcher.json")
        self.triggers = [
            QueueTrigger(fn, topo, clients, _load(fn), retry_delay_s)
            for fn in topo.functions
            if fn.trigger_queue is not None
        ]
        self._drift_queue = clients.queue(
            topo.queue(topo.schedule("drift_check").target_queue).name
        )
        with calls_of("drift_check"):
            self._timer = load_handler("functions.drift_check.azure_function.on_timer")
        self.timer_fired = 0

    def fire_timer(self) -> int:
        """Run the drift timer once, with its queue output bound; returns messages sent."""
        out = _Out()
        # The timer and its queue output binding run as the app's identity, for drift-check.
        with calls_of("drift_check"):
            self._timer(TimerRequest(past_due=False), out)
            sent = out.get()
            for body in sent:
                self._drift_queue.send_message(body)
        self.timer_fired += 1
        return len(sent)

    def polled(self) -> list[str]:
        return [t.fn.name for t in self.triggers]

    def start(self) -> None:
        loops: list[tuple[str, Callable[[], object], float]] = [
            (t.fn.logical, t.poll_once, 0.5) for t in self.triggers
        ]
        loops.append(("blob-watcher", self.watcher.poll_once, 0.5))
        # The timer waits its minute whatever it sent.
        loops.append(
            ("drift-timer", lambda: self.fire_timer() and 0, self._settings.local_minute_seconds)
        )
        for name, step, every in loops:
            t = threading.Thread(
                target=self._loop, args=(name, step, every), name=name, daemon=True
            )
            t.start()
            self._threads.append(t)

    def _loop(self, name: str, step: Callable[[], object], every: float) -> None:
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception:
                log.exception("%s failed; retrying in 1 s", name)
                busy = 0
            if not busy:
                self._stop.wait(every)


def _load(fn: Function) -> Entry:
    # An entry point builds its clients as it is imported: they are that function's.
    with calls_of(fn.logical):
        entry: Entry = load_handler(fn.azure_handler)
    return entry


class _Out(func.Out[list[str]]):
    """The queue output binding's value holder, as the host passes it to the function."""

    def __init__(self) -> None:
        self._value: list[str] = []

    def set(self, val: list[str]) -> None:
        self._value = val

    def get(self) -> list[str]:
        return self._value
