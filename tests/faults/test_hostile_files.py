"""Hostile dataset files: each gets a reason code, in bounded time and memory, and no
crash. Those that could kill the interpreter (deep JSON, decoding bombs) run in a
subprocess, whose exit code and peak memory are the outcome."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.adapters.aws import EventBridgeBus
from shared.adapters.azure import cloud_event
from shared.artifacts import ArtifactUnsafe, fetch_model
from shared.cloud_facts import value
from shared.events import DatasetRejected, ObjectRef
from shared.services.validate import MAX_EVENT_MESSAGE_CHARS, event_message
from shared.specs import load_spec
from shared.validation import MAX_LISTED_COLUMNS, FileFormat, validate_file
from tests.faults.ledger import Ledger
from tests.helpers import MemoryStore
from tests.unit.test_validate_service import setup

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "localstack/samples/customers.csv"
HEADER = SAMPLE.read_text().splitlines()[0]
ROW = SAMPLE.read_text().splitlines()[1]
SPEC = load_spec("customers")
# Generous for a loaded 2-core machine; the quadratic header check took minutes here.
BOUND_S = 10.0


def timed(path: Path, fmt: FileFormat) -> tuple[str | None, float, int]:
    start = time.perf_counter()
    run = validate_file(path, fmt, SPEC)
    elapsed = time.perf_counter() - start
    return run.report.reason, elapsed, len(run.report.model_dump_json())


def in_subprocess(code: str) -> tuple[int, dict[str, Any]]:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    return proc.returncode, json.loads(last)


VALIDATE_IN_CHILD = """
import json, sys
from pathlib import Path
from shared.specs import load_spec
from shared.validation import validate_file
run = validate_file(Path(sys.argv[1] if len(sys.argv) > 1 else {path!r}), {fmt!r},
                    load_spec("customers"))
# The child's own peak (VmHWM): ru_maxrss on Linux keeps the forked parent's peak from
# before exec, which inside the full pytest session is the session's, not the child's.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
print(json.dumps({{"reason": run.report.reason, "message": run.report.message,
    "maxrss_mb": hwm // 1024}}))
"""


def test_a_header_of_500000_columns_is_refused_at_once(tmp_path: Path, ledger: Ledger) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(HEADER + "," + ",".join(f"x{i}" for i in range(500_000)) + "\n" + ROW)
    reason, elapsed, report_bytes = timed(path, "csv")
    ledger.answer("csv header of 500,000 columns", str(reason))
    assert reason == "too_many_columns"
    assert elapsed < BOUND_S
    assert report_bytes < 10_000


def test_one_name_200000_times_is_refused_in_linear_time(tmp_path: Path, ledger: Ledger) -> None:
    path = tmp_path / "same.csv"
    path.write_text(",".join(["a"] * 200_000) + "\n1\n")
    reason, elapsed, _ = timed(path, "csv")
    ledger.answer("csv header of one name 200,000 times", str(reason))
    assert reason == "too_many_columns"
    assert elapsed < BOUND_S


def test_duplicates_and_unexpected_columns_are_counted_but_listed_bounded(
    tmp_path: Path, ledger: Ledger
) -> None:
    dupes = tmp_path / "dupes.csv"
    dupes.write_text(",".join(f"d{i % 4000}" for i in range(8000)) + "\n1\n")
    start = time.perf_counter()
    run = validate_file(dupes, "csv", SPEC)
    assert time.perf_counter() - start < BOUND_S
    ledger.answer("csv header of 4,000 names each twice", str(run.report.reason))
    assert run.report.reason == "duplicate_columns"
    assert run.report.duplicate_column_count == 4000
    assert "and 3,900 more" in run.report.message

    extra = tmp_path / "extra.csv"
    extra.write_text(HEADER + "," + ",".join(f"x{i}" for i in range(9000)) + "\n" + ROW)
    run = validate_file(extra, "csv", SPEC)
    ledger.answer("csv with 9,000 unexpected columns", str(run.report.reason))
    assert run.report.reason == "unexpected_columns"
    assert run.report.unexpected_column_count == 9000
    assert len(run.report.unexpected_columns) == MAX_LISTED_COLUMNS
    assert len(run.report.message) < 20_000


class CapturingEvents:
    """Stands in for boto3's EventBridge client: keeps the PutEvents request."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.entries.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}


def eventbridge_entry_bytes(entry: dict[str, Any]) -> int:
    # The entry size as EventBridge counts it (eb-putevent-size): the UTF-8 bytes of
    # Source, DetailType, Detail and each Resources item (Time would add 14; we send none).
    fields = [entry["Source"], entry["DetailType"], entry["Detail"], *entry["Resources"]]
    return sum(len(f.encode("utf-8")) for f in fields) + (14 if "Time" in entry else 0)


def queue_message_bytes(event: DatasetRejected) -> int:
    # Event Grid writes each CloudEvent to a Storage queue as base64 of its JSON.
    return len(base64.b64encode(json.dumps(cloud_event(event)).encode("utf-8")))


def sizes(event: DatasetRejected) -> tuple[int, int]:
    client = CapturingEvents()
    EventBridgeBus(client, "dhow-bus").publish(event)  # type: ignore[arg-type]
    [entry] = client.entries
    return eventbridge_entry_bytes(entry), queue_message_bytes(event)


def test_the_largest_rejection_validate_emits_fits_both_buses(
    tmp_path: Path, ledger: Ledger
) -> None:
    eb_limit = value("aws.eventbridge.max_entry_bytes")
    queue_limit = value("azure.storage.queue_message_max_bytes")
    # Hostile headers through the service: many names, long names, names whose every
    # character JSON escapes as a surrogate pair (12 bytes).
    emoji = "\U0001f600"
    headers = [
        HEADER + "," + ",".join(f"x{i}" for i in range(9000)),
        HEADER + "," + ",".join(emoji * 2500 + str(i) for i in range(100)),
        ",".join(emoji * 90 + str(i % 500) for i in range(1000)),
    ]
    for header in headers:
        svc, _store, bus, _lineage, event = setup((header + "\n" + ROW + "\n").encode())
        outcome = svc.handle(event)
        ledger.answer(f"csv header of {len(header):,} characters through validate", outcome.status)
        assert outcome.status == "rejected"
        [rejected] = bus.events
        assert isinstance(rejected, DatasetRejected)
        eb, queue = sizes(rejected)
        assert eb < eb_limit, (rejected.reason, eb)
        assert queue < queue_limit, (rejected.reason, queue)

    # And the bound itself, at its worst: the longest message, the longest names.
    key = "datasets/" + "k" * 1000
    worst = DatasetRejected(
        event_id="rejected-" + "f" * 32,
        dataset="d" * 63,
        correlation_id="c" * 128,
        stage="validate",
        reason="unexpected_columns",
        message=event_message(emoji * 1_000_000),
        source=ObjectRef(container="b" * 63, key=key),
        sha256="f" * 64,
        quarantined=ObjectRef(container="q" * 63, key=key),
        report=ObjectRef(container="q" * 63, key=key + ".report.json"),
    )
    assert len(worst.message) <= MAX_EVENT_MESSAGE_CHARS
    eb, queue = sizes(worst)
    assert eb < eb_limit
    assert queue < queue_limit


def dictionary_bomb(path: Path, rows: int = 100_000, width: int = 10_000) -> None:
    """One 10 KB value repeated over 100,000 rows, kept dictionary-encoded: a file of a
    few KiB that decodes to a GB per batch."""
    frame = pd.read_csv(SAMPLE, dtype=str).head(1)
    arrays = {
        name: pa.DictionaryArray.from_arrays(
            pa.array([0] * rows, type=pa.int32()),
            pa.array(["x" * width if name == "customer_id" else str(frame[name].iloc[0])]),
        )
        for name in frame.columns
    }
    pq.write_table(pa.table(arrays), path, row_group_size=rows)


def test_a_dictionary_bomb_is_refused_before_it_is_decoded(tmp_path: Path, ledger: Ledger) -> None:
    path = tmp_path / "bomb.parquet"
    dictionary_bomb(path)
    assert path.stat().st_size < 100_000
    code, out = in_subprocess(VALIDATE_IN_CHILD.format(path=str(path), fmt="parquet"))
    ledger.answer("parquet dictionary bomb", str(out.get("reason", f"exit {code}")))
    assert code == 0
    assert out["reason"] == "expansion_too_large"
    # Decoding the batch alone would take over 1,000 MB.
    assert out["maxrss_mb"] < 700, out


def test_a_row_group_over_the_decoded_limit_is_refused_from_the_footer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    import shared.validation as validation

    monkeypatch.setattr(validation, "MAX_DECODED_BATCH_BYTES", 64 * 1024)
    frame = pd.concat([pd.read_csv(SAMPLE)] * 50, ignore_index=True)
    frame["customer_id"] = [f"C{i:07d}" for i in range(len(frame))]
    path = tmp_path / "big.parquet"
    frame.to_parquet(path, index=False, row_group_size=len(frame))
    run = validate_file(path, "parquet", SPEC)
    ledger.answer("parquet row group over the decoded limit", str(run.report.reason))
    assert run.report.reason == "expansion_too_large"
    assert "row group 0" in run.report.message


@pytest.mark.parametrize(
    "metadata",
    [
        b"{not json",
        json.dumps({"columns": 5, "index_columns": "x"}).encode(),
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=["not-json", "wrong-shape", "nested-100000"],
)
def test_parquet_with_broken_pandas_metadata_is_unreadable(
    tmp_path: Path, metadata: bytes, ledger: Ledger
) -> None:
    table = pa.Table.from_pandas(pd.read_csv(SAMPLE), preserve_index=False)
    path = tmp_path / "meta.parquet"
    pq.write_table(table.replace_schema_metadata({b"pandas": metadata}), path)
    run = validate_file(path, "parquet", SPEC)
    ledger.answer(
        f"parquet with broken pandas metadata ({metadata[:12]!r})", str(run.report.reason)
    )
    assert run.report.reason == "unreadable_file"
    assert run.report.hint


def test_json_lines_nested_200000_deep_is_unreadable_not_a_crash(
    tmp_path: Path, ledger: Ledger
) -> None:
    good = pd.read_csv(SAMPLE).to_json(orient="records", lines=True)
    path = tmp_path / "deep.jsonl"
    deep = '{"a":' * 200_000 + "1" + "}" * 200_000
    path.write_text(good + deep + "\n")
    start = time.perf_counter()
    code, out = in_subprocess(VALIDATE_IN_CHILD.format(path=str(path), fmt="jsonl"))
    ledger.answer("json lines nested 200,000 deep", str(out.get("reason", f"exit {code}")))
    assert code == 0, f"the validator died with exit code {code}"
    assert out["reason"] == "unreadable_file"
    assert "nested" in out["message"]
    assert time.perf_counter() - start < 60


def test_brackets_and_escaped_quotes_inside_strings_are_not_nesting(
    tmp_path: Path, ledger: Ledger
) -> None:
    frame = pd.read_csv(SAMPLE)
    frame["customer_id"] = [f'C{i}\\"' + "{[" * 100 for i in range(len(frame))]
    path = tmp_path / "strings.jsonl"
    frame.to_json(path, orient="records", lines=True)
    run = validate_file(path, "jsonl", SPEC)
    ledger.answer(
        "json lines with brackets inside strings",
        "accepted" if run.report.ok else str(run.report.reason),
    )
    assert run.report.ok, run.report.message


def model_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    with tarfile.open(path, mode="w:gz") as tar:
        for info, body in members:
            tar.addfile(info, io.BytesIO(body) if info.isfile() else None)
    return path.read_bytes()


def regular(name: str, body: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(body)
    return info, body


def zeros_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def fetch_from(tmp: Path, archive: bytes) -> Path:
    store = MemoryStore()
    ref = ObjectRef(container="models", key="customers/v1/model.tar.gz")
    store.put_bytes(ref, archive)
    return fetch_model(store, ref, tmp / "out")[0]


def test_a_model_archive_that_is_a_bomb_is_refused_at_the_crossing_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    import shared.artifacts as artifacts

    # 64 MiB of zeros compress to ~64 KiB; with the cap at 16 MiB the second member stops it.
    monkeypatch.setattr(artifacts, "MAX_UNPACKED_BYTES", 16 * 1024**2)
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, mode="w:gz") as tar:
        for i in range(4):
            tar.addfile(zeros_member(f"w{i}.bin", 16 * 1024**2), io.BytesIO(bytes(16 * 1024**2)))
    with pytest.raises(ArtifactUnsafe) as err:
        fetch_from(tmp_path, path.read_bytes())
    ledger.answer("model archive that is a decompression bomb", err.value.reason)
    assert err.value.reason == "artifact_unsafe"
    written = sum(f.stat().st_size for f in (tmp_path / "out").glob("w*.bin"))
    assert written <= 16 * 1024**2


def test_a_model_archive_with_too_many_members_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    import shared.artifacts as artifacts

    monkeypatch.setattr(artifacts, "MAX_MEMBERS", 50)
    archive = model_archive(tmp_path / "many.tar.gz", [regular(f"f{i}") for i in range(51)])
    with pytest.raises(ArtifactUnsafe, match="over 50 members") as err:
        fetch_from(tmp_path, archive)
    ledger.answer("model archive of 51 members over a cap of 50", err.value.reason)


@pytest.mark.parametrize("name", ["model.tar.gz", "./model.tar.gz"])
def test_a_member_named_like_the_archive_is_refused(
    tmp_path: Path, name: str, ledger: Ledger
) -> None:
    archive = model_archive(tmp_path / "a.tar.gz", [regular("model.json"), regular(name)])
    with pytest.raises(ArtifactUnsafe, match=r"model\.tar\.gz") as err:
        fetch_from(tmp_path, archive)
    ledger.answer(f"model archive with a member named {name}", err.value.reason)


def test_links_and_escaping_paths_are_refused(tmp_path: Path, ledger: Ledger) -> None:
    link = tarfile.TarInfo("model.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(ArtifactUnsafe, match="link") as err:
        fetch_from(tmp_path, model_archive(tmp_path / "l.tar.gz", [(link, b"")]))
    ledger.answer("model archive with a symlink to /etc/passwd", err.value.reason)
    escape = model_archive(tmp_path / "e.tar.gz", [regular("../../escaped.json")])
    with pytest.raises(ArtifactUnsafe) as err:
        fetch_from(tmp_path, escape)
    ledger.answer("model archive with a ../../ path", err.value.reason)
    assert not (tmp_path.parent / "escaped.json").exists()
