"""Reading captures in the two layouts the drift check sees: the serve function's own
rows, and a SageMaker endpoint's data capture (facts aws.sagemaker.capture_layout and
aws.sagemaker.capture_record), with what cannot be read counted, never a crash."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.capture import (
    InferenceCapture,
    endpoint_capture_prefix,
    endpoint_capture_uri,
    read_captures,
    read_window,
)
from shared.cloud_facts import value
from shared.events import ObjectRef
from tests.helpers import MemoryStore

CAPTURE = "dhow-t-capture"
AT = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
COLUMNS = ["age", "segment", "has_mobile_app"]


def record(part: dict[str, Any], output: str = "1") -> dict[str, Any]:
    """One line of SageMaker's capture format around the request side ``part``."""
    return {
        "captureData": {
            "endpointInput": {"mode": "INPUT", **part},
            "endpointOutput": {
                "observedContentType": "text/csv; charset=utf-8",
                "mode": "OUTPUT",
                "data": output,
                "encoding": "CSV",
            },
        },
        "eventMetadata": {"eventId": "e-1", "inferenceTime": f"{AT:%Y-%m-%dT%H:%M:%S}Z"},
        "eventVersion": "0",
    }


def put_endpoint_file(store: MemoryStore, lines: list[dict[str, Any]], at: datetime) -> str:
    layout = value("aws.sagemaker.capture_layout")
    below = at.strftime(layout["below_destination"].format(endpoint="ep", variant="AllTraffic"))
    key = f"{endpoint_capture_prefix('customers')}/{below}f{layout['suffix']}"
    body = "\n".join(json.dumps(line) for line in lines) + "\n"
    store.put_bytes(ObjectRef(container=CAPTURE, key=key), body.encode())
    return key


def test_the_endpoint_destination_is_under_the_dataset_s_capture_prefix() -> None:
    uri = endpoint_capture_uri(CAPTURE, "customers")
    assert uri == f"s3://{CAPTURE}/datasets/customers/endpoint"
    assert ObjectRef.from_uri(uri.removeprefix("s3://")).key.startswith("datasets/customers/")


def test_each_encoding_of_a_sagemaker_record_reads_as_the_same_row() -> None:
    assert value("aws.sagemaker.capture_record")["encodings"] == ["CSV", "JSON", "BASE64"]
    row = {"age": 41, "segment": "gold", "has_mobile_app": False}
    as_json = json.dumps(row)
    store = MemoryStore()
    put_endpoint_file(
        store,
        [
            record(
                {"observedContentType": "application/json", "data": as_json, "encoding": "JSON"}
            ),
            record(
                {"observedContentType": "text/csv", "data": "41,gold,False\n", "encoding": "CSV"}
            ),
            record(
                {
                    "observedContentType": "application/json",
                    "data": base64.b64encode(json.dumps({"instances": [row]}).encode()).decode(),
                    "encoding": "BASE64",
                }
            ),
        ],
        AT,
    )
    rows = read_window(
        store, CAPTURE, "customers", AT - timedelta(hours=1), AT + timedelta(hours=1), COLUMNS
    )
    assert [r["inputs"] for r in rows] == [row, row, row]
    assert {r["prediction"] for r in rows} == {1}
    assert {datetime.fromisoformat(r["captured_at"]) for r in rows} == {AT}


def test_a_window_reads_both_layouts_and_only_its_own_hours() -> None:
    store = MemoryStore()
    lam = InferenceCapture(store, CAPTURE, "customers", now=lambda: AT)
    lam.record([{"age": 30, "segment": "gold", "has_mobile_app": True}], ["0"], "3", "r")
    assert lam.flush() == 1
    data = json.dumps({"age": 50, "segment": "bronze", "has_mobile_app": True})
    put_endpoint_file(
        store,
        [record({"observedContentType": "application/json", "data": data, "encoding": "JSON"})],
        AT,
    )
    rows = read_window(
        store, CAPTURE, "customers", AT - timedelta(minutes=5), AT + timedelta(minutes=5)
    )
    assert sorted(r["inputs"]["age"] for r in rows) == [30, 50]
    later = read_window(
        store, CAPTURE, "customers", AT + timedelta(hours=3), AT + timedelta(hours=4)
    )
    assert later == []
    assert len(read_captures(store, CAPTURE, "customers")) == 2


def test_a_record_that_cannot_be_read_is_counted_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    put_endpoint_file(
        store,
        [
            # A content type no header lists and that is neither JSON nor CSV.
            record(
                {"observedContentType": "application/x-npy", "data": "AAAA", "encoding": "BASE64"}
            ),
            # Positional fields with no column names to give them.
            record({"observedContentType": "text/csv", "data": "41,gold\n", "encoding": "CSV"}),
        ],
        AT,
    )
    with caplog.at_level(logging.WARNING, logger="shared.capture"):
        rows = read_captures(store, CAPTURE, "customers", COLUMNS)
    assert rows == []
    assert "2 captured requests" in caplog.text
