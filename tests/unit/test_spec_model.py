"""One column model per spec: the pandera schema, the serve request model and the drift
check's column kinds all agree with ``DatasetSpec.column_model``, for every shipped spec
and the specs inferred from public datasets; and reading that model leaves the
``spec_version`` of an unchanged YAML as it was."""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Callable

import pandas as pd
import pytest

from shared.drift import feature_kinds
from shared.serving import request_row_model
from shared.specs import PACKAGED_SPECS, DatasetSpec, SpecColumn, infer_spec, load_spec
from tests.unit.test_spec_inference import DATASETS


def _shipped() -> list[tuple[str, Callable[[], DatasetSpec]]]:
    return [(p.stem, lambda n=p.stem: load_spec(n)) for p in sorted(PACKAGED_SPECS.glob("*.yaml"))]


def _inferred() -> list[tuple[str, Callable[[], DatasetSpec]]]:
    def make(name: str, load: Callable[[], pd.DataFrame], target: str) -> DatasetSpec:
        return infer_spec(name, load(), target)

    return [
        (f"inferred-{name}", lambda n=name, f=load, t=target: make(n, f, t))
        for name, load, target in DATASETS
    ]


SPECS = _shipped() + _inferred()


@pytest.fixture(params=SPECS, ids=[name for name, _ in SPECS])
def spec(request: pytest.FixtureRequest) -> DatasetSpec:
    made: DatasetSpec = request.param[1]()
    return made


def test_the_shipped_spec_keeps_its_version() -> None:
    # spec_version is a digest of the parsed spec: the column model is derived, not a
    # field, so an unchanged YAML keeps the version its lineage rows and jobs carry.
    spec = load_spec("customers")
    assert spec.spec_version == "3+f4bf9e1d"
    assert DatasetSpec.model_validate(spec.model_dump(by_alias=True)).spec_version == (
        spec.spec_version
    )


def test_customers_columns_have_their_kind_and_role() -> None:
    model = load_spec("customers").column_model
    assert model["customer_id"].role == "identifier"
    assert model["churned"].role == "target"
    assert model["churned"].allowed == (0, 1)
    assert model["segment"].kind == "categorical"
    assert model["age"].kind == "integer"
    assert model["age"].bounds == {
        "greater_than_or_equal_to": 18.0,
        "less_than_or_equal_to": 110.0,
    }
    assert model["has_mobile_app"].kind == "boolean"
    assert model["monthly_spend_aed"].kind == "float"
    assert {c.role for c in model.values()} == {"feature", "target", "identifier"}


def test_the_pandera_schema_agrees_with_the_column_model(spec: DatasetSpec) -> None:
    schema = spec.dataframe_schema
    model = spec.column_model
    assert set(schema.columns) == set(model)
    for name, column in schema.columns.items():
        col: SpecColumn = model[name]
        assert str(column.dtype) == col.dtype or col.dtype in str(column.dtype), name
        assert column.nullable == col.nullable, name
        assert column.unique == (col.role == "identifier"), name
        checks = {c.name: c.statistics for c in column.checks}
        bounds = {k: next(iter(v.values())) for k, v in checks.items() if k in col.bounds}
        assert bounds == col.bounds, name
        allowed = checks.get("isin", {}).get("allowed_values")
        assert (tuple(allowed) if allowed else None) == col.allowed, name
        numeric = pd.api.types.is_numeric_dtype(column.dtype.type) and col.kind != "boolean"
        assert numeric == col.numeric, name


# pydantic keeps the plain type as the annotation (Strict is its metadata, and the
# model is strict as a whole).
_TYPES: dict[str, type] = {"integer": int, "float": float, "boolean": bool}


def test_the_request_model_agrees_with_the_column_model(spec: DatasetSpec) -> None:
    model = request_row_model(spec)
    inputs = [c for c in spec.column_model.values() if c.role != "target"]
    assert list(model.model_fields) == [c.name for c in inputs]
    for col in inputs:
        field = model.model_fields[col.name]
        assert field.is_required() == (not col.nullable and col.role != "identifier"), col.name
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = args[0] if args and typing.get_origin(annotation) is not typing.Literal else None
        shown = inner if inner is not None else annotation
        if typing.get_origin(shown) is typing.Annotated:  # an optional field keeps its Strict
            shown = typing.get_args(shown)[0]
        if col.allowed:
            assert typing.get_origin(shown) is typing.Literal, col.name
            assert typing.get_args(shown) == col.allowed, col.name
        elif col.kind == "datetime":
            assert shown is dt.datetime, col.name
        else:
            assert shown is _TYPES.get(col.kind, str), col.name


def test_the_drift_kinds_agree_with_the_column_model(spec: DatasetSpec) -> None:
    kinds = feature_kinds(spec)
    features = [
        c
        for c in spec.column_model.values()
        if c.role == "feature" and c.kind not in ("datetime", "duration")
    ]
    assert list(kinds) == [c.name for c in features]
    for col in features:
        assert kinds[col.name] == ("num" if col.kind in ("integer", "float") else "cat")


def test_train_launch_drops_and_dedupes_by_the_identifiers() -> None:
    from shared.events import DatasetValidated, ObjectRef
    from shared.services.train_launch import training_request

    event = DatasetValidated(
        dataset="customers",
        correlation_id="c",
        sha256="a" * 64,
        rows=1,
        spec_version=load_spec("customers").spec_version,
        curated=ObjectRef(container="curated", key="k"),
    )
    hps = training_request(event).hyperparameters
    assert hps["drop_columns"] == hps["dedupe_on"] == "customer_id"
