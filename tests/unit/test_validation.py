"""Validation of files against a spec: a table of broken files, each with its reason code,
and the report's independence from the chunk size."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from pandera.errors import SchemaErrors

from shared.specs import UnknownDataset, load_spec
from shared.validation import MAX_BAD_ROWS, FileFormat, validate_file

SAMPLE = Path(__file__).resolve().parents[2] / "localstack/samples/customers.csv"
LINES = SAMPLE.read_text().splitlines()
HEADER, ROWS = LINES[0], LINES[1:]
SPEC = load_spec("customers")


def csv_with(edit: Callable[[list[list[str]]], None], header: str = HEADER) -> bytes:
    rows = [r.split(",") for r in ROWS]
    edit(rows)
    return ("\n".join([header, *(",".join(r) for r in rows)]) + "\n").encode()


def set_cell(row: int, col: int, value: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[row][col] = value

    return edit


def parquet_bytes(df: pd.DataFrame, tmp: Path) -> bytes:
    path = tmp / "x.parquet"
    df.to_parquet(path, index=False)
    return path.read_bytes()


GOOD = pd.read_csv(SAMPLE)

# (name, format, bytes-maker, reason, check expected among the failures or None)
CASES: list[tuple[str, FileFormat, Callable[[Path], bytes], str, str | None]] = [
    (
        "latin-1 text",
        "csv",
        lambda t: csv_with(set_cell(3, 6, "dub\xe9i")).decode().encode("latin-1"),
        "wrong_encoding",
        None,
    ),
    ("ragged row", "csv", lambda t: csv_with(lambda r: r[10].append("extra")), "ragged_rows", None),
    (
        "missing column",
        "csv",
        lambda t: "\n".join(",".join(line.split(",")[:-1]) for line in LINES).encode(),
        "missing_columns",
        None,
    ),
    (
        "added column",
        "csv",
        lambda t: "\n".join(
            line + (",x" if i else ",extra") for i, line in enumerate(LINES)
        ).encode(),
        "unexpected_columns",
        None,
    ),
    (
        "duplicate header",
        "csv",
        lambda t: "\n".join([HEADER + ",age", *(r + ",1" for r in ROWS)]).encode(),
        "duplicate_columns",
        None,
    ),
    ("header only", "csv", lambda t: (HEADER + "\n").encode(), "no_rows", None),
    ("zero bytes", "csv", lambda t: b"", "no_rows", None),
    (
        "text in an int column",
        "csv",
        lambda t: csv_with(set_cell(5, 1, "forty")),
        "schema_checks_failed",
        "coerce_dtype('int64')",
    ),
    (
        "out of range",
        "csv",
        lambda t: csv_with(set_cell(7, 1, "7")),
        "schema_checks_failed",
        "greater_than_or_equal_to(18.0)",
    ),
    (
        "unknown category",
        "csv",
        lambda t: csv_with(set_cell(9, 5, "platinum")),
        "schema_checks_failed",
        "isin(['bronze', 'silver', 'gold'])",
    ),
    (
        "null in a required column",
        "csv",
        lambda t: csv_with(set_cell(11, 6, "")),
        "schema_checks_failed",
        "not_nullable",
    ),
    (
        "duplicate id far apart",
        "csv",
        lambda t: csv_with(set_cell(399, 0, "C00002")),
        "schema_checks_failed",
        "unique",
    ),
    (
        "not a boolean",
        "csv",
        lambda t: csv_with(set_cell(13, 7, "maybe")),
        "schema_checks_failed",
        "coerce_dtype('bool')",
    ),
    (
        "damaged parquet",
        "parquet",
        lambda t: b"PAR1" + b"\x00" * 100 + b"PAR1",
        "unreadable_file",
        None,
    ),
    (
        "parquet with text ages",
        "parquet",
        lambda t: parquet_bytes(
            GOOD.assign(age=GOOD["age"].astype(str).where(GOOD.index != 3, "old")), t
        ),
        "schema_checks_failed",
        "coerce_dtype('int64')",
    ),
    (
        "malformed JSON lines",
        "jsonl",
        lambda t: b'{"customer_id": "C1", "age": 3\n{oops}\n',
        "unreadable_file",
        None,
    ),
    (
        "JSON lines missing columns",
        "jsonl",
        lambda t: b'{"customer_id": "C1", "age": 30}\n{"customer_id": "C2", "age": 31}\n',
        "missing_columns",
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "fmt", "make", "reason", "check"), CASES, ids=[c[0] for c in CASES]
)
def test_broken_files_get_their_reason_code(
    tmp_path: Path,
    name: str,
    fmt: FileFormat,
    make: Callable[[Path], bytes],
    reason: str,
    check: str | None,
) -> None:
    path = tmp_path / f"data.{fmt}"
    path.write_bytes(make(tmp_path))
    run = validate_file(path, fmt, SPEC, chunk_rows=64, out_dir=tmp_path)
    report = run.report
    assert not report.ok
    assert report.reason == reason, report.message
    assert report.message
    assert report.hint
    assert run.curated is None
    assert run.reference is None
    if check is not None:
        assert check in {c.check for c in report.checks}, report.checks
        assert all(f.row is not None for f in report.failure_cases if f.check == check)
    json.loads(report.model_dump_json())  # the report is plain JSON


def test_more_than_twelve_kinds_are_covered() -> None:
    assert len({c[0] for c in CASES}) >= 12


def test_unknown_dataset_says_how_to_create_a_spec() -> None:
    with pytest.raises(UnknownDataset) as info:
        load_spec("no-such-dataset")
    assert "dhow dataset init" in info.value.hint
    assert "customers" in info.value.hint


def test_good_file_is_curated_with_types_and_a_reference_sample(tmp_path: Path) -> None:
    run = validate_file(SAMPLE, "csv", SPEC, chunk_rows=64, out_dir=tmp_path)
    assert run.report.ok
    assert run.report.rows_checked == 400
    assert run.report.chunks == 7
    assert run.curated is not None
    assert run.reference is not None
    curated = pd.read_parquet(run.curated)
    assert len(curated) == 400
    assert curated["has_mobile_app"].dtype == bool
    assert curated["age"].dtype == "int64"
    assert curated["customer_id"].tolist() == GOOD["customer_id"].tolist()  # order kept
    assert len(pd.read_parquet(run.reference)) == 400  # below reference_rows: all of it
    assert run.profile["age"]["count"] == 400
    assert run.profile["segment"]["top"].keys() <= {"bronze", "silver", "gold"}


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 399, 100_000])
def test_report_does_not_depend_on_chunk_size(tmp_path: Path, chunk_rows: int) -> None:
    def many(rows: list[list[str]]) -> None:
        rows[0][0] = rows[399][0]  # duplicate id across the first and last chunk
        rows[50][1] = "7"
        rows[200][5] = "platinum"
        rows[250][7] = "perhaps"

    path = tmp_path / "d.csv"
    path.write_bytes(csv_with(many))
    baseline = validate_file(path, "csv", SPEC, chunk_rows=400).report
    report = validate_file(path, "csv", SPEC, chunk_rows=chunk_rows).report
    assert report.failure_cases == baseline.failure_cases
    assert [(c.column, c.check, c.failures) for c in report.checks] == [
        (c.column, c.check, c.failures) for c in baseline.checks
    ]
    assert [f.row for f in report.failure_cases] == [51, 201, 251, 400]


def test_report_sizes_are_capped_but_counts_exact(tmp_path: Path) -> None:
    def all_bad(rows: list[list[str]]) -> None:
        for r in rows:
            r[1] = "5"

    path = tmp_path / "d.csv"
    path.write_bytes(csv_with(all_bad))
    report = validate_file(path, "csv", SPEC, chunk_rows=50).report
    assert report.failure_count == 400
    assert report.failing_rows == 400
    assert len(report.bad_rows_sample) == MAX_BAD_ROWS
    assert report.checks[0].failures == 400
    assert len(report.checks[0].examples) <= 5


def test_progress_is_reported_per_chunk() -> None:
    seen: list[tuple[int, int]] = []
    validate_file(SAMPLE, "csv", SPEC, chunk_rows=150, on_chunk=lambda r, f: seen.append((r, f)))
    assert seen == [(150, 0), (300, 0), (400, 0)]


def every_problem(tmp: Path, fmt: FileFormat) -> Path:
    """The customers sample without its ``segment`` column, with a wrong type (row 4's
    age), a null (row 11's emirate) and an out-of-range value (row 21's tenure)."""
    frame = GOOD.drop(columns=["segment"]).astype({"age": object, "tenure_months": object})
    frame.loc[3, "age"] = "forty"
    frame.loc[10, "emirate"] = None
    frame.loc[20, "tenure_months"] = -3
    path = tmp / f"every.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.astype({"age": str, "tenure_months": "int64"}).to_parquet(path, index=False)
    return path


EVERY_PROBLEM = {
    (None, None, "column_in_dataframe", "segment"),
    (4, "age", "coerce_dtype('int64')", "forty"),
    (11, "emirate", "not_nullable", None),
    (21, "tenure_months", "greater_than_or_equal_to(0.0)", "-3"),
}


@pytest.mark.parametrize("chunk_rows", [7, 64, 100_000])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_one_report_names_a_missing_column_and_every_bad_value(
    tmp_path: Path, fmt: FileFormat, chunk_rows: int
) -> None:
    # Before, the missing column stopped the read: the report named it alone, and the
    # bad values surfaced only on the next upload.
    report = validate_file(every_problem(tmp_path, fmt), fmt, SPEC, chunk_rows=chunk_rows).report
    assert not report.ok
    assert report.reason == "missing_columns"  # the header's problem is still the code
    assert report.missing_columns == ["segment"]
    assert {(f.row, f.column, f.check, f.value) for f in report.failure_cases} == EVERY_PROBLEM
    assert report.failing_rows == 3
    assert report.failure_count == 4
    assert "segment" in report.message
    assert "3 failure(s) in 3 of 400 rows" in report.message
    assert "add the missing columns" in report.hint
    assert "fix the rows" in report.hint
    assert [r["row"] for r in report.bad_rows_sample] == [4, 11, 21]


def test_the_chunked_report_is_what_pandera_finds_on_the_whole_file(tmp_path: Path) -> None:
    # pandera's own lazy validation of the whole file at once is the oracle: the chunked
    # report holds the same failure cases, the header's among them.
    path = every_problem(tmp_path, "csv")
    ours = validate_file(path, "csv", SPEC, chunk_rows=7).report
    with warnings.catch_warnings():
        # pandera 0.35 concatenates its index-less and per-row cases with a FutureWarning.
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(SchemaErrors) as info:
            SPEC.dataframe_schema.validate(pd.read_csv(path, dtype=str), lazy=True)
    cases = info.value.failure_cases
    uncoerced = set(cases.loc[cases["check"].str.startswith("coerce_dtype"), "column"])
    theirs = {
        (
            None if pd.isna(fc.index) else int(fc.index) + 1,
            fc.column,
            fc.check,
            None if pd.isna(fc.failure_case) else str(fc.failure_case),
        )
        for fc in cases.itertuples(index=False)
        # After a failed coercion pandera also reports the column's dtype and each of its
        # comparisons (as TypeErrors): the same fault, which the report lists once.
        if not (
            fc.column in uncoerced
            and (fc.check.startswith("dtype(") or str(fc.failure_case).startswith("TypeError("))
        )
    }
    assert {(f.row, f.column, f.check, f.value) for f in ours.failure_cases} == theirs


def test_unexpected_columns_and_bad_values_are_reported_together(tmp_path: Path) -> None:
    def notes_and_a_minor(rows: list[list[str]]) -> None:
        for r in rows:
            r.append("x")
        rows[5][1] = "7"

    path = tmp_path / "extra.csv"
    path.write_bytes(csv_with(notes_and_a_minor, header=HEADER + ",notes"))
    report = validate_file(path, "csv", SPEC, chunk_rows=64).report
    assert report.reason == "unexpected_columns"
    assert report.unexpected_columns == ["notes"]
    assert {(f.row, f.column, f.check, f.value) for f in report.failure_cases} == {
        (None, None, "column_in_schema", "notes"),
        (6, "age", "greater_than_or_equal_to(18.0)", "7"),
    }


def test_a_missing_unique_column_leaves_the_other_checks_running(tmp_path: Path) -> None:
    frame = GOOD.drop(columns=["customer_id"])
    frame.loc[2, "segment"] = "platinum"
    path = tmp_path / "no-id.csv"
    frame.to_csv(path, index=False)
    report = validate_file(path, "csv", SPEC, chunk_rows=64).report
    assert report.missing_columns == ["customer_id"]
    assert {(f.row, f.check) for f in report.failure_cases} == {
        (None, "column_in_dataframe"),
        (3, "isin(['bronze', 'silver', 'gold'])"),
    }


def test_a_read_that_stops_is_named_beside_the_header_problems(tmp_path: Path) -> None:
    # A column added to the header but to no row: the rows are ragged. Both are said.
    path = tmp_path / "added.csv"
    path.write_text(f"{HEADER},notes\n{ROWS[0]}\n")
    report = validate_file(path, "csv", SPEC).report
    assert report.reason == "unexpected_columns"
    assert "notes" in report.message
    assert "Expected 10 columns, got 9" in report.message
    assert "every CSV row must have as many fields" in report.hint
