"""shared.layout builds every key of a dataset version, byte for byte as the services
built them by hand before it (stored objects are found under these keys: a changed key
is a lost reference sample, a curated file training cannot find, a capture drift skips)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared import layout
from shared.layout import DatasetVersion

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = [
    ("customers", "0" * 64, "csv"),
    ("churn_2026-q4", "ab" * 32, "parquet"),
    ("a", "f" * 63 + "e", "jsonl"),
]
STAMP = datetime(2026, 11, 23, 9, 5, 7, 123456, tzinfo=UTC)


@pytest.mark.parametrize(("dataset", "sha", "fmt"), VERSIONS)
def test_every_key_is_the_one_the_services_built(dataset: str, sha: str, fmt: str) -> None:
    v = DatasetVersion(dataset, sha)
    base = f"datasets/{dataset}/sha256={sha}"  # ingest's and validate's f-string
    assert v.staged_key(fmt) == f"{base}/data.{fmt}"
    assert v.curated_key == f"{base}/data.parquet"
    assert v.reference_key == f"{base}/reference.parquet"
    assert v.profile_key == f"{base}/profile.json"
    assert v.quarantined_key(f"data.{fmt}") == f"{base}/data.{fmt}"
    assert v.quarantine_report_key(f"data.{fmt}") == f"{base}/data.{fmt}.report.json"
    assert v.job_result_key == f"validation-jobs/{dataset}/sha256={sha}/result.json"
    assert v.version == sha[:12]
    assert str(v) == f"{dataset}@{sha[:12]}"
    assert layout.upload_key(dataset, "x.csv") == f"datasets/{dataset}/x.csv"
    assert layout.capture_prefix(dataset) == f"datasets/{dataset}/"
    assert layout.capture_key(dataset, STAMP, "1a2b3c4d") == (
        f"datasets/{dataset}/2026/11/23/09/20261123T090507123456-1a2b3c4d.jsonl"
    )
    assert layout.endpoint_capture_prefix(dataset) == f"datasets/{dataset}/endpoint"
    assert layout.endpoint_variant_prefix(dataset, "e", "AllTraffic") == (
        f"datasets/{dataset}/endpoint/e/AllTraffic/"
    )
    assert layout.hour_prefix(f"datasets/{dataset}/", STAMP) == f"datasets/{dataset}/2026/11/23/09/"
    assert layout.drift_report_key(dataset, "c1") == f"drift/{dataset}/c1/report.html"
    assert layout.drift_summary_key(dataset, "c1") == f"drift/{dataset}/c1/summary.json"
    # A training job's folder (azure_ml.training_output_key, the local job's own f-strings).
    assert layout.model_job_prefix(dataset, "j-1") == f"models/{dataset}/j-1/"
    assert layout.model_output_prefix(dataset, "j-1") == f"models/{dataset}/j-1/output/"


@pytest.mark.parametrize(("dataset", "sha", "fmt"), VERSIONS)
def test_a_version_is_read_back_from_any_key_of_its_folder(
    dataset: str, sha: str, fmt: str
) -> None:
    v = DatasetVersion(dataset, sha)
    for key in (v.staged_key(fmt), v.curated_key, v.reference_key, v.profile_key):
        assert DatasetVersion.from_key(key) == v
    assert DatasetVersion.from_staged_key(v.staged_key(fmt)) == v
    # Only a staged data file is a staged key; a report or a job result is not.
    assert DatasetVersion.from_staged_key(v.quarantine_report_key(f"data.{fmt}")) is None
    assert DatasetVersion.from_key(v.job_result_key) is None


@pytest.mark.parametrize(
    "key",
    [
        "datasets/customers/abc123/data.parquet",  # not a sha256
        "datasets/Customers/sha256=" + "0" * 64 + "/data.csv",  # not a dataset name
        "datasets/customers/sha256=" + "0" * 64 + "/x/data.csv",  # deeper than a version
        "other/customers/sha256=" + "0" * 64 + "/data.csv",
    ],
)
def test_other_keys_are_no_version(key: str) -> None:
    assert DatasetVersion.from_key(key) is None


# The shapes of keys that only shared.layout may build: a service that writes one by hand
# again would drift from the layout (as the drift check's rsplit once could).
HAND_BUILT = re.compile(
    r'f"[^"\n]*(sha256=\{|/reference\.parquet|/data\.parquet|/profile\.json|\.report\.json'
    r"|validation-jobs/|drift/\{|%Y/%m/%d/%H|\{DATASETS_PREFIX\}|models/\{)"
)


def test_no_service_builds_a_layout_key_by_hand() -> None:
    offenders = []
    for folder in ("shared", "functions", "localstack/dhow_cli", "localstack/dhow_local"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "layout.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if HAND_BUILT.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "build these keys with shared.layout:\n" + "\n".join(offenders)


def test_the_drift_check_finds_the_reference_through_the_layout() -> None:
    source = (ROOT / "shared" / "services" / "drift.py").read_text()
    assert "rsplit" not in source
    assert "reference_key" in source
