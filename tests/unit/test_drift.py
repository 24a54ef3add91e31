"""Our drift verdict against a real evidently 0.7 run on the same frames.

evidently's ``DataDriftPreset`` gives each column's statistic and the drifted
count; its ``DataDriftTable`` (the same computation, legacy API) gives each
column's test, threshold and verdict. Ours must equal both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.drift import ColumnKind, DriftVerdict, compare, feature_kinds
from shared.specs import load_spec
from tests.helpers import ROOT


def numeric(n: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "spend": rng.lognormal(5 + shift, 0.5, n),
            "age": rng.integers(18, 80 + int(40 * shift), n),
            "score": rng.normal(600 * (1 + shift), 80, n),
            "calls": rng.poisson(1 + 3 * shift, n),  # few distinct values
            "flag": rng.integers(0, 2, n),  # two values: Z or Jensen-Shannon
        }
    )


def categorical(n: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    emirates = np.array(["abu-dhabi", "dubai", "sharjah", "ajman", "fujairah"])
    weights = np.array([0.3, 0.4, 0.15, 0.1, 0.05])
    shifted = (1 - shift) * weights + shift * weights[::-1]
    return pd.DataFrame(
        {
            "emirate": rng.choice(emirates, n, p=shifted / shifted.sum()),
            "segment": rng.choice(
                ["bronze", "silver", "gold"], n, p=[0.5, 0.3 + shift / 4, 0.2 - shift / 4]
            ),
            "has_app": rng.random(n) < 0.6 - shift / 3,
            "plan": rng.choice(["prepaid", "postpaid"], n),
        }
    )


def mixed_with_nulls(n: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.concat([numeric(n, seed, shift), categorical(n, seed + 7, shift)], axis=1)
    df["calls"] = df["calls"].astype("float64")
    df["has_app"] = df["has_app"].astype(object)
    for col, share in [("spend", 0.1), ("emirate", 0.2), ("calls", 0.05), ("has_app", 0.1)]:
        df.loc[rng.random(n) < share, col] = None
    return df


def kinds_of(df: pd.DataFrame) -> dict[str, ColumnKind]:
    return {
        c: ("num" if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool else "cat")
        for c in df.columns
    }


def evidently_run(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    kinds: dict[str, ColumnKind],
    drift_share: float = 0.5,
    methods: dict[str, str] | None = None,
    thresholds: dict[str, float] | None = None,
) -> tuple[dict[str, float], float, dict[str, dict[str, Any]], bool]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics import DataDriftTable
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report as LegacyReport
    from evidently.presets import DataDriftPreset

    num = [c for c, k in kinds.items() if k == "num"]
    cat = [c for c, k in kinds.items() if k == "cat"]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    preset = DataDriftPreset(
        drift_share=drift_share, per_column_method=methods, per_column_threshold=thresholds
    )
    snap = Report([preset]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    values: dict[str, float] = {}
    share = -1.0
    for m in snap.dict()["metrics"]:
        if m["config"]["type"].endswith("ValueDrift"):
            values[m["config"]["column"]] = float(m["value"])
        else:
            share = float(m["value"]["share"])
    legacy = LegacyReport(
        metrics=[
            DataDriftTable(per_column_stattest=methods, per_column_stattest_threshold=thresholds)
        ]
    )
    legacy.run(
        reference_data=ref,
        current_data=cur,
        column_mapping=ColumnMapping(numerical_features=num, categorical_features=cat),
    )
    result = legacy.as_dict()["metrics"][0]["result"]
    dataset_drift = share >= drift_share
    return values, share, result["drift_by_columns"], dataset_drift


def assert_same_as_evidently(
    ours: DriftVerdict,
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    kinds: dict[str, ColumnKind],
    **options: Any,
) -> None:
    values, share, table, dataset_drift = evidently_run(ref, cur, kinds, **options)
    assert {c.column for c in ours.columns} == set(values)
    for col in ours.columns:
        theirs = table[col.column]
        assert col.statistic == pytest.approx(values[col.column], rel=1e-6, abs=1e-9), col
        assert col.statistic == pytest.approx(theirs["drift_score"], rel=1e-6, abs=1e-9), col
        assert col.threshold == theirs["stattest_threshold"], col
        assert col.drifted == theirs["drift_detected"], (col, theirs)
    assert ours.drift_share == pytest.approx(share)
    assert (ours.verdict == "drift") == dataset_drift


DATASETS = [numeric, categorical, mixed_with_nulls]
# (reference rows, current rows): evidently tests below 1,000 reference rows and
# measures distances above; the shift is none, slight and strong.
SIZES = [(600, 400), (3000, 2500)]


@pytest.mark.parametrize("make", DATASETS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"ref{s[0]}")
@pytest.mark.parametrize("shift", [0.0, 0.08, 0.5])
def test_statistics_and_verdicts_equal_evidentlys(
    make: Any, sizes: tuple[int, int], shift: float
) -> None:
    ref, cur = make(sizes[0], 1, 0.0), make(sizes[1], 2, shift)
    kinds = kinds_of(ref)
    ours = compare(ref, cur, kinds)
    assert_same_as_evidently(ours, ref, cur, kinds)
    if shift == 0.5:
        assert ours.verdict == "drift"
        assert ours.drifted_columns


def test_the_test_follows_the_reference_size_as_evidentlys_does() -> None:
    small = compare(numeric(600, 1, 0), numeric(400, 2, 0), kinds_of(numeric(10, 1, 0)))
    large = compare(numeric(3000, 1, 0), numeric(400, 2, 0), kinds_of(numeric(10, 1, 0)))
    assert {c.column: c.stattest for c in small.columns} == {
        "spend": "ks",
        "age": "ks",
        "score": "ks",
        "calls": "ks",
        "flag": "z",
    }
    assert {c.column: c.stattest for c in large.columns} == {
        "spend": "wasserstein",
        "age": "wasserstein",
        "score": "wasserstein",
        "calls": "wasserstein",
        "flag": "jensenshannon",
    }


def test_spec_overrides_of_tests_and_thresholds_match_evidentlys() -> None:
    ref, cur = mixed_with_nulls(3000, 1, 0.0), mixed_with_nulls(2000, 2, 0.08)
    kinds = kinds_of(ref)
    # psi is not one of ours: evidently's own test is called for it.
    methods = {"spend": "ks", "emirate": "chisquare", "score": "psi", "age": "jensenshannon"}
    thresholds = {"spend": 0.2, "emirate": 0.01, "age": 0.02}
    ours = compare(ref, cur, kinds, stattests=methods, thresholds=thresholds, drift_share=0.3)
    by = {c.column: c for c in ours.columns}
    assert by["spend"].stattest == "ks"
    assert by["spend"].threshold == 0.2
    assert by["score"].stattest == "psi"
    assert_same_as_evidently(
        ours, ref, cur, kinds, drift_share=0.3, methods=methods, thresholds=thresholds
    )


def test_infinities_count_as_nulls() -> None:
    # evidently's drift tests drop infinities with the nulls, but its plots fail on them
    # ("autodetected range ... is not finite"), so this is checked against ours.
    ref, cur = mixed_with_nulls(3000, 1, 0.0), mixed_with_nulls(2000, 2, 0.08)
    kinds = kinds_of(ref)
    hit = np.random.default_rng(3).random(len(cur)) < 0.05
    with_inf, with_nan = cur.copy(), cur.copy()
    with_inf.loc[hit, "score"] = np.inf
    with_nan.loc[hit, "score"] = np.nan
    assert compare(ref, with_inf, kinds) == compare(ref, with_nan, kinds)


def test_too_few_current_rows_is_insufficient_data_never_an_alarm() -> None:
    ref = numeric(3000, 1, 0.0)
    cur = numeric(150, 2, 3.0)  # wildly shifted, but only 150 rows
    verdict = compare(ref, cur, kinds_of(ref), min_rows=200)
    assert verdict.verdict == "insufficient_data"
    assert verdict.columns == []
    assert verdict.drifted_columns == []
    assert verdict.current_rows == 150
    assert verdict.min_rows == 200
    # The same rows with a lower bar are a drift.
    assert compare(ref, cur, kinds_of(ref), min_rows=100).verdict == "drift"


def test_an_unknown_test_name_says_what_to_use() -> None:
    from shared.drift import UnknownStattest

    ref = numeric(300, 1, 0.0)
    with pytest.raises(UnknownStattest, match="no-such-test") as err:
        compare(ref, ref, kinds_of(ref), stattests={"spend": "no-such-test"})
    assert "wasserstein" in (err.value.hint or "")


def test_features_come_from_the_spec_without_target_or_identifiers() -> None:
    spec = load_spec("customers", ROOT / "shared" / "specs")
    assert feature_kinds(spec) == {
        "age": "num",
        "tenure_months": "num",
        "monthly_spend_aed": "num",
        "support_calls": "num",
        "segment": "cat",
        "emirate": "cat",
        "has_mobile_app": "cat",
    }


def test_a_captured_value_never_becomes_script_of_the_stored_report() -> None:
    from html.parser import HTMLParser

    from shared.drift_report import render_html

    hostile = "</script><script>alert(1)</script>"
    ref = categorical(300, 0, 0.0)
    cur = categorical(300, 1, 0.0)
    for frame in (ref, cur):  # a value of both sides, so the test has no empty bin
        frame["emirate"] = frame["emirate"].astype(object)
        frame.loc[frame.index[:50], "emirate"] = hostile
    kinds = kinds_of(ref)
    verdict = compare(ref, cur, kinds)
    page = render_html(ref, cur, kinds, verdict, "customers", sample_rows=300).decode()

    class Scripts(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.bodies: list[str] = []
            self._in = False

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            self._in = tag == "script"
            if self._in:
                self.bodies.append("")

        def handle_endtag(self, tag: str) -> None:
            self._in = False

        def handle_data(self, data: str) -> None:
            if self._in:
                self.bodies[-1] += data

    parser = Scripts()
    parser.feed(page)
    assert parser.bodies, "evidently's report has its scripts"
    assert not [b for b in parser.bodies if b.strip().startswith("alert(1)")]
    assert "alert(1)" in page  # the value is still shown, as text


def test_the_report_runs_only_the_scripts_evidently_wrote() -> None:
    """Escaping keeps a value from opening a script; the report's CSP is the second wall:
    only the scripts evidently wrote run (each by its hash), no inline handler, nothing
    fetched from elsewhere, so a value that got past the escaping would still not run."""
    import base64
    import hashlib
    import re

    from shared.drift_report import render_html

    hostile = '"><img src=x onerror=alert(1)></script><script>alert(2)</script>'
    ref, cur = categorical(300, 0, 0.0), categorical(300, 1, 0.0)
    for frame in (ref, cur):
        frame["emirate"] = frame["emirate"].astype(object)
        frame.loc[frame.index[:50], "emirate"] = hostile
    kinds = kinds_of(ref)
    page = render_html(ref, cur, kinds, compare(ref, cur, kinds), "customers", 300).decode()
    metas = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert len(metas) == 1
    assert page.index(metas[0]) < page.index("<script>")
    policy = dict(([*d.split(" ", 1), ""])[:2] for d in metas[0].replace("&#x27;", "'").split("; "))
    assert policy["default-src"] == "'none'"
    allowed = set(policy["script-src"].split())
    assert not allowed & {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "https:"}

    def digest(body: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"

    bodies = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert bodies
    assert {digest(b) for b in bodies} == allowed
    assert digest("alert(2)") not in allowed
    assert policy["connect-src"] == "'none'"
    assert policy["form-action"] == "'none'"


def test_the_report_s_headers_are_ones_both_stores_can_carry() -> None:
    """S3 and Blob storage keep a content type and a disposition with the object and send
    them back as headers, and have no place for a CSP (facts aws.s3.object_response_headers,
    azure.blob.content_settings): read from botocore's S3 model and the Azure SDK's
    ContentSettings, not from our own list. Hence the CSP lives in the page itself."""
    import inspect

    import botocore.session
    from azure.storage.blob import ContentSettings

    from shared.cloud_facts import value

    put = botocore.session.get_session().get_service_model("s3").operation_model("PutObject")
    assert put.input_shape is not None
    members = set(put.input_shape.members)
    assert set(value("aws.s3.object_response_headers")) <= members
    assert {"ContentType", "ContentDisposition"} <= members
    assert not [m for m in members if "security" in m.lower() or "csp" in m.lower()]
    params = set(inspect.signature(ContentSettings.__init__).parameters) - {"self", "kwargs"}
    assert set(value("azure.blob.content_settings")) == params
