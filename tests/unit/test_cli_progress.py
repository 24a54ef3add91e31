"""Progress on long work (issue 20, part 4): what a person at a terminal sees on stderr
while `dhow dataset validate`, `dhow upload` and `dhow upload --wait` run, and that
--json's stdout stays one parseable document.

stderr is a real pseudo-terminal here (pty), as a person's shell gives it: click draws its
bar only on a terminal, so a StringIO would show nothing of what matters.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pty
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from azure.core.pipeline.transport import HttpResponse, HttpTransport
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueMessage
from dhow_cli import app, main
from dhow_local.event_grid import LocalEventGrid
from moto import mock_aws

from shared.adapters.aws import S3ObjectStore
from shared.adapters.azure import BlobObjectStore
from shared.cloud_facts import value
from shared.events import (
    DatasetIngested,
    DatasetValidated,
    ModelApproved,
    ObjectRef,
    PipelineEvent,
    TrainingCompleted,
    TrainingLaunched,
)
from shared.ports import ObjectStore
from shared.services.ingest import UPLOAD_ID_META
from shared.settings import Settings
from shared.topology import build_topology
from shared.wiring import Ports
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "localstack" / "samples" / "customers.csv"
ETA = re.compile(r"\d\d:\d\d:\d\d")  # click's bar writes the time left as HH:MM:SS


class Terminal:
    """A pty whose slave end is sys.stderr; everything written to it is kept."""

    def __init__(self) -> None:
        self._master, slave = pty.openpty()
        self.stream = open(slave, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._seen: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO once the slave end is closed
                return
            if not data:
                return
            self._seen.append(data)

    def text(self) -> str:
        """What was written, once the command is done (closes the terminal)."""
        if not self.stream.closed:
            self.stream.close()
            self._reader.join(timeout=5)
            os.close(self._master)
        return b"".join(self._seen).decode("utf-8", "replace")


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    tty = Terminal()
    yield tty
    tty.text()


def run(
    capsys: pytest.CaptureFixture[str], *args: str, stderr: Terminal | None = None
) -> tuple[int, str]:
    """Run `dhow ARGS` in this process, stdout captured, stderr the terminal if given
    (set here: pytest puts its own capture back in place when the test starts)."""
    code = 0
    saved = sys.stderr
    if stderr is not None:
        sys.stderr = stderr.stream
    try:
        main.main(args=list(args), prog_name="dhow", standalone_mode=False)
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.stderr = saved
    return code, capsys.readouterr().out


def big_csv(tmp_path: Path, copies: int) -> Path:
    """The customers sample repeated, with unique ids, as a large upload would be."""
    header, *rows = SAMPLE.read_text().splitlines()
    out = tmp_path / "customers.csv"
    with out.open("w") as f:
        f.write(header + "\n")
        for n in range(copies):
            for row in rows:
                f.write(f"C{n:04d}{row[1:]}\n")
    return out


def test_dataset_validate_shows_rows_per_second_and_the_time_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], terminal: Terminal
) -> None:
    file = big_csv(tmp_path, 100)  # 40,000 rows, in chunks of 1,000: seconds of work
    code, out = run(
        capsys,
        "dataset",
        "validate",
        "customers",
        str(file),
        "--chunk-rows",
        "1000",
        stderr=terminal,
    )
    shown = terminal.text()
    assert code == 0, out
    assert out.startswith("PASS")
    assert "validating customers.csv" in shown
    assert re.search(r"[\d,]+ rows, [\d,]+ rows/s, 0 failures", shown), shown[-500:]
    assert ETA.search(shown), shown[-500:]
    assert "40,000 rows" in shown  # the last chunk's count: the bar ends at the file's end
    assert "PASS" not in shown  # the answer is stdout's, not the terminal's progress


def test_dataset_validate_json_keeps_stdout_parseable_and_shows_no_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], terminal: Terminal
) -> None:
    file = big_csv(tmp_path, 25)
    code, out = run(
        capsys, "dataset", "validate", "customers", str(file), "--json", stderr=terminal
    )
    assert code == 0
    assert json.loads(out)["ok"] is True
    assert terminal.text() == ""


def test_dataset_validate_shows_nothing_where_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "dataset", "validate", "customers", str(SAMPLE))
    assert code == 0
    assert out.startswith("PASS")
    assert capsys.readouterr().err == ""


def _memory_ports(store: ObjectStore) -> Ports:
    return Ports(store=store, bus=MemoryBus(), lineage=MemoryLineage())


def test_upload_of_a_large_file_shows_the_bytes_sent_as_s3_reports_them(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    terminal: Terminal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the real S3 adapter (boto3's managed transfer, multipart over 8 MiB, on
    moto): the bar counts what boto3's Callback says was sent, up to the file's size."""
    file = tmp_path / "big.csv"
    file.write_bytes(SAMPLE.read_bytes() * 700)  # ~19 MiB: three parts
    size = file.stat().st_size
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings = Settings()
    with mock_aws():
        s3 = boto3.client("s3", region_name="me-central-1")
        raw = build_topology(settings.stage).bucket("raw").name
        s3.create_bucket(
            Bucket=raw, CreateBucketConfiguration={"LocationConstraint": "me-central-1"}
        )
        monkeypatch.setattr(app, "resolve_settings", lambda: settings)
        monkeypatch.setattr(
            "shared.wiring.build_ports", lambda s, t=None: _memory_ports(S3ObjectStore(s3))
        )
        code, out = run(capsys, "upload", str(file), "--dataset", "customers", stderr=terminal)
        stored = s3.head_object(Bucket=raw, Key="datasets/customers/big.csv")["ContentLength"]
    shown = terminal.text()
    assert code == 0, out
    assert stored == size
    assert "uploading big.csv" in shown
    assert f"{size:,}/{size:,} bytes" in shown
    assert "100%" in shown
    # Parts were counted as they went, not only at the end.
    sent = [int(n.replace(",", "")) for n in re.findall(rf"([\d,]+)/{size:,} bytes", shown)]
    assert len(set(sent)) >= 2, sent


def test_upload_of_a_small_file_draws_no_bar(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    terminal: Terminal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "resolve_settings", lambda: Settings())
    monkeypatch.setattr("shared.wiring.build_ports", lambda s, t=None: _memory_ports(MemoryStore()))
    code, out = run(capsys, "upload", str(SAMPLE), "--dataset", "customers", stderr=terminal)
    assert code == 0
    assert "uploaded" in out
    assert "uploading" not in terminal.text()


class FakeStorageQueue:
    """The QueueClient calls the Azure tap and LocalEventGrid make, with a queue's
    visibility rule: a received message is hidden until deleted or updated to 0 s.
    ``pipeline`` plays the platform: each receive first delivers its next step."""

    def __init__(self) -> None:
        self.messages: dict[str, tuple[str, bool]] = {}  # id -> (content, visible)
        self.pipeline: list[PipelineEvent] = []
        self.grid: LocalEventGrid | None = None
        self.deleted: list[str] = []
        self.calls: list[str] = []  # the SDK methods called, in order

    def send_message(self, content: str) -> QueueMessage:
        msg_id = uuid.uuid4().hex
        self.messages[msg_id] = (content, True)
        return QueueMessage(content, id=msg_id)

    def receive_messages(self, **kwargs: Any) -> list[QueueMessage]:
        assert kwargs["max_messages"] <= 32  # Get Messages' numofmessages
        self.calls.append("receive_messages")
        if self.pipeline and self.grid is not None:
            self.grid.publish(self.pipeline.pop(0))
        out = []
        for msg_id, (content, visible) in list(self.messages.items()):
            if visible:
                self.messages[msg_id] = (content, False)
                out.append(QueueMessage(content, id=msg_id, pop_receipt=f"r-{msg_id}"))
        return out

    def delete_message(self, message_id: str, receipt: str) -> None:
        assert receipt == f"r-{message_id}"
        self.calls.append("delete_message")
        self.deleted.append(json.loads(self.messages.pop(message_id)[0])["type"])

    def update_message(self, message_id: str, receipt: str, visibility_timeout: int) -> None:
        assert receipt == f"r-{message_id}"
        assert visibility_timeout == 0
        self.calls.append("update_message")
        self.messages[message_id] = (self.messages[message_id][0], True)


class FakeAzureClients:
    """What build_event_tap and LocalEventGrid take from AzureClients: queues by name."""

    def __init__(self, events_queue: str) -> None:
        self.events_queue = events_queue
        self.queues: dict[str, FakeStorageQueue] = {}

    def queue(self, name: str) -> FakeStorageQueue:
        return self.queues.setdefault(name, FakeStorageQueue())


def _story(upload_id: str) -> list[PipelineEvent]:
    ref = ObjectRef(container="c", key="datasets/customers/customers.csv")
    common: dict[str, Any] = {"dataset": "customers", "correlation_id": upload_id}
    return [
        DatasetIngested(
            **common, sha256="a" * 64, size_bytes=10, format="csv", source=ref, staged=ref
        ),
        # Someone else's upload, on the same queue: handed back, never shown.
        DatasetIngested(
            dataset="other",
            correlation_id="someone-else",
            sha256="b" * 64,
            size_bytes=10,
            format="csv",
            source=ref,
            staged=ref,
        ),
        DatasetValidated(**common, sha256="a" * 64, rows=400, spec_version="1", curated=ref),
        TrainingLaunched(
            **common,
            sha256="a" * 64,
            spec_version="1",
            job_name="j1",
            instance_type="Standard_NC4as_T4_v3",
            backend="azureml",
        ),
        TrainingCompleted(**common, job_name="j1", status="Completed"),
        ModelApproved(**common, model_version="1", job_name="j1", metrics={"auc": 0.9}),
    ]


@pytest.fixture
def azure_stack(monkeypatch: pytest.MonkeyPatch) -> FakeAzureClients:
    """An Azure stack as the CLI sees it: the real build_event_tap picks the Storage queue
    tap for cloud=azure; its queue is played by the fake, fed by LocalEventGrid (the
    topology's rules: every pipeline event also goes to the events queue)."""
    settings = Settings(cloud="azure")
    topo = build_topology(settings.stage)
    clients = FakeAzureClients(topo.queue("events").name)
    grid = LocalEventGrid(clients, topo)  # type: ignore[arg-type]
    clients.queue(clients.events_queue).grid = grid
    monkeypatch.setattr(app, "resolve_settings", lambda: settings)
    monkeypatch.setattr("shared.adapters.azure.azure_clients", lambda s: clients)

    class UploadStartsTheStory(MemoryStore):
        def upload_file(self, ref: ObjectRef, path: Path, metadata: Any = None, **kw: Any) -> None:
            super().upload_file(ref, path, metadata)
            upload_id = dict(metadata or {})[UPLOAD_ID_META]
            clients.queue(clients.events_queue).pipeline = _story(upload_id)

    monkeypatch.setattr(
        "shared.wiring.build_ports", lambda s, t=None: _memory_ports(UploadStartsTheStory())
    )
    return clients


def test_upload_wait_follows_an_azure_stack_and_shows_each_running_stage(
    azure_stack: FakeAzureClients, capsys: pytest.CaptureFixture[str], terminal: Terminal
) -> None:
    code, out = run(
        capsys, "upload", str(SAMPLE), "--dataset", "customers", "--wait", stderr=terminal
    )
    shown = terminal.text()
    assert code == 0, out
    types = [
        line.split()[1] for line in out.splitlines() if line.startswith("  ") and "s  " in line
    ]
    assert types == [
        "DatasetIngested",
        "DatasetValidated",
        "TrainingLaunched",
        "TrainingCompleted",
        "ModelApproved",
    ]
    # Each stage as it ran, with the seconds since the upload.
    for stage in ("ingest", "validate", "train-launch", "training", "register"):
        assert re.search(rf"running {stage}, \d+\.\ds", shown), (stage, shown)
    queue = azure_stack.queue(azure_stack.events_queue)
    assert "ModelApproved" in queue.deleted
    # The other upload's event is still on the queue, visible to its own watcher.
    left = [json.loads(c)["subject"] for c, visible in queue.messages.values() if visible]
    assert left == ["other"]


def test_upload_wait_json_on_azure_is_one_parseable_document(
    azure_stack: FakeAzureClients, capsys: pytest.CaptureFixture[str], terminal: Terminal
) -> None:
    code, out = run(
        capsys, "upload", str(SAMPLE), "--dataset", "customers", "--wait", "--json", stderr=terminal
    )
    assert code == 0
    payload = json.loads(out)
    assert payload["ok"] is True
    assert [e["type"] for e in payload["events"]][-1] == "ModelApproved"
    assert terminal.text() == ""


# The Storage REST operation behind each QueueClient method the tap calls.
_REST_OPERATION = {
    "receive_messages": "Get Messages",
    "delete_message": "Delete Message",
    "update_message": "Update Message",
}


def _role_allows(role_id: str, operation: str) -> bool:
    role = value("azure.rbac.builtin_role_data_actions")[role_id]
    held = [a for a in role["dataActions"] if a not in role["notDataActions"]]
    alternatives = value("azure.rbac.storage_operation_actions")["operations"][operation]
    return any(
        all(any(fnmatch.fnmatchcase(need, a) for a in held) for need in alt) for alt in alternatives
    )


def test_who_runs_upload_wait_on_azure_needs_queue_data_contributor_on_the_events_queue(
    azure_stack: FakeAzureClients, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the README tells an Azure user to hold, from the calls the follower made and
    the documented data actions: handing another upload's event back is Update Message
    (messages/write), which Storage Queue Data Message Processor does not carry."""
    code, _ = run(capsys, "upload", str(SAMPLE), "--dataset", "customers", "--wait")
    assert code == 0
    queue = azure_stack.queue(azure_stack.events_queue)
    operations = {_REST_OPERATION[c] for c in queue.calls}
    assert operations == {"Get Messages", "Delete Message", "Update Message"}
    contributor, processor = (
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "8a0f0c08-91a1-4084-bc3d-661d67233fed",
    )
    assert all(_role_allows(contributor, op) for op in operations)
    assert not _role_allows(processor, "Update Message")


class _Created(HttpResponse):
    """201 Created, with the headers Blob storage answers Put Block (List) with."""

    def __init__(self, request: Any) -> None:
        super().__init__(request, None)
        self.status_code, self.reason, self.content_type = 201, "Created", None
        self.headers = {
            "ETag": '"0x8DD"',
            "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT",
            "Date": "Tue, 01 Dec 2026 10:00:00 GMT",
            "x-ms-request-server-encrypted": "true",
            "Content-Length": "0",
        }

    def body(self) -> bytes:
        return b""

    def text(self, encoding: str | None = None) -> str:
        return ""


class RecordingTransport(HttpTransport):
    """azure-core's transport seat: every request the SDK would send, answered 201."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    def __enter__(self) -> RecordingTransport:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def send(self, request: Any, **kwargs: Any) -> HttpResponse:
        self.sent.append((request.method, request.url, dict(request.headers)))
        return _Created(request)


def test_the_blob_adapter_reports_the_bytes_of_each_block_as_the_sdk_sends_it(
    tmp_path: Path,
) -> None:
    """azure-storage-blob's own upload (its progress_hook, its blocks) with the network
    cut at azure-core's transport: on_sent grows block by block to the file's size."""
    transport = RecordingTransport()
    blobs = BlobServiceClient(
        "https://dhowlocaldata.blob.core.windows.net",
        transport=transport,
        max_single_put_size=4 * 1024**2,
        max_block_size=4 * 1024**2,
    )
    file = tmp_path / "big.csv"
    file.write_bytes(b"x" * (10 * 1024**2 + 5))
    sent: list[int] = []
    ref = ObjectRef(container="raw", key="datasets/customers/big.csv")
    BlobObjectStore(blobs).upload_file(ref, file, {"dhow_upload_id": "u1"}, on_sent=sent.append)
    assert sent == [4 * 1024**2, 8 * 1024**2, 10 * 1024**2 + 5]
    ops = [url.split("comp=")[1].split("&")[0] for _, url, _ in transport.sent]
    assert ops == ["block", "block", "block", "blocklist"]
    assert transport.sent[-1][2]["x-ms-meta-dhow_upload_id"] == "u1"
