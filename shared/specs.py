"""Dataset specs: a pandera schema plus the target, task, training and drift settings.

A spec is one YAML file per dataset (``<name>.yaml``), reviewed like code and
deployed with the stack. The schema part is pandera's own YAML serialisation,
so non-Python users can read it. ``spec_version`` joins the file's declared
``version`` with a hash of its content, so an edit without a version bump is
still a different version in lineage.

Dhow reads the schema once, into one column model (``DatasetSpec.column_model``: each
column's kind, role, bounds, allowed values and nullability). The serve request model
(``shared.serving``), the drift check's column kinds (``shared.drift``) and the columns
training drops are derived from it; the pandera schema is pandera's own reading of the
same YAML (it also runs the checks the model has no field for), and a test holds the two
to agree for every shipped and inferred spec.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

from shared.constants import SPECS_DIR
from shared.errors import DhowError, ObjectMissing
from shared.events import ObjectRef
from shared.layout import pinned_spec_key
from shared.reasons import Reason

if TYPE_CHECKING:
    from shared.ports import ObjectStore

PACKAGED_SPECS = Path(__file__).parent / "specs"


class UnknownDataset(DhowError):
    """No spec exists for a dataset name."""

    reason = Reason.UNKNOWN_DATASET


class SpecInvalid(DhowError):
    """A spec file exists but cannot be used."""

    reason = Reason.SPEC_INVALID


class SpecVersionUnknown(DhowError):
    """No spec of a dataset has the ``spec_version`` an event or a model version names."""

    reason = Reason.SPEC_VERSION_UNKNOWN


ColumnKind = Literal["integer", "float", "boolean", "datetime", "duration", "categorical", "text"]
"""What a column holds, from its pandera dtype; text with allowed values is categorical."""
ColumnRole = Literal["feature", "target", "identifier"]
"""What a column is to a model: an input, what it predicts, or a row's identity."""
BOUND_CHECKS = (
    "greater_than_or_equal_to",
    "greater_than",
    "less_than_or_equal_to",
    "less_than",
)
"""pandera's one-sided range checks, the bounds of a column's model."""


def _kind_of(dtype: str, allowed: tuple[Any, ...] | None) -> ColumnKind:
    d = dtype.lower()
    if d.startswith(("int", "uint")):
        return "integer"
    if d.startswith("float"):
        return "float"
    if d.startswith("bool"):
        return "boolean"
    if d.startswith("datetime"):
        return "datetime"
    if d.startswith("timedelta"):
        return "duration"
    return "categorical" if allowed else "text"


class SpecColumn(BaseModel):
    """One column of a spec's schema as Dhow reads it: the one place its kind and role are
    decided. ``bounds`` are pandera's one-sided range checks as written (check name to
    limit); ``allowed`` its ``isin`` values."""

    model_config = ConfigDict(frozen=True)

    name: str
    dtype: str
    kind: ColumnKind
    role: ColumnRole
    nullable: bool = False
    bounds: dict[str, Any] = Field(default_factory=dict)
    allowed: tuple[Any, ...] | None = None

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "float")

    @classmethod
    def parse(cls, name: str, doc: dict[str, Any] | None, target: str) -> SpecColumn:
        """A column from its pandera YAML entry (checks flat on the column, or under
        ``checks``). A ``unique`` column is an identifier, the target is the target."""
        doc = doc or {}
        checks = {**doc, **(doc.get("checks") or {})}
        isin = checks.get("isin")
        allowed = tuple(isin) if isin else None
        dtype = str(doc.get("dtype", "object"))
        # An identifier always looks new: no model learns from it, no drift test reads it,
        # and a request may leave it out (it only traces a captured row).
        role: ColumnRole = (
            "target" if name == target else "identifier" if doc.get("unique") else "feature"
        )
        return cls(
            name=name,
            dtype=dtype,
            kind=_kind_of(dtype, allowed),
            role=role,
            nullable=bool(doc.get("nullable")),
            bounds={key: checks[key] for key in BOUND_CHECKS if key in checks},
            allowed=allowed,
        )


class QualityGate(BaseModel):
    """What a trained model must reach to be approved (used by register)."""

    model_config = ConfigDict(extra="forbid")

    metric: str = "roc_auc"
    minimum: float = 0.6
    max_regression: float = 0.02


class LearnFrom(BaseModel):
    """Which validated uploads a training run learns from (exactly one of the three):
    ``{latest: true}`` the newest (the default), ``{last: N}`` the newest N, or
    ``{since: "YYYY-MM-DD"}`` every upload validated on or after that day (UTC). Several
    are unioned and their rows deduplicated (by the spec's unique columns, else the row)."""

    model_config = ConfigDict(extra="forbid")

    latest: Literal[True] | None = None
    last: int | None = Field(default=None, ge=1)
    since: date | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LearnFrom:
        chosen = [k for k in ("latest", "last", "since") if getattr(self, k) is not None]
        if not chosen:
            self.latest = True  # {} reads as the default
        elif len(chosen) > 1:
            raise ValueError(f"learn_from takes one of latest, last, since; got {chosen}")
        return self

    @model_serializer(mode="wrap")
    def _the_chosen_one(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Written back (dataset init, spec_version) as the one key the spec sets.
        return {k: v for k, v in handler(self).items() if v is not None}


class TrainingSettings(BaseModel):
    """How to train this dataset (used by train-launch)."""

    model_config = ConfigDict(extra="forbid")

    instance_types: list[str] = Field(default_factory=lambda: ["ml.g5.xlarge", "ml.g4dn.xlarge"])
    entrypoint: str | None = None
    image: str | None = None
    hyperparameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    use_spot: bool = False
    max_runtime_s: int = 3600
    gate: QualityGate = Field(default_factory=QualityGate)
    learn_from: LearnFrom = Field(default_factory=LearnFrom)


class DriftSettings(BaseModel):
    """How to watch this dataset's model for drift (used by drift-check)."""

    model_config = ConfigDict(extra="forbid")

    schedule: str = "rate(1 hour)"
    window_hours: int = 24
    min_rows: int = 200
    drift_share: float = 0.5
    stattests: dict[str, str] = Field(default_factory=dict)
    thresholds: dict[str, float] = Field(default_factory=dict)
    policy: Literal["alert", "retrain", "rollback"] = "alert"
    cooldown_hours: int = 24
    reference_rows: int = 20_000


class ServingSettings(BaseModel):
    """How an approved model reaches traffic and what the serve function captures (used by
    deploy and serve).

    ``strategy`` canary shifts ``step_percent`` for ``interval_minutes`` then the rest;
    linear adds ``step_percent`` every ``interval_minutes``; all_at_once shifts at once.
    The alarms that roll a deployment back: the share of failed requests above
    ``error_rate_threshold``, or a p99 latency above ``p99_latency_ms``.
    ``out_of_domain`` says what serve does with a row outside the spec's bounds or
    categories: ``reject`` it (a 422) or ``accept`` it and flag it.
    """

    model_config = ConfigDict(extra="forbid")

    target: Literal["lambda", "sagemaker_endpoint"] = "lambda"
    strategy: Literal["canary", "linear", "all_at_once"] = "canary"
    step_percent: int = Field(default=10, ge=1, le=99)
    interval_minutes: int = Field(default=5, ge=1, le=2880)
    error_rate_threshold: float = Field(default=0.05, gt=0, lt=1)
    p99_latency_ms: int = Field(default=2000, ge=1)
    # Requests an alarm needs before it may fire: one early failure is not a rate.
    min_requests: int = Field(default=20, ge=1)
    capture_sampling: float = Field(default=1.0, ge=0, le=1)
    capture_batch_rows: int = Field(default=500, ge=1)
    capture_max_seconds: float = Field(default=60.0, gt=0)
    # A row past a bound or outside a category's values: refused with a 422 naming it
    # (reject), or predicted and flagged, counted in /health, captured with its flags and
    # counted by the drift check (accept). Types, nulls, NaN and size caps stay strict.
    out_of_domain: Literal["reject", "accept"] = "reject"
    # sagemaker_endpoint only: models that need a GPU at inference.
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = Field(default=1, ge=1)


class ColumnPrivacy(BaseModel):
    """What the law asks of one column: ``personal_data`` marks a column that identifies
    or describes a person (PDPL), so the compliance report lists where its copies live
    and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    personal_data: bool = False


class DatasetSpec(BaseModel):
    """One dataset's contract. ``schema_doc`` is pandera's YAML form, as a mapping."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str
    version: int = 1
    target: str
    task: Literal["classification", "regression"]
    schema_doc: dict[str, Any] = Field(alias="schema")
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    # Column name -> its privacy marks. Left out of the document (and so of spec_version)
    # when empty: a spec written before the field keeps its version.
    privacy: dict[str, ColumnPrivacy] = Field(
        default_factory=dict, exclude_if=lambda marks: not marks
    )

    @cached_property
    def dataframe_schema(self) -> pa.DataFrameSchema:
        # pandera takes seconds to import; the serve function reads the spec without it.
        import pandera.pandas as pa

        try:
            return pa.DataFrameSchema.from_yaml(yaml.safe_dump(self.schema_doc))
        except Exception as exc:
            raise SpecInvalid(
                f"the schema of spec {self.name!r} is not valid pandera YAML: {exc}",
                hint="regenerate it with `dhow dataset init --force` or fix it by hand",
            ) from exc

    @cached_property
    def column_model(self) -> dict[str, SpecColumn]:
        """Every column of the schema, in the document's order (see the module docstring)."""
        return {
            str(name): SpecColumn.parse(str(name), doc, self.target)
            for name, doc in (self.schema_doc.get("columns") or {}).items()
        }

    @property
    def inputs(self) -> list[SpecColumn]:
        """The columns a request row carries: every one but the target."""
        return [c for c in self.column_model.values() if c.role != "target"]

    @property
    def identifiers(self) -> list[str]:
        """The identifier columns: dropped before training, the key a union is deduped by."""
        return [c.name for c in self.column_model.values() if c.role == "identifier"]

    @cached_property
    def spec_version(self) -> str:
        canonical = json.dumps(self.model_dump(by_alias=True), sort_keys=True, default=str)
        return f"{self.version}+{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"

    @property
    def columns(self) -> list[str]:
        return list(self.dataframe_schema.columns)

    @property
    def personal_data_columns(self) -> list[str]:
        """The columns the spec marks ``personal_data: true``, in the schema's order."""
        marked = {name for name, marks in self.privacy.items() if marks.personal_data}
        return [c for c in (self.schema_doc.get("columns") or {}) if c in marked]

    def to_yaml(self) -> str:
        return yaml.safe_dump(
            self.model_dump(by_alias=True, mode="json"), sort_keys=False, allow_unicode=True
        )


def specs_dir(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``$DHOW_SPECS_DIR``, else the specs shipped in the package."""
    chosen = explicit or os.environ.get(SPECS_DIR)
    return Path(chosen) if chosen else PACKAGED_SPECS


def load_spec(name: str, directory: str | Path | None = None) -> DatasetSpec:
    path = specs_dir(directory) / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in specs_dir(directory).glob("*.yaml"))
        raise UnknownDataset(
            f"no spec for dataset {name!r} in {path.parent}",
            hint=f"create one with `dhow dataset init {name} --from FILE --target COL`"
            + (f"; known datasets: {', '.join(known)}" if known else ""),
        )
    try:
        doc = yaml.safe_load(path.read_text())
        spec = DatasetSpec.model_validate(doc)
    except Exception as exc:
        raise SpecInvalid(f"spec {path} cannot be read: {exc}", hint="fix the YAML") from exc
    if spec.name != name:
        raise SpecInvalid(f"{path} declares name {spec.name!r}", hint=f"set name: {name}")
    # The schema's columns from the document: parsing it with pandera (seconds to
    # import) is left to validation, so the serve function starts without pandera.
    if spec.target not in (spec.schema_doc.get("columns") or {}):
        raise SpecInvalid(f"target {spec.target!r} is not a column of the schema")
    unknown = sorted(set(spec.privacy) - set(spec.schema_doc.get("columns") or {}))
    if unknown:
        raise SpecInvalid(
            f"privacy names columns the schema does not have: {', '.join(unknown)}",
            hint="mark only columns of the schema, spelt as the schema spells them",
        )
    return spec


class SpecCatalog:
    """The specs a stage reads, by dataset name and ``spec_version``.

    ``current`` is the spec deployed with the stack (``specs_dir``): what validate checks
    a new upload against. Validate ``pin``s the exact spec it used, in the models
    container at ``layout.pinned_spec_key``, beside the models trained from it. Every
    later stage asks ``get`` for the version its event (or the model version's lineage)
    names, so a spec edited and deployed since is never applied to data validated, or a
    model trained, under the one before; a version found nowhere is ``SpecVersionUnknown``,
    never the spec on disk in its place. Without a store (``dhow dataset validate``,
    tests) only the spec on disk is known.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        store: ObjectStore | None = None,
        container: str | None = None,
    ) -> None:
        if (store is None) != (container is None):
            raise ValueError("a spec catalog's store and container go together")
        self._directory = directory
        self._store = store
        self._container = container

    def current(self, dataset: str) -> DatasetSpec:
        """The spec on disk now (``UnknownDataset`` when there is none)."""
        return load_spec(dataset, self._directory)

    def pin(self, spec: DatasetSpec) -> ObjectRef | None:
        """Keep ``spec`` as its version's copy (the same bytes each time: a redelivery, or
        two uploads under one version, write the same object)."""
        if self._store is None or self._container is None:
            return None
        ref = ObjectRef(
            container=self._container, key=pinned_spec_key(spec.name, spec.spec_version)
        )
        self._store.put_bytes(
            ref,
            spec.to_yaml().encode(),
            {"spec_version": spec.spec_version},
            content_type="application/yaml",
        )
        return ref

    def get(self, dataset: str, spec_version: str) -> DatasetSpec:
        """The spec of ``dataset`` whose ``spec_version`` is the one asked for: the pinned
        copy, or the spec on disk when it is that version (one validated before specs
        were pinned, and not changed since)."""
        on_disk: DatasetSpec | None = None
        # A dataset whose spec was removed since: its pinned copy may remain.
        with contextlib.suppress(UnknownDataset):
            on_disk = self.current(dataset)
        if on_disk is not None and on_disk.spec_version == spec_version:
            return on_disk
        pinned = self._pinned(dataset, spec_version)
        if pinned is not None:
            return pinned
        now = f"; the spec on disk is {on_disk.spec_version}" if on_disk else ""
        raise SpecVersionUnknown(
            f"no spec {spec_version!r} of dataset {dataset!r} was pinned by validate{now}",
            hint=f"validate the data again under the current spec (upload it again) and "
            f"train from that version, or restore the spec of version {spec_version} in "
            "the specs directory",
        )

    def _pinned(self, dataset: str, spec_version: str) -> DatasetSpec | None:
        if self._store is None or self._container is None:
            return None
        ref = ObjectRef(container=self._container, key=pinned_spec_key(dataset, spec_version))
        try:
            text = b"".join(self._store.iter_chunks(ref)).decode()
        except ObjectMissing:
            return None
        try:
            spec = DatasetSpec.model_validate(yaml.safe_load(text))
        except Exception as exc:
            raise SpecInvalid(
                f"the pinned spec {ref.uri} cannot be read: {exc}",
                hint="validate the data again under the current spec",
            ) from exc
        # The key names a digest of the content: a copy that hashes otherwise was changed.
        if spec.name != dataset or spec.spec_version != spec_version:
            raise SpecInvalid(
                f"the pinned spec {ref.uri} is {spec.name} {spec.spec_version}, "
                f"not {dataset} {spec_version}",
                hint="pinned specs are written by validate only; validate the data again",
            )
        return spec


# A text column is inferred as a category when it has at most this many values and no
# value is seen only once. By Good-Turing, the chance that the next row holds a value the
# sample never showed is about (values seen once) / (rows): with none, the set looks
# closed; with some, it is open (names, ids, free text) and a list would refuse new rows.
MAX_INFERRED_CATEGORIES = 20
_RANGE_CHECKS = (
    "greater_than_or_equal_to",
    "less_than_or_equal_to",
    "greater_than",
    "less_than",
    "in_range",
)


class ColumnInference(BaseModel):
    """What `dhow dataset init` inferred for one column, and why, for the review."""

    column: str
    dtype: str
    checks: dict[str, Any] = Field(default_factory=dict)
    nullable: bool = False
    why: str


class Inference(BaseModel):
    """An inferred spec with the reasons for each column's checks."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spec: DatasetSpec
    rows: int
    columns: list[ColumnInference]

    def review_notes(self) -> str:
        """The reasons as YAML comments, to head the written spec."""
        lines = [f"# Inferred by `dhow dataset init` from {self.rows} rows; review each column:"]
        lines += [f"#   {c.column}: {c.why}" for c in self.columns]
        return "\n".join(lines) + "\n"


_NO_OTHER = "no %s bound: add one if the domain has it"


def _number(x: Any) -> str:
    return f"{float(x):g}"


def _infer_numeric(col: dict[str, Any], values: pd.Series) -> str:
    """A sign where the sample has one, and no other bound: a sample's extremes are not
    its population's, and rows just past them would be refused."""
    if values.empty:
        return "no values in the sample: no bound"
    low, high = values.min(), values.max()
    seen = f"seen {_number(low)} to {_number(high)}"
    if low >= 0:
        col["greater_than_or_equal_to"] = 0.0
        return f">= 0, as every value in the sample is ({seen}); {_NO_OTHER % 'upper'}"
    if high <= 0:
        col["less_than_or_equal_to"] = 0.0
        return f"<= 0, as every value in the sample is ({seen}); {_NO_OTHER % 'lower'}"
    return f"no bound: the sample has both signs ({seen}); add bounds if the domain has them"


def _infer_text(col: dict[str, Any], values: pd.Series) -> str:
    # Text is compared as text; a classification target's classes keep their type.
    counts = (values.astype(str) if values.dtype == object else values).value_counts()
    once = int((counts == 1).sum())
    if counts.empty:
        return "no values in the sample: free text"
    if len(counts) > MAX_INFERRED_CATEGORIES:
        return f"free text: {len(counts)} distinct values, over {MAX_INFERRED_CATEGORIES}"
    if once:
        return (
            f"free text: {once} of its {len(counts)} values are seen only once, so the "
            "sample has not shown them all; list them under isin if the set is closed"
        )
    col["isin"] = sorted(counts.index.tolist())  # Python scalars, for YAML
    return (
        f"category of {len(counts)} values, each seen at least {int(counts.min())} times; "
        "a value outside them is refused"
    )


def infer(
    name: str,
    sample: pd.DataFrame,
    target: str,
    task: Literal["classification", "regression"] | None = None,
    unique: list[str] | None = None,
) -> Inference:
    """A spec from a trusted sample, for a human to review, with the reasons for each check.

    pandera infers the dtypes and nullability. Its bounds, the sample's exact minimum and
    maximum, are replaced by a sign where the sample has one; text columns with a few
    values, each seen more than once, become categories, as do a classification target's
    classes. The schema is made strict (an added column is refused) and the ``unique``
    columns get a uniqueness check.
    """
    if target not in sample.columns:
        raise SpecInvalid(
            f"target {target!r} is not a column of the sample",
            hint=f"columns are: {', '.join(map(str, sample.columns))}",
        )
    for col in unique or []:
        if col not in sample.columns:
            raise SpecInvalid(f"--unique column {col!r} is not in the sample")
    import pandas as pd
    import pandera.pandas as pa

    schema = pa.infer_schema(sample)
    assert isinstance(schema, pa.DataFrameSchema)
    doc = yaml.safe_load(schema.to_yaml() or "")
    doc["strict"] = True
    doc.pop("index", None)  # row order is not part of a dataset's contract
    if task is None:
        y = sample[target]
        discrete = y.dtype == bool or y.dtype == object or pd.api.types.is_integer_dtype(y)
        task = "classification" if discrete and y.nunique() <= 20 else "regression"
    notes = []
    for column, col in doc["columns"].items():
        for check in _RANGE_CHECKS:
            col.pop(check, None)
        values = sample[column].dropna()
        dtype = str(col.get("dtype"))
        is_number = pd.api.types.is_numeric_dtype(sample[column]) and dtype != "bool"
        if column in (unique or []):
            col["unique"] = True
            why = "unique, as --unique asks"
        elif column == target and task == "classification" and dtype != "bool":
            why = "the target: " + _infer_text(col, values).replace("category", "classes", 1)
        elif is_number:
            why = _infer_numeric(col, values)
        elif dtype in ("object", "str", "string"):
            why = _infer_text(col, values)
        elif dtype.startswith("datetime"):
            why = "no bound: the sample's first and last times are not the domain's"
        else:
            why = "type only"
        if col.get("nullable"):
            why += "; nulls allowed, as the sample has some"
        checks = {k: v for k, v in col.items() if k not in ("dtype", "nullable", "title")}
        notes.append(
            ColumnInference(
                column=str(column),
                dtype=dtype,
                checks=checks,
                nullable=bool(col.get("nullable")),
                why=f"{dtype}, {why}",
            )
        )
    spec = DatasetSpec(name=name, target=target, task=task, schema=doc)
    return Inference(spec=spec, rows=len(sample), columns=notes)


def infer_spec(
    name: str,
    sample: pd.DataFrame,
    target: str,
    task: Literal["classification", "regression"] | None = None,
    unique: list[str] | None = None,
) -> DatasetSpec:
    """The spec of :func:`infer`, without the reasons."""
    return infer(name, sample, target, task, unique).spec
