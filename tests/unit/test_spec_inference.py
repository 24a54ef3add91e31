"""Spec inference on public datasets the project has never seen: a spec inferred from one
part of a dataset accepts the rest of it, its text columns with a few values become
categories, and `dhow dataset init` says why it inferred each check."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from dhow_cli import main

from shared.specs import MAX_INFERRED_CATEGORIES, infer, load_spec


def breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    return frame


def wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    frame: pd.DataFrame = load_wine(as_frame=True).frame
    return frame


def tips() -> pd.DataFrame:
    import plotly.data  # type: ignore[import-untyped]  # plotly ships no type hints

    frame: pd.DataFrame = plotly.data.tips()
    return frame


def gapminder() -> pd.DataFrame:
    import plotly.data

    frame: pd.DataFrame = plotly.data.gapminder()
    return frame


# (name, loader, target): scikit-learn's and plotly's own copies of public datasets.
DATASETS: list[tuple[str, Callable[[], pd.DataFrame], str]] = [
    ("breast-cancer", breast_cancer, "target"),
    ("wine", wine, "target"),
    ("tips", tips, "tip"),
    ("gapminder", gapminder, "lifeExp"),
]


def split(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Half the rows, at random, to infer from; the other half held back."""
    order = np.random.default_rng(seed).permutation(len(frame))
    half = len(frame) // 2
    return frame.iloc[order[:half]], frame.iloc[order[half:]]


def init(name: str, sample: Path, target: str, specs: Path) -> dict[str, Any]:
    args = ["dataset", "init", name, "--from", str(sample), "--target", target]
    r = CliRunner().invoke(main, [*args, "--specs-dir", str(specs), "--json"])
    assert r.exit_code == 0, r.output
    out: dict[str, Any] = json.loads(r.output)
    return out


def validate(name: str, file: Path, specs: Path) -> tuple[int, dict[str, Any]]:
    """`dhow dataset validate NAME FILE --json`: its exit code and report."""
    r = CliRunner().invoke(
        main, ["dataset", "validate", name, str(file), "--specs-dir", str(specs), "--json"]
    )
    return r.exit_code, json.loads(r.output)


@pytest.mark.parametrize(("name", "load", "target"), DATASETS, ids=[d[0] for d in DATASETS])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_spec_inferred_from_one_part_accepts_the_held_back_rows(
    tmp_path: Path, name: str, load: Callable[[], pd.DataFrame], target: str, seed: int
) -> None:
    # Before, every numeric bound was the sample's exact minimum and maximum, so held-back
    # rows of the same population just past them were refused.
    part, held = split(load(), seed)
    part.to_csv(tmp_path / "part.csv", index=False)
    held.to_csv(tmp_path / "held.csv", index=False)
    init(name, tmp_path / "part.csv", target, tmp_path / "specs")
    code, report = validate(name, tmp_path / "held.csv", tmp_path / "specs")
    assert code == 0, report["failure_cases"][:5]
    assert report["ok"]
    assert report["rows_checked"] == len(held)


def test_text_columns_with_a_few_values_become_categories_and_a_typo_is_refused(
    tmp_path: Path,
) -> None:
    part, held = split(tips())
    part.to_csv(tmp_path / "part.csv", index=False)
    out = init("tips", tmp_path / "part.csv", "tip", tmp_path / "specs")
    spec = load_spec("tips", tmp_path / "specs")
    columns = spec.schema_doc["columns"]
    assert columns["sex"]["isin"] == ["Female", "Male"]
    assert columns["smoker"]["isin"] == ["No", "Yes"]
    assert columns["day"]["isin"] == ["Fri", "Sat", "Sun", "Thur"]
    assert columns["time"]["isin"] == ["Dinner", "Lunch"]
    inferred = {c["column"]: c for c in out["inferred"]}
    assert inferred["day"]["checks"] == {"isin": ["Fri", "Sat", "Sun", "Thur"]}

    typo = held.copy()
    typo.loc[typo.index[5], "day"] = "Satt"
    typo.to_csv(tmp_path / "typo.csv", index=False)
    code, report = validate("tips", tmp_path / "typo.csv", tmp_path / "specs")
    assert code == 1
    assert [(f["row"], f["column"], f["value"]) for f in report["failure_cases"]] == [
        (6, "day", "Satt")
    ]
    assert report["failure_cases"][0]["check"].startswith("isin(")


def test_an_open_set_of_text_stays_free_text() -> None:
    frame = gapminder()
    columns = infer("g", frame, "lifeExp").spec.schema_doc["columns"]
    assert columns["continent"]["isin"] == ["Africa", "Americas", "Asia", "Europe", "Oceania"]
    assert "isin" not in columns["country"]  # 142 values: over MAX_INFERRED_CATEGORIES
    assert frame["country"].nunique() > MAX_INFERRED_CATEGORIES
    # A few values, but some seen once: the sample has not shown them all.
    names = pd.DataFrame({"city": ["Dubai", "Dubai", "Al Ain", "Hatta", "Dubai"], "y": range(5)})
    columns = infer("c", names, "y").spec.schema_doc["columns"]
    assert "isin" not in columns["city"]


def test_bounds_are_a_sign_where_the_sample_has_one_and_none_otherwise() -> None:
    frame = pd.DataFrame(
        {
            "spend": [0.0, 12.5, 99.0, 3.25],
            "refund": [-4.0, -1.0, 0.0, -2.5],
            "balance": [-10.0, 5.0, 7.5, 0.0],
            "count": [1, 2, 3, 4],
            "y": [0, 1, 0, 1],
        }
    )
    columns = infer("s", frame, "y").spec.schema_doc["columns"]
    assert {k: v for k, v in columns["spend"].items() if k != "dtype"} == {
        "greater_than_or_equal_to": 0.0
    }
    assert {k: v for k, v in columns["refund"].items() if k != "dtype"} == {
        "less_than_or_equal_to": 0.0
    }
    assert {k: v for k, v in columns["balance"].items() if k != "dtype"} == {}
    assert {k: v for k, v in columns["count"].items() if k != "dtype"} == {
        "greater_than_or_equal_to": 0.0
    }
    assert columns["y"]["isin"] == [0, 1]  # a classification target's classes


def test_init_prints_what_it_inferred_and_why_and_the_spec_carries_it(tmp_path: Path) -> None:
    part, _ = split(tips())
    part.to_csv(tmp_path / "part.csv", index=False)
    specs = str(tmp_path / "specs")
    sample = str(tmp_path / "part.csv")
    r = CliRunner().invoke(
        main,
        ["dataset", "init", "tips", "--from", sample, "--target", "tip", "--specs-dir", specs],
    )
    assert r.exit_code == 0, r.output
    lines = {line.split(":")[0].strip(): line for line in r.output.splitlines()[1:]}
    assert set(lines) == set(tips().columns)
    assert "category of 4 values" in lines["day"]
    assert ">= 0, as every value in the sample is" in lines["total_bill"]
    assert "no upper bound" in lines["total_bill"]
    written = (tmp_path / "specs" / "tips.yaml").read_text()
    assert written.startswith("# Inferred by `dhow dataset init` from 122 rows")
    assert "#   day: object, category of 4 values" in written
    assert set(load_spec("tips", tmp_path / "specs").columns) == set(tips().columns)
