"""Pipeline event contracts: every type round-trips; bad shapes are refused clearly."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import EventParseError
from shared.events import EVENT_TYPES, ObjectRef, PipelineEvent, parse_pipeline_event

REF = ObjectRef(container="dhow-local-staging", key="datasets/customers/sha256=ab/data.csv")
COMMON = {"dataset": "customers", "correlation_id": "u1"}
SAMPLES: dict[str, dict[str, Any]] = {
    "DatasetIngested": {
        "sha256": "ab" * 32,
        "size_bytes": 10,
        "format": "csv",
        "source": REF,
        "staged": REF,
    },
    "DatasetRejected": {
        "stage": "ingest",
        "reason": "empty_object",
        "message": "empty",
        "source": REF,
    },
    "DatasetValidated": {"sha256": "ab" * 32, "rows": 400, "spec_version": "1", "curated": REF},
    "TrainingLaunched": {
        "sha256": "ab" * 32,
        "spec_version": "1",
        "job_name": "j",
        "instance_type": "ml.g5.xlarge",
        "backend": "sagemaker",
    },
    "TrainingCompleted": {"job_name": "j", "status": "Failed", "reason": "OOM"},
    "ModelApproved": {"model_version": "3", "job_name": "j", "metrics": {"auc": 0.9}},
    "ModelRejected": {
        "model_version": "4",
        "job_name": "j",
        "metrics": {"auc": 0.5},
        "reason": "below minimum",
    },
    "DeploymentStarted": {"model_version": "3", "strategy": "canary"},
    "DeploymentCompleted": {"model_version": "3", "traffic": {"3": 1.0}},
    "DeploymentRolledBack": {"model_version": "3", "restored_version": "2", "reason": "alarm"},
    "DriftChecked": {"model_version": "3", "verdict": "insufficient_data"},
    "DriftDetected": {
        "model_version": "3",
        "drifted_columns": ["age"],
        "drift_share": 0.6,
        "action": "alert",
    },
}


def test_every_event_named_in_the_contract_exists() -> None:
    assert set(EVENT_TYPES) == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_event_round_trips_through_its_wire_form(name: str) -> None:
    event = EVENT_TYPES[name](**COMMON, **SAMPLES[name])
    back = parse_pipeline_event(event.event_type, event.model_dump_json())
    assert back == event
    assert back.schema_version == 1
    assert isinstance(back, PipelineEvent)


def test_unknown_type_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(EventParseError) as info:
        parse_pipeline_event("DatasetExploded", "{}")
    assert "DatasetIngested" in info.value.hint


def test_future_schema_version_is_refused_not_misread() -> None:
    body = EVENT_TYPES["DriftChecked"](**COMMON, **SAMPLES["DriftChecked"]).model_dump(mode="json")
    body["schema_version"] = 2
    with pytest.raises(EventParseError):
        parse_pipeline_event("DriftChecked", body)


def test_unexpected_fields_are_refused() -> None:
    body = {**COMMON, **SAMPLES["TrainingCompleted"], "surprise": 1}
    with pytest.raises(EventParseError):
        parse_pipeline_event("TrainingCompleted", body)


@pytest.mark.parametrize("uri", ["s3://bucket/a/b.csv", "bucket/a/b.csv"])
def test_object_locations_parse_from_both_forms(uri: str) -> None:
    assert ObjectRef.from_uri(uri) == ObjectRef(container="bucket", key="a/b.csv")
    assert ObjectRef.from_uri(ObjectRef.from_uri(uri).uri) == ObjectRef.from_uri(uri)


@pytest.mark.parametrize("uri", ["s3://bucket", "bucket/", "", "s3:///key"])
def test_incomplete_object_locations_are_refused(uri: str) -> None:
    with pytest.raises(EventParseError):
        ObjectRef.from_uri(uri)
