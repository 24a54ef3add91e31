"""The drift verdict: evidently's per-column tests and dataset rule, on numpy arrays.

evidently's ``DataDriftPreset`` picks a test per column, runs it, and calls the
dataset drifted when the share of drifted columns reaches ``drift_share``. It
also computes correlations, histograms and plots for every column, twice, which
is most of its time (78 s for 1M rows x 20 columns on the development machine),
and importing it costs seconds and about 1 GB installed. This module computes the
same verdict without it:

- the test per column is evidently's default choice (``_get_default_stattest``):
  a reference of up to 1,000 rows gets KS (numeric), chi-squared (more than two
  values) or Z (two values); above that, normed Wasserstein (numeric with more
  than five values) or Jensen-Shannon (the rest); the spec may name another test
  and threshold per column;
- the five default tests are evidently's formulas on cleaned numpy arrays, each
  sorted or counted once, with the same scipy calls evidently makes; any other
  test name is evidently's own test, called directly on the column;
- nulls and infinities are dropped per column first, as evidently does.

``tests/unit/test_drift.py`` holds the statistics to evidently's to 1e-6 and
every verdict equal, on numeric, categorical and mixed data with nulls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from shared.errors import DhowError
from shared.reasons import Reason

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from shared.specs import DatasetSpec

ColumnKind = Literal["num", "cat"]
Verdict = Literal["no_drift", "drift", "insufficient_data"]

# evidently's switch between small-sample tests and distances.
SMALL_REFERENCE_ROWS = 1000


class UnknownStattest(DhowError):
    """A spec names a drift test that neither Dhow nor evidently knows."""

    reason = Reason.UNKNOWN_STATTEST


class ColumnDrift(BaseModel):
    """One column's test: which, its statistic, the threshold and the verdict."""

    model_config = ConfigDict(frozen=True)

    column: str
    kind: ColumnKind
    stattest: str
    statistic: float
    threshold: float
    drifted: bool
    reference_rows: int  # non-null values compared
    current_rows: int


@dataclass(frozen=True)
class _Test:
    default_threshold: float
    # (reference, current) -> statistic; a drift when ``drifted(statistic, threshold)``.
    statistic: Callable[[_Column, _Column], float]
    drifted: Callable[[float, float], bool]


@dataclass
class _Column:
    """One side of a column, cleaned, with what the tests need computed once."""

    values: NDArray[Any]
    kind: ColumnKind
    _sorted: NDArray[Any] | None = None
    _counts: dict[Any, int] | None = None

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def sorted(self) -> NDArray[Any]:
        if self._sorted is None:
            self._sorted = np.sort(self.values)
        return self._sorted

    @property
    def counts(self) -> dict[Any, int]:
        if self._counts is None:
            vc = pd.Series(self.values, copy=False).value_counts(sort=False, dropna=True)
            self._counts = dict(zip(vc.index.tolist(), vc.to_numpy().tolist(), strict=True))
        return self._counts

    def distinct(self) -> NDArray[Any] | set[Any]:
        if self.kind == "num":
            s = self.sorted
            return s[np.concatenate(([True], s[1:] != s[:-1]))] if s.size else s
        return set(self.counts)


def _clean(series: pd.Series, kind: ColumnKind) -> _Column:
    if kind == "num":
        arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return _Column(arr[np.isfinite(arr)], kind)
    s = series[series.notna()]
    if pd.api.types.is_float_dtype(s.dtype):
        s = s[np.isfinite(s.to_numpy())]
    return _Column(s.to_numpy(), kind)


def _n_values(ref: _Column, cur: _Column) -> int:
    """Distinct non-null values of both sides together (evidently's ``n_values``)."""
    a, b = ref.distinct(), cur.distinct()
    if isinstance(a, set) and isinstance(b, set):
        return len(a | b)
    assert not isinstance(a, set)
    assert not isinstance(b, set)
    return int(np.union1d(a, b).size)


def _keys(ref: _Column, cur: _Column) -> list[Any]:
    return list(set(ref.counts) | set(cur.counts))


# --- the five default tests, as evidently defines them -----------------------------


def _wasserstein(ref: _Column, cur: _Column) -> float:
    # evidently: scipy.stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001);
    # scipy's 1-D distance is the integral of |CDF_ref - CDF_cur|, done here on the
    # arrays sorted once.
    u, v = ref.sorted, cur.sorted
    both = np.sort(np.concatenate((u, v)), kind="stable")  # two sorted runs: a merge
    deltas = np.diff(both)
    u_cdf = np.searchsorted(u, both[:-1], side="right") / u.size
    v_cdf = np.searchsorted(v, both[:-1], side="right") / v.size
    distance = float(np.sum(np.abs(u_cdf - v_cdf) * deltas))
    return distance / max(float(np.std(ref.values)), 0.001)


def _jensenshannon(ref: _Column, cur: _Column) -> float:
    from scipy.spatial import distance

    if ref.kind == "num" and len(ref.distinct()) > 20:
        bins = np.histogram_bin_edges(np.concatenate((ref.values, cur.values)), bins="sturges")
        p = np.histogram(ref.values, bins)[0] / ref.n
        q = np.histogram(cur.values, bins)[0] / cur.n
    else:
        keys = _keys(ref, cur)
        p = np.array([ref.counts.get(k, 0) / ref.n for k in keys])
        q = np.array([cur.counts.get(k, 0) / cur.n for k in keys])
    return float(distance.jensenshannon(p, q))


def _ks(ref: _Column, cur: _Column) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(ref.values, cur.values)[1])


def _chisquare(ref: _Column, cur: _Column) -> float:
    from scipy.stats import chisquare

    keys = _keys(ref, cur)
    k_norm = cur.n / ref.n
    f_exp = [ref.counts.get(k, 0) * k_norm for k in keys]
    f_obs = [cur.counts.get(k, 0) for k in keys]
    return float(chisquare(f_obs, f_exp)[1])


def _z(ref: _Column, cur: _Column) -> float:
    from scipy.stats import norm

    rk, ck = set(ref.counts), set(cur.counts)
    if len(rk) == 1 and len(ck) == 1 and rk == ck:
        return 1.0
    first = sorted(rk | ck)[0]
    # The share of values other than the smallest, on each side.
    p1 = (ref.n - ref.counts.get(first, 0)) / ref.n
    p2 = (cur.n - cur.counts.get(first, 0)) / cur.n
    pooled = (p1 * ref.n + p2 * cur.n) / (ref.n + cur.n)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / ref.n + 1.0 / cur.n))
    return float(2 * (1 - norm.cdf(np.abs(z))))


def _at_least(stat: float, threshold: float) -> bool:
    return stat >= threshold


def _p_at_most(stat: float, threshold: float) -> bool:
    return stat <= threshold


def _p_below(stat: float, threshold: float) -> bool:
    return stat < threshold


TESTS: dict[str, _Test] = {
    "wasserstein": _Test(0.1, _wasserstein, _at_least),
    "jensenshannon": _Test(0.1, _jensenshannon, _at_least),
    "ks": _Test(0.05, _ks, _p_at_most),
    "chisquare": _Test(0.05, _chisquare, _p_below),
    "z": _Test(0.05, _z, _p_below),
}


def default_stattest(ref: _Column, cur: _Column) -> str:
    """evidently 0.7's ``_get_default_stattest`` for numerical and categorical columns."""
    n_values = _n_values(ref, cur)
    if ref.n <= SMALL_REFERENCE_ROWS:
        if ref.kind == "num" and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if ref.kind == "num" and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def _evidently_test(name: str, kind: ColumnKind) -> tuple[Any, Any]:
    """evidently's own registered test of that name and the column type to call it with
    (evidently is imported only when a spec names such a test)."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Numerical if kind == "num" else ColumnType.Categorical
    try:
        return get_registered_stattest(name, ctype), ctype
    except ValueError as exc:
        raise UnknownStattest(
            f"drift test {name!r} is not known for a {kind} column: {exc}",
            hint="use one of evidently's test names (wasserstein, jensenshannon, ks, "
            "chisquare, z, psi, kl_div, ...) in the spec's drift.stattests",
        ) from exc


def column_drift(
    name: str,
    reference: pd.Series,
    current: pd.Series,
    kind: ColumnKind,
    stattest: str | None = None,
    threshold: float | None = None,
) -> ColumnDrift:
    ref, cur = _clean(reference, kind), _clean(current, kind)
    if ref.n == 0 or cur.n == 0:
        side = "reference" if ref.n == 0 else "current"
        raise DhowError(
            f"column {name!r} has no non-null values in the {side} data",
            reason=Reason.EMPTY_COLUMN,
            hint="a column that is always null cannot be tested; leave it out of the spec",
        )
    test_name = stattest or default_stattest(ref, cur)
    test = TESTS.get(test_name)
    if test is not None:
        limit = test.default_threshold if threshold is None else threshold
        stat = test.statistic(ref, cur)
        drifted = test.drifted(stat, limit)
    else:
        ev, ctype = _evidently_test(test_name, kind)
        result = ev(pd.Series(ref.values), pd.Series(cur.values), ctype, threshold)
        stat, limit, drifted = result.drift_score, result.actual_threshold, result.drifted
    return ColumnDrift(
        column=name,
        kind=kind,
        stattest=test_name,
        statistic=float(stat),
        threshold=float(limit),
        drifted=bool(drifted),
        reference_rows=ref.n,
        current_rows=cur.n,
    )


class DriftVerdict(BaseModel):
    """The dataset's verdict and every column's test."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    drift_share: float | None  # share of drifted columns
    drift_share_threshold: float
    drifted_columns: list[str]
    columns: list[ColumnDrift]
    reference_rows: int
    current_rows: int
    min_rows: int
    # Current rows the serve function flagged outside the spec's bounds or categories
    # (serving.out_of_domain: accept). Reported beside the verdict; the tests above run
    # on every current row, flagged or not.
    out_of_domain_rows: int = 0


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: Mapping[str, ColumnKind],
    *,
    drift_share: float = 0.5,
    stattests: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    min_rows: int = 1,
) -> DriftVerdict:
    """Test every column of ``kinds``; the dataset drifts when the share reaches ``drift_share``.

    Fewer than ``min_rows`` current rows is ``insufficient_data``: no test is run, so
    a quiet hour can never raise a false alarm.
    """
    base: dict[str, Any] = {
        "drift_share_threshold": drift_share,
        "reference_rows": len(reference),
        "current_rows": len(current),
        "min_rows": min_rows,
    }
    if len(current) < min_rows or len(reference) == 0:
        return DriftVerdict(
            verdict="insufficient_data", drift_share=None, drifted_columns=[], columns=[], **base
        )
    missing = [c for c in kinds if c not in current.columns or c not in reference.columns]
    if missing:
        raise DhowError(
            f"columns {missing} are missing from the reference or the captured data",
            reason=Reason.DRIFT_COLUMNS_MISSING,
            hint="the spec changed since the champion was trained; retrain on the new spec",
        )
    stattests, thresholds = stattests or {}, thresholds or {}
    results = [
        column_drift(
            col, reference[col], current[col], kind, stattests.get(col), thresholds.get(col)
        )
        for col, kind in kinds.items()
    ]
    drifted = [r.column for r in results if r.drifted]
    share = len(drifted) / len(results) if results else 0.0
    return DriftVerdict(
        verdict="drift" if results and share >= drift_share else "no_drift",
        drift_share=share,
        drifted_columns=drifted,
        columns=results,
        **base,
    )


def feature_kinds(spec: DatasetSpec) -> dict[str, ColumnKind]:
    """The columns a model sees, numeric or categorical, from the spec's column model.

    The target is not an input, and identifiers always look new, so neither is tested.
    Datetime and duration columns are left out (evidently skips them too).
    """
    return {
        col.name: "num" if col.numeric else "cat"
        for col in spec.column_model.values()
        if col.role == "feature" and col.kind not in ("datetime", "duration")
    }
