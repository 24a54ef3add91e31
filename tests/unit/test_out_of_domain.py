"""``serving.out_of_domain`` on public datasets the project has never seen: a spec from one
part of a dataset, the rest served through the ASGI app. Under ``reject`` a held-back row
past the part's range is a 422; under ``accept`` none is refused, each is flagged with the
column and the check that pandera itself finds it breaks, counted in ``/health``, captured
with its flags and counted by the drift check, whose statistics do not change.

No model is trained: the served model is scikit-learn's dummy estimator fitted on the part
(it predicts the part's mean or class shares), since what is under test is what reaches it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
import yaml
from fastapi.testclient import TestClient

from shared.adapters.lineage_registry import LineageModelRegistry
from shared.capture import InferenceCapture, read_captures
from shared.cloud_facts import value
from shared.drift import compare, feature_kinds
from shared.events import ObjectRef
from shared.layout import DatasetVersion
from shared.ports import AlertChannel, MetricPoint, MetricsSink, ModelVersion
from shared.serve_app import create_app
from shared.services.drift import DriftService
from shared.serving import MAX_BATCH_ROWS, MAX_BODY_BYTES, LoadedModel, ModelSlot
from shared.specs import DatasetSpec, infer
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore
from tests.unit.test_spec_inference import breast_cancer, gapminder, tips, wine

CAPTURE, REPORTS, CURATED = "dhow-t-capture", "dhow-t-reports", "dhow-t-curated"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def split(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Half the rows, at random, to infer from; the other half held back."""
    order = np.random.default_rng(seed).permutation(len(frame))
    half = len(frame) // 2
    return frame.iloc[order[:half]], frame.iloc[order[half:]]


def with_serving(spec: DatasetSpec, **serving: Any) -> DatasetSpec:
    doc = spec.model_dump(by_alias=True, mode="json")
    doc["serving"] |= serving
    return DatasetSpec.model_validate(doc)


def pandera_range_spec(name: str, part: pd.DataFrame, target: str) -> DatasetSpec:
    """The spec pandera infers, bounds at the part's exact extremes: what `dhow dataset
    init` wrote before it inferred signs, and what specs written then still hold."""
    schema = pa.infer_schema(part)
    assert isinstance(schema, pa.DataFrameSchema)
    doc = yaml.safe_load(schema.to_yaml() or "")
    doc.pop("index", None)
    classes = part[target].nunique() <= 20
    return DatasetSpec(
        name=name, target=target, task="classification" if classes else "regression", schema=doc
    )


def dummy_slot(spec: DatasetSpec, part: pd.DataFrame) -> ModelSlot:
    """A served model that learned nothing but the part's mean (or class shares)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    features = [c for c in part.columns if c != spec.target]
    y = part[spec.target]
    card: dict[str, Any] = {"features": features, "task": spec.task}
    if spec.task == "classification":
        model: Any = DummyClassifier(strategy="prior").fit(part[features], y.astype(str))
        card["labels"] = [str(c) for c in model.classes_]
    else:
        model = DummyRegressor().fit(part[features], y)
    version = ModelVersion(
        dataset=spec.name,
        version=1,
        status="Approved",
        artifact="s3://dhow-t-models/m.tar.gz",
        image="local:dummy",
        created_at=T0,
    )
    return ModelSlot(lambda: LoadedModel(spec.name, version, "ab" * 32, card, model))


def requests_of(held: pd.DataFrame, target: str) -> list[dict[str, Any]]:
    """The held-back rows as a caller's program sends them (JSON, the target left out)."""
    rows: list[dict[str, Any]] = json.loads(held.drop(columns=[target]).to_json(orient="records"))
    return rows


def pandera_flags(spec: DatasetSpec, held: pd.DataFrame) -> dict[int, set[tuple[str, str]]]:
    """Per held-back row (by position), the (column, check) pairs pandera's own validation
    of the spec's schema finds it breaks: the independent count the flags must match."""
    try:
        spec.dataframe_schema.validate(held.reset_index(drop=True), lazy=True)
    except pa.errors.SchemaErrors as exc:
        found: dict[int, set[tuple[str, str]]] = {}
        for case in exc.failure_cases.to_dict("records"):
            check = re.sub(r"\(.*", "", str(case["check"]))  # "isin(['Fri', ...])" -> isin
            found.setdefault(int(case["index"]), set()).add((str(case["column"]), check))
        return found
    return {}


def serve(
    spec: DatasetSpec, part: pd.DataFrame, rows: list[dict[str, Any]], capture: Any = None
) -> tuple[list[int], dict[str, Any], Any]:
    """Each row as its own request (so each refusal is one row's), then one batch of all of
    them; the statuses, /health, and the batch's answer."""
    app = create_app(spec, dummy_slot(spec, part), capture, metrics=lambda _s, _ms: None)
    with TestClient(app) as c:
        statuses = [c.post("/predict", json=row).status_code for row in rows]
        batch = c.post("/predict", json=rows)
        health = c.get("/health").json()
    return statuses, health, batch


@pytest.mark.parametrize(
    ("load", "target"),
    [(breast_cancer, "target"), (wine, "target")],
    ids=["breast-cancer", "wine"],
)
def test_held_back_rows_past_the_part_s_range_are_refused_or_served_and_flagged(
    load: Callable[[], pd.DataFrame], target: str
) -> None:
    part, held = split(load())
    spec = pandera_range_spec("public", part, target)
    rows = requests_of(held, target)
    expected = pandera_flags(spec, held)
    assert expected, "the split must leave some held-back rows past the part's range"

    refused, health, _ = serve(spec, part, rows)
    # reject (the default): exactly the rows pandera finds outside are refused.
    assert spec.serving.out_of_domain == "reject"
    assert [i for i, s in enumerate(refused) if s == 422] == sorted(expected)
    assert set(refused) == {200, 422}
    assert health["out_of_domain_rows"] == 0

    accepting = with_serving(spec, out_of_domain="accept")
    served, health, batch = serve(accepting, part, rows)
    assert served == [200] * len(rows)  # none of the held-back rows is refused
    assert batch.status_code == 200
    flags = batch.json()["out_of_domain"]
    assert len(flags) == len(rows) == len(batch.json()["predictions"])
    got = {i: {(f["column"], f["check"]) for f in row} for i, row in enumerate(flags) if row}
    assert got == expected
    # counted once per answered row: each row was sent alone and once in the batch
    assert health["out_of_domain"] == "accept"
    assert health["out_of_domain_rows"] == 2 * len(expected)
    by_column: dict[str, int] = {}
    for pairs in expected.values():
        for column in {c for c, _ in pairs}:
            by_column[column] = by_column.get(column, 0) + 2
    assert health["out_of_domain_by_column"] == by_column


def test_an_unseen_category_is_refused_or_served_and_flagged() -> None:
    """plotly's tips, the spec inferred by `dhow dataset init` from the days but Friday (a
    sample taken before the place opened on Fridays): a Friday is outside ``day``'s values."""
    frame = tips()
    part, held = frame[frame["day"] != "Fri"], frame
    spec = infer("tips", part, "tip").spec
    assert spec.schema_doc["columns"]["day"]["isin"] == ["Sat", "Sun", "Thur"]
    rows = requests_of(held, "tip")
    fridays = [i for i, r in enumerate(rows) if r["day"] == "Fri"]
    assert pandera_flags(spec, held) == {i: {("day", "isin")} for i in fridays}

    refused, _, batch = serve(spec, part, rows)
    assert [i for i, s in enumerate(refused) if s == 422] == fridays
    assert batch.status_code == 422
    assert {tuple(e["loc"][2:]) for e in batch.json()["detail"]} == {("day",)}

    served, health, batch = serve(with_serving(spec, out_of_domain="accept"), part, rows)
    assert served == [200] * len(rows)
    flags = batch.json()["out_of_domain"]
    assert [i for i, f in enumerate(flags) if f] == fridays
    assert all(flags[i] == [{"column": "day", "check": "isin"}] for i in fridays)
    assert health["out_of_domain_by_column"] == {"day": 2 * len(fridays)}


@pytest.mark.parametrize(
    ("load", "target"),
    [(breast_cancer, "target"), (wine, "target"), (tips, "tip"), (gapminder, "lifeExp")],
    ids=["breast-cancer", "wine", "tips", "gapminder"],
)
def test_under_accept_no_held_back_row_is_refused(
    load: Callable[[], pd.DataFrame], target: str
) -> None:
    """The issue's test: infer from one part (as `dhow dataset init` does), serve the rest
    under accept: every row is answered, and what is flagged is what pandera finds."""
    part, held = split(load(), seed=1)
    spec = with_serving(infer("public", part, target).spec, out_of_domain="accept")
    rows = requests_of(held, target)
    app = create_app(spec, dummy_slot(spec, part), None, metrics=lambda _s, _ms: None)
    with TestClient(app) as c:
        batch = c.post("/predict", json=rows)
        health = c.get("/health").json()
    assert batch.status_code == 200, batch.text[:500]
    flags = batch.json()["out_of_domain"]
    expected = pandera_flags(spec, held)
    assert {i for i, f in enumerate(flags) if f} == set(expected)
    assert health["out_of_domain_rows"] == len(expected)


# --- what stays strict under accept ------------------------------------------------


def _tips_accepting() -> tuple[DatasetSpec, pd.DataFrame, dict[str, Any]]:
    part, _ = split(tips())
    spec = with_serving(infer("tips", part, "tip").spec, out_of_domain="accept")
    return spec, part, requests_of(part.head(1), "tip")[0]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (lambda r: {**r, "size": "2"}, "int_type"),  # strict types
        (lambda r: {**r, "size": 2.0}, "int_type"),
        (lambda r: {**r, "smoker": 1}, "string_type"),
        (lambda r: {**r, "size": 10**30}, "less_than_equal"),  # what int64 holds
        (lambda r: {**r, "sex": None}, "string_type"),  # not nullable
        (lambda r: {**r, "tips": 1}, "extra_forbidden"),
        (lambda r: {k: v for k, v in r.items() if k != "day"}, "missing"),
    ],
)
def test_under_accept_types_nulls_and_columns_stay_strict(
    body: Callable[[dict[str, Any]], Any], kind: str
) -> None:
    spec, part, row = _tips_accepting()
    with TestClient(create_app(spec, dummy_slot(spec, part), None, lambda _s, _ms: None)) as c:
        r = c.post("/predict", json=body(row))
    assert r.status_code == 422
    assert kind in {e["type"] for e in r.json()["detail"]}


def test_under_accept_nan_infinity_and_the_size_caps_stay() -> None:
    spec, part, row = _tips_accepting()
    text = json.dumps({**row, "total_bill": "VALUE"})
    with TestClient(create_app(spec, dummy_slot(spec, part), None, lambda _s, _ms: None)) as c:
        assert c.post("/predict", content=text.replace('"VALUE"', "1e300")).status_code == 200
        for bad in ("NaN", "Infinity", "-Infinity", "1e400"):
            r = c.post("/predict", content=text.replace('"VALUE"', bad))
            assert r.status_code == 422, bad
            assert r.json()["error"]["reason"] == "request_invalid"
        too_many = c.post("/predict", json=[row] * (MAX_BATCH_ROWS + 1))
        assert too_many.status_code == 422
        assert too_many.json()["detail"][0]["type"] == "too_long"
        huge = c.post("/predict", content=b"[" + b" " * MAX_BODY_BYTES + b"]")
        assert huge.status_code == 413
        assert c.get("/health").json()["out_of_domain_rows"] == 0  # 1e300 is in (>= 0)


# --- captures and the drift check --------------------------------------------------


class ListedMetrics(MetricsSink):
    def __init__(self) -> None:
        self.points: list[MetricPoint] = []

    def put(self, namespace: str, points: list[MetricPoint]) -> None:
        self.points += points


class ListedAlerts(AlertChannel):
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, subject: str, message: str, attributes: Mapping[str, str]) -> str:
        self.sent.append((subject, message))
        return f"alert-{len(self.sent)}"


def test_flagged_rows_are_captured_and_counted_by_the_drift_check(tmp_path: Path) -> None:
    part, held = split(breast_cancer())
    spec = with_serving(pandera_range_spec("cancer", part, "target"), out_of_domain="accept")
    doc = spec.model_dump(by_alias=True, mode="json")
    doc["drift"]["min_rows"] = 100
    spec = DatasetSpec.model_validate(doc)
    (tmp_path / "cancer.yaml").write_text(spec.to_yaml())
    expected = pandera_flags(spec, held)
    rows = requests_of(held, "target")

    store, lineage = MemoryStore(), MemoryLineage()
    at = T0 - timedelta(hours=1)
    capture = InferenceCapture(store, CAPTURE, "cancer", batch_rows=10**6, now=lambda: at)
    app = create_app(spec, dummy_slot(spec, part), capture, lambda _s, _ms: None)
    with TestClient(app) as c:
        assert c.post("/predict", json=rows).status_code == 200
    captured = read_captures(store, CAPTURE, "cancer")
    assert len(captured) == len(rows)
    flagged = {i for i, r in enumerate(captured) if r["out_of_domain"]}
    assert flagged == set(expected)
    first = min(expected)
    assert {(f["column"], f["check"]) for f in captured[first]["out_of_domain"]} == expected[first]

    # The champion's reference: the part, as validation writes reference.parquet.
    kinds = feature_kinds(spec)
    reference = part[list(kinds)].reset_index(drop=True)
    local = tmp_path / "reference.parquet"
    reference.to_parquet(local)
    version = DatasetVersion("cancer", "a" * 64)
    store.upload_file(ObjectRef(container=CURATED, key=version.reference_key), local, {})
    registry = LineageModelRegistry(MemoryLineage())
    registry.register(
        "cancer",
        artifact="s3://dhow-t-models/m.tar.gz",
        image="local:dummy",
        metrics={},
        lineage={"curated": f"s3://{CURATED}/{version.curated_key}"},
        status="Approved",
    )
    alerts = ListedAlerts()
    svc = DriftService(
        store,
        MemoryBus(),
        lineage,
        registry,
        ListedMetrics(),
        alerts,
        capture_container=CAPTURE,
        reports_container=REPORTS,
        specs_dir=tmp_path,
        clock=lambda: T0,
    )
    out = svc.check("cancer", requested_by="alice")
    assert out.verdict.verdict != "insufficient_data"
    assert out.verdict.out_of_domain_rows == len(expected)
    summary = json.loads(b"".join(store.iter_chunks(out.summary)))
    assert summary["out_of_domain_rows"] == len(expected)
    [row] = [r for r in lineage.list("cancer") if r.kind == "drift"]
    assert row.attributes["out_of_domain_rows"] == len(expected)
    # The statistics are those of every captured row, flagged or not.
    current = pd.DataFrame.from_records([r["inputs"] for r in captured], columns=list(kinds))
    plain = compare(reference, current, kinds, min_rows=100, drift_share=spec.drift.drift_share)
    assert out.verdict.columns == plain.columns
    assert out.verdict.verdict == plain.verdict
    if out.verdict.verdict == "drift":
        assert f"{len(expected)} of the captured rows were served outside" in alerts.sent[0][1]
    # A redelivery answers from the summary, with the same figure.
    again = svc.check("cancer", requested_by="alice")
    assert again.repeated
    assert again.verdict.out_of_domain_rows == len(expected)


def test_each_instance_counts_the_rows_it_served() -> None:
    """/health's count is one process's: on Lambda each concurrent request has an
    execution environment of its own (fact aws.lambda.concurrent_requests_separate_environments),
    so two environments of one function count apart and neither tells the function's total
    (the drift check's count over the captures is that)."""
    assert value("aws.lambda.concurrent_requests_separate_environments") is True
    spec, part, row = _tips_accepting()
    outside = {**row, "day": "Mon"}
    first, second = (
        TestClient(create_app(spec, dummy_slot(spec, part), None, lambda _s, _ms: None))
        for _ in range(2)
    )
    with first as a, second as b:
        assert a.post("/predict", json=[outside, outside, row]).status_code == 200
        assert b.post("/predict", json=outside).status_code == 200
        assert a.get("/health").json()["out_of_domain_rows"] == 2
        assert b.get("/health").json()["out_of_domain_rows"] == 1
