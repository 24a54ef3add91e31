"""What the serve function knows about a model: which version, its verified bytes, and
the shape of a request row, all derived from the registry and the dataset's spec.

The request contract is built from the spec's column model (every column but the
target, with its type, bounds and categories), so a request that names a wrong
column or sends a wrong type is refused with the column's name before the model
sees it. Under ``serving.out_of_domain: accept`` a value past a bound or outside a
category's values is not refused but flagged (``DomainFlags``): types, nulls, NaN and
the size caps stay as strict.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import from_json

from shared.artifacts import ARTIFACT_SHA256, fetch_model
from shared.cloud_facts import value
from shared.errors import DhowError
from shared.events import ObjectRef
from shared.ports import ModelRegistry, ModelVersion, ObjectStore
from shared.reasons import Reason
from shared.specs import ColumnKind, DatasetSpec

log = logging.getLogger(__name__)

# The largest batch one request may carry; Lambda's payload limit (6 MB) is reached
# at about this many rows of a 20-column table anyway.
MAX_BATCH_ROWS = 10_000
# The largest body the serve app reads, on every cloud. On AWS no larger one reaches the
# function (fact aws.lambda.sync_invoke_payload: 6 MB for the whole event, read in decimal
# megabytes, the smaller reading); Azure ML's inference server and the Functions host
# take far larger bodies, so the app and the scoring script refuse them themselves, and
# a request is answered the same wherever it is sent.
MAX_BODY_BYTES = int(value("aws.lambda.sync_invoke_payload")["max_mb"]) * 1_000_000
# A 422 lists this many errors, counts them all and says how many it left out: 10,000 bad
# rows would otherwise answer tens of thousands of entries, each echoing its input.
MAX_LISTED_ERRORS = 50
# The longest string input an error echoes back.
_MAX_ECHOED_CHARS = 80

_CHECK_BOUNDS = {
    "greater_than_or_equal_to": "ge",
    "greater_than": "gt",
    "less_than_or_equal_to": "le",
    "less_than": "lt",
}


class ModelNotServable(DhowError):
    """No approved model, or the asked-for version, can be served."""

    reason = Reason.MODEL_NOT_SERVABLE


class PredictionFailed(DhowError):
    """The model raised on a request that passed the schema."""

    reason = Reason.PREDICTION_FAILED


class BodyTooLarge(DhowError):
    """A request body larger than the serve function reads (``MAX_BODY_BYTES``)."""

    reason = Reason.BODY_TOO_LARGE

    def __init__(self, size: int | None) -> None:
        told = f"{size:,} bytes" if size is not None else "more"
        super().__init__(
            f"the request body is {told}; the serve function reads at most {MAX_BODY_BYTES:,}",
            hint=f"send at most {MAX_BATCH_ROWS} rows a request, in several smaller batches",
        )


class RequestInvalid(DhowError):
    """A request body that is not JSON, not rows, or whose rows break the spec's contract."""

    reason = Reason.REQUEST_INVALID

    def __init__(self, errors: list[dict[str, Any]], count: int | None = None) -> None:
        self.count = len(errors) if count is None else count
        self.errors = [_shown(e) for e in errors[:MAX_LISTED_ERRORS]]
        super().__init__(
            f"{self.count} error(s) in the request"
            + (f", the first {len(self.errors)} listed" if self.count > len(self.errors) else ""),
            hint="each error names its row and column (loc); fix those and send again",
        )

    def as_body(self) -> dict[str, Any]:
        """The 422's body: FastAPI's ``detail`` list, bounded, with the full count."""
        return {
            "detail": self.errors,
            "error_count": self.count,
            "errors_not_listed": self.count - len(self.errors),
            "error": self.as_dict(),
        }


def check_body_size(size: int) -> None:
    """Raise ``BodyTooLarge`` for a body of ``size`` bytes over ``MAX_BODY_BYTES``."""
    if size > MAX_BODY_BYTES:
        raise BodyTooLarge(size)


def _shown(error: Any) -> dict[str, Any]:
    """One pydantic (or our own) error as a caller sees it: its type, where, what, and
    the offending input only when it is a short scalar (an input may be a nested
    structure, or megabytes of one string)."""
    shown: dict[str, Any] = {
        "type": str(error.get("type", "")),
        "loc": list(error.get("loc", ())),
        "msg": str(error.get("msg", "")),
    }
    given = error.get("input")
    # bool is an int; an integer of 4,000 digits is not echoed back, nor an infinity or
    # NaN (not JSON: the answer itself could not be written)
    huge = isinstance(given, int) and given.bit_length() > 64
    huge = huge or (isinstance(given, float) and not math.isfinite(given))
    if isinstance(given, str):
        shown["input"] = given[:_MAX_ECHOED_CHARS]
    elif (given is None or isinstance(given, float | int)) and not huge:
        shown["input"] = given
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        shown["ctx"] = {
            str(k): v
            if isinstance(v, bool | int) or (isinstance(v, float) and math.isfinite(v))
            else str(v)[:_MAX_ECHOED_CHARS]
            for k, v in list(ctx.items())[:5]
        }
    return shown


# Strict: a request is the caller's own program talking, so "41" for an integer, 1 for
# a bool or 41.0 for an integer are its mistakes, answered as such, not guesses. An
# integer is a float too; inf and NaN are not (the config). JSON has no datetime: an ISO
# 8601 string is how one is sent. Anything else (text, categories, durations) is a string.
_REQUEST_TYPES: dict[ColumnKind, Any] = {
    "integer": StrictInt,
    "float": StrictFloat,
    "boolean": StrictBool,
    "datetime": datetime,
}


def _int_range(dtype: str) -> tuple[int, int]:
    """The smallest and largest value of a pandas integer dtype (``int64``, ``uint8``)."""
    d = dtype.lower()
    digits = "".join(ch for ch in d if ch.isdigit())
    bits = int(digits) if digits in ("8", "16", "32", "64") else 64
    if d.startswith("uint"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class ColumnDomain:
    """The values a column's spec allows beyond its type: its bounds (pandera's check
    names, numeric columns only) or its categories (``isin``, which then stand alone)."""

    bounds: dict[str, Any]
    allowed: tuple[Any, ...] | None


def column_domains(spec: DatasetSpec) -> dict[str, ColumnDomain]:
    """Every request column's domain: what a row is refused for (``reject``) or flagged
    for (``accept``), the same checks either way."""
    return {
        col.name: ColumnDomain(
            dict(col.bounds) if col.numeric and not col.allowed else {}, col.allowed
        )
        for col in spec.inputs
    }


def request_row_model(spec: DatasetSpec, *, domain_checks: bool = True) -> type[BaseModel]:
    """A pydantic model of one request row, from the spec's column model.

    Identifier columns may be left out: no model learns from them, but a caller may
    send them so that captured rows can be traced. Nullable columns accept null.
    Unknown columns are refused. Without ``domain_checks`` (``accept``) the spec's
    bounds and categories are left to ``DomainFlags``: each column keeps its strict
    type, and an integer column what its dtype can hold.
    """
    domains = column_domains(spec)
    fields: dict[str, Any] = {}
    for col in spec.inputs:
        domain = domains[col.name]
        py: Any = _REQUEST_TYPES.get(col.kind, StrictStr)
        extra: dict[str, Any] = {}
        if domain_checks:
            if domain.allowed:
                py = Literal[domain.allowed]
            constraints = {_CHECK_BOUNDS[key]: limit for key, limit in domain.bounds.items()}
        else:
            constraints = {}
            if domain.bounds or domain.allowed:
                # The domain stays documented in /openapi.json, as what is expected.
                expected = (
                    f"one of {list(domain.allowed)}"
                    if domain.allowed
                    else ", ".join(f"{k} {v}" for k, v in domain.bounds.items())
                )
                extra["description"] = f"expected {expected}; other values are flagged"
        if py is StrictInt:
            # An integer the column's dtype can hold, whatever bounds the spec omits: a
            # 30-digit number would turn the frame's column to objects under the model.
            low, high = _int_range(col.dtype)
            if "ge" not in constraints and "gt" not in constraints:
                constraints["ge"] = low
            if "le" not in constraints and "lt" not in constraints:
                constraints["le"] = high
        if py is datetime:  # the one type JSON carries as another (a string)
            constraints["strict"] = False
        if col.nullable or col.role == "identifier":
            fields[col.name] = (py | None, Field(default=None, **constraints, **extra))
        else:
            fields[col.name] = (py, Field(**constraints, **extra))
    return create_model(
        f"{spec.name.title().replace('-', '').replace('_', '')}Row",
        # No infinity or NaN: no model was trained on one, and neither is valid JSON.
        __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False),
        **fields,
    )


class DomainFlag(TypedDict):
    """One check a served row is outside of: the column and the spec's check
    (``greater_than_or_equal_to``, ``isin``, ...)."""

    column: str
    check: str


def _outside(check: str, value: Any, limit: Any) -> bool:
    """Whether ``value`` breaks the bound, as pydantic's ge/gt/le/lt refuse it."""
    if check == "greater_than_or_equal_to":
        return bool(value < limit)
    if check == "greater_than":
        return bool(value <= limit)
    if check == "less_than_or_equal_to":
        return bool(value > limit)
    return bool(value >= limit)  # less_than


class DomainFlags:
    """Flags each row of a request with the bounds and categories it is outside of."""

    def __init__(self, spec: DatasetSpec) -> None:
        self._domains = {
            name: d for name, d in column_domains(spec).items() if d.bounds or d.allowed
        }

    def of(self, rows: list[dict[str, Any]]) -> list[list[DomainFlag]]:
        """Per row, in order, the checks it is outside of (empty when it is inside all);
        a null (where the spec allows one) is outside none."""
        flagged: list[list[DomainFlag]] = []
        for row in rows:
            flags: list[DomainFlag] = []
            for name, domain in self._domains.items():
                v = row.get(name)
                if v is None:
                    continue
                if domain.allowed is not None and v not in domain.allowed:
                    flags.append({"column": name, "check": "isin"})
                flags.extend(
                    {"column": name, "check": check}
                    for check, limit in domain.bounds.items()
                    if _outside(check, v, limit)
                )
            flagged.append(flags)
        return flagged


class DomainCounter:
    """The rows served outside the spec's domain since this instance started, in all and
    per column (what ``/health`` shows). Thread-safe: the app predicts in a threadpool."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0
        self.by_column: dict[str, int] = {}

    def add(self, flags: list[list[DomainFlag]]) -> None:
        with self._lock:
            for row in flags:
                if not row:
                    continue
                self.rows += 1
                for column in {f["column"] for f in row}:
                    self.by_column[column] = self.by_column.get(column, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rows": self.rows, "by_column": dict(sorted(self.by_column.items()))}


class RequestRows:
    """The request contract of one dataset: a body in, its validated rows out."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.out_of_domain = spec.serving.out_of_domain
        accept = self.out_of_domain == "accept"
        self.row_model = request_row_model(spec, domain_checks=not accept)
        # Under reject a row outside the domain never passes parse, so nothing is flagged.
        self._flags = DomainFlags(spec) if accept else None
        self._columns = frozenset(self.row_model.model_fields)
        self._rows: TypeAdapter[list[BaseModel]] = TypeAdapter(list[self.row_model])  # type: ignore[name-defined]

    def parse(self, body: bytes) -> list[BaseModel]:
        """The rows of ``body`` (one row, an object, or a batch, an array of them);
        raises ``BodyTooLarge`` or ``RequestInvalid``, each with its reason."""
        check_body_size(len(body))
        try:
            # pydantic's own JSON parser: its nesting limit answers a body nested 100,000
            # deep (the standard library raises RecursionError, a 500), and it refuses
            # NaN and Infinity, which are not JSON.
            data: Any = from_json(body, allow_inf_nan=False) if body.strip() else None
        except ValueError as exc:
            raise RequestInvalid(
                [{"type": "json_invalid", "loc": ("body",), "msg": f"body is not JSON: {exc}"}]
            ) from None
        single = isinstance(data, dict)
        batch = [data] if single else data
        if not isinstance(batch, list) or not batch:
            raise RequestInvalid(
                [
                    {
                        "type": "body_shape",
                        "loc": ("body",),
                        "msg": "send one row (an object) or a non-empty array of rows",
                    }
                ]
            )
        if len(batch) > MAX_BATCH_ROWS:
            raise RequestInvalid(
                [
                    {
                        "type": "too_long",
                        "loc": ("body",),
                        "msg": f"at most {MAX_BATCH_ROWS} rows a request; split the batch",
                    }
                ]
            )
        self._refuse_many_unknown_columns(batch, single)
        try:
            return self._rows.validate_python(batch)
        except ValidationError as exc:
            listed: list[dict[str, Any]] = []
            for e in exc.errors(include_url=False)[:MAX_LISTED_ERRORS]:
                # name the body, and the row only when a batch was sent
                e["loc"] = ("body", *(e["loc"][1:] if single else e["loc"]))
                listed.append(dict(e))
            raise RequestInvalid(listed, exc.error_count()) from None

    def flags(self, rows: list[dict[str, Any]]) -> list[list[DomainFlag]] | None:
        """Per parsed row, the bounds and categories it is outside of, under ``accept``;
        None under ``reject``, where such a row was refused by ``parse``."""
        return self._flags.of(rows) if self._flags is not None else None

    def _refuse_many_unknown_columns(self, batch: list[Any], single: bool) -> None:
        """Refuse rows with more unknown columns than a 422 lists, counted here: pydantic
        would build an error for each (half a million in a 6 MB body, seconds to list).
        Fewer are left to pydantic, which reports them with the rows' other errors."""
        total, listed = 0, list[dict[str, Any]]()
        for i, row in enumerate(batch):
            if not isinstance(row, dict) or len(row.keys() - self._columns) == 0:
                continue
            for name in row:
                if name in self._columns:
                    continue
                total += 1
                if len(listed) < MAX_LISTED_ERRORS:
                    listed.append(
                        {
                            "type": "extra_forbidden",
                            "loc": ("body", name) if single else ("body", i, name),
                            "msg": "Extra inputs are not permitted",
                        }
                    )
        if total > MAX_LISTED_ERRORS:
            raise RequestInvalid(listed, total)


@dataclass
class LoadedModel:
    """A model version whose artifact was verified and loaded, ready to predict."""

    dataset: str
    version: ModelVersion
    artifact_sha256: str
    card: dict[str, Any]
    model: Any

    @property
    def features(self) -> list[str]:
        return list(self.card["features"])

    def predict(self, rows: list[dict[str, Any]]) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions (labels for classification) and class scores where there are any."""
        import pandas as pd

        frame = pd.DataFrame.from_records(rows)
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise PredictionFailed(
                f"model v{self.version.version} needs columns {missing} that the request lacks",
                hint="send every column of the dataset's spec",
            )
        x = frame[self.features]
        labels = self.card.get("labels")
        if self.card.get("task") == "classification" and labels:
            scores = self.model.predict_proba(x)
            picked = scores.argmax(axis=1)
            return [labels[i] for i in picked], [[float(p) for p in row] for row in scores]
        return [float(v) for v in self.model.predict(x)], None


def load_model_version(
    store: ObjectStore,
    registry: ModelRegistry,
    dataset: str,
    version: int | None,
    workdir: Path | None = None,
) -> LoadedModel:
    """Version ``version`` (the champion if None), verified against its recorded hash."""
    import joblib

    from shared.trainer import MODEL_FILE

    if version is None:
        chosen = registry.champion(dataset)
        if chosen is None:
            raise ModelNotServable(
                f"{dataset} has no approved model version",
                hint=f"upload data to train one; `dhow models {dataset}` lists the versions",
            )
    else:
        chosen = registry.version(dataset, version)
        if chosen is None:
            raise ModelNotServable(
                f"{dataset} has no model version {version}",
                hint=f"`dhow models {dataset}` lists the versions",
            )
    expected = chosen.lineage.get(ARTIFACT_SHA256)
    if not expected:
        raise ModelNotServable(
            f"{dataset} v{chosen.version} has no recorded artifact hash, so it cannot be verified",
            hint="register it again (versions registered by Dhow's register carry one)",
        )
    into = Path(tempfile.mkdtemp(prefix=f"dhow-serve-{dataset}-v{chosen.version}-", dir=workdir))
    model_dir, sha = fetch_model(store, ObjectRef.from_uri(chosen.artifact), into, expected)
    card = json.loads((model_dir / "model.json").read_text())
    model = joblib.load(model_dir / MODEL_FILE)
    log.info("loaded %s v%s (%s)", dataset, chosen.version, sha[:12])
    return LoadedModel(dataset, chosen, sha, card, model)


@dataclass
class ModelSlot:
    """One model version, loaded once per warm container on first use.

    A failed load is not cached: the next request tries again (a transient storage
    error must not keep a container broken), and the error says what went wrong.
    """

    loader: Any  # () -> LoadedModel
    _model: LoadedModel | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> LoadedModel:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self.loader()
        return self._model

    @property
    def loaded(self) -> LoadedModel | None:
        return self._model


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Any]
    scores: list[list[float]] | None = None
    labels: list[str] | None = None
    # Under ``serving.out_of_domain: accept`` only: per row, the checks it is outside of.
    out_of_domain: list[list[DomainFlag]] | None = None
