"""Chunked validation of a dataset file against its spec, in bounded memory.

The file is streamed with pyarrow in chunks of ``chunk_rows`` rows; each chunk
is validated lazily by pandera (every failing check and row, not just the
first) and the results are merged into one report. Uniqueness is checked by
us across chunks, on 64-bit hashes of the values, so a duplicate is found
whichever chunks its two rows fall in, and the report is the same whatever
the chunk size. Passing chunks are written to the curated Parquet file as
they go; a bottom-k random sample of rows becomes the drift reference.

This module reads and writes local files only; the service moves them.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import gc
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pyarrow_lib
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from pandera.errors import SchemaErrors
from pydantic import BaseModel, Field

from shared.reasons import Reason, reason_of
from shared.specs import DatasetSpec

MAX_FAILURE_CASES = 1000
MAX_BAD_ROWS = 20
MAX_EXAMPLES_PER_CHECK = 5
MAX_PROFILE_CATEGORIES = 50
# A hostile header (500,000 columns, or one name 200,000 times) must cost linear time and
# leave a bounded report: the lists name at most MAX_LISTED_COLUMNS, and a file with more
# than MAX_COLUMNS columns, or a CSV header line over MAX_HEADER_BYTES, is refused whole.
MAX_LISTED_COLUMNS = 100
MAX_COLUMNS = 10_000
MAX_HEADER_BYTES = 1024 * 1024
# A Parquet row group or batch that decodes past this (or a column that decompresses
# more than MAX_COMPRESSION_RATIO-fold) is refused before it is decoded: a dictionary or
# zstd bomb of a few KiB can otherwise ask for gigabytes per batch.
MAX_DECODED_BATCH_BYTES = 512 * 1024**2
MAX_COMPRESSION_RATIO = 1000
GC_EVERY_ROWS = 100_000
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}

FileFormat = Literal["csv", "parquet", "jsonl"]


class FailureCase(BaseModel):
    """One failing value: data row number (1-based, header excluded), column, check."""

    row: int | None
    column: str | None
    check: str
    value: str | None


class CheckSummary(BaseModel):
    column: str | None
    check: str
    failures: int
    examples: list[str | None] = Field(default_factory=list)


class ValidationReport(BaseModel):
    """What ``<key>.report.json`` holds, and what `dhow dataset validate` prints."""

    dataset: str
    spec_version: str
    ok: bool
    reason: str | None = None
    message: str = ""
    hint: str = ""
    rows_checked: int = 0
    failing_rows: int = 0
    failure_count: int = 0
    checks: list[CheckSummary] = Field(default_factory=list)
    failure_cases: list[FailureCase] = Field(default_factory=list)
    failure_cases_truncated: bool = False
    bad_rows_sample: list[dict[str, Any]] = Field(default_factory=list)
    missing_columns: list[str] = Field(default_factory=list)
    unexpected_columns: list[str] = Field(default_factory=list)
    # How many there were: the lists above name at most MAX_LISTED_COLUMNS of them.
    unexpected_column_count: int = 0
    duplicate_column_count: int = 0
    chunks: int = 0


@dataclass(frozen=True)
class ValidationProgress:
    """Where a validation is, for a progress display: rows and failures so far, and the
    share of the file's rows checked (0..1), from which a display estimates the time left."""

    rows: int
    failures: int
    read_fraction: float


def estimated_rows(path: Path, fmt: FileFormat) -> int:
    """The file's rows, before reading them: the footer's count for Parquet; for text, its
    lines (less CSV's header). A quoted newline in a CSV counts one row too many, so the
    estimate errs towards more work left, never less. (pyarrow's readers run blocks ahead
    of the rows they hand out, so their file offset says little about the rows checked.)"""
    if fmt == "parquet":
        with _arrow_errors():
            return int(pq.read_metadata(path).num_rows)
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    lines += last != b"\n"  # a last line without its newline
    return max(lines - (fmt == "csv"), 0)


@dataclass
class ValidationRun:
    report: ValidationReport
    curated: Path | None = None
    reference: Path | None = None
    profile: dict[str, Any] = field(default_factory=dict)


class FileUnreadable(Exception):
    """The file cannot be read as its format; carries the reason code that says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _arrow_reason(exc: Exception) -> Reason:
    text = str(exc)
    if "Expected" in text and "columns, got" in text:
        return Reason.RAGGED_ROWS
    if "UTF8" in text or "UTF-8" in text or "utf-8" in text:
        return Reason.WRONG_ENCODING
    if "Empty CSV file" in text:
        return Reason.NO_ROWS
    return Reason.UNREADABLE_FILE


# pyarrow's JSON reader recurses in C for each level of nesting: a row 100,000 deep kills
# the process (SIGSEGV, exit 139) and 10,000 deep takes seconds. A dataset's columns are
# scalars, so no legitimate row needs more than a few levels.
MAX_JSON_DEPTH = 64
_SCAN_BYTES = 1 << 20
_BS, _QUOTE, _NL = ord("\\"), ord('"'), ord("\n")
_STEP = np.zeros(256, dtype=np.int64)  # +1 opens a level, -1 closes one
_STEP[[ord("{"), ord("[")]] = 1
_STEP[[ord("}"), ord("]")]] = -1
_TOKEN = (_STEP != 0) | np.isin(np.arange(256), [_QUOTE, _NL])


def _real_quotes(a: np.ndarray, is_bs: np.ndarray, backslashes: int) -> np.ndarray:
    """Quotes not escaped: those after an even run of backslashes (the run may have
    begun ``backslashes`` bytes before this window). Only quotes right after a
    backslash are looked at, and their runs measured to the byte before the run."""
    quote = np.asarray(a == _QUOTE)
    after_bs = np.flatnonzero(quote[1:] & is_bs[:-1]) + 1
    if backslashes and quote[0]:
        after_bs = np.concatenate(([0], after_bs))
    if not len(after_bs):
        return quote
    plain = np.flatnonzero(~is_bs)  # every quote is among them
    i = np.searchsorted(plain, after_bs)
    before = np.where(i > 0, plain[np.maximum(i - 1, 0)], -1 - backslashes)
    run = after_bs - before - 1
    quote[after_bs[run % 2 == 1]] = False
    return quote


def check_json_lines(path: Path, max_row_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON Lines file with a row nested over ``max_depth`` or longer than
    ``max_row_bytes``, before any parser sees it; in linear time and bounded memory.

    The file is scanned a MiB at a time with numpy, carrying the open row's depth,
    quote parity and trailing backslashes across windows, so brackets inside strings
    (and escaped quotes) do not count. Each line starts afresh, as each is its own row.
    Only the bytes that matter (brackets, quotes, newlines) are followed past the first
    pass, and the escape analysis runs only on windows that hold a backslash.
    """
    depth = parity = backslashes = line_len = 0
    with path.open("rb") as f:
        while block := f.read(_SCAN_BYTES):
            a = np.frombuffer(block, dtype=np.uint8)
            n = len(a)
            is_bs = a == _BS
            has_bs = backslashes > 0 or bool(is_bs.any())
            quote_at = _real_quotes(a, is_bs, backslashes) if has_bs else a == _QUOTE
            pos = np.flatnonzero(_TOKEN[a] & ((a != _QUOTE) | quote_at))
            tok = a[pos]
            newline = tok == _NL
            k = np.arange(len(pos), dtype=np.int64)
            last_nl = np.maximum.accumulate(np.where(newline, k, -1)) if len(k) else k
            seen_nl = last_nl >= 0
            at_nl = np.maximum(last_nl, 0)
            quotes = np.cumsum(tok == _QUOTE, dtype=np.int64)
            open_quotes = (quotes - np.where(seen_nl, quotes[at_nl], -parity)) % 2
            level = np.cumsum(np.where(open_quotes == 1, 0, _STEP[tok]))
            row_depth = level - np.where(seen_nl, level[at_nl], -depth)
            if int(row_depth.max(initial=depth)) > max_depth:
                raise FileUnreadable(
                    Reason.UNREADABLE_FILE, f"a row is nested more than {max_depth} levels deep"
                )
            breaks = pos[newline]
            starts = np.concatenate(([-1 - line_len], breaks))
            longest = int(max(np.diff(starts).max(initial=0) - 1, n - 1 - starts[-1]))
            if longest > max_row_bytes:
                raise FileUnreadable(
                    Reason.UNREADABLE_FILE, f"a row is longer than {max_row_bytes:,} bytes"
                )
            if len(pos):
                depth, parity = int(row_depth[-1]), int(open_quotes[-1])
            line_len = n - 1 - int(breaks[-1]) if len(breaks) else line_len + n
            if is_bs[-1]:
                plain = np.flatnonzero(~is_bs)
                backslashes = n - 1 - int(plain[-1]) if len(plain) else backslashes + n
            else:
                backslashes = 0


def _listed(names: list[str]) -> str:
    """At most MAX_LISTED_COLUMNS names, and how many more the report counts."""
    shown = ", ".join(n[:100] for n in names[:MAX_LISTED_COLUMNS])
    more = len(names) - MAX_LISTED_COLUMNS
    return f"{shown} and {more:,} more (see the report)" if more > 0 else shown


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as f:
        first = f.readline(MAX_HEADER_BYTES + 1)
    if len(first) > MAX_HEADER_BYTES:
        # Before, the header was cut at 1 MiB and the rest of it parsed as data by pyarrow.
        raise FileUnreadable(
            Reason.TOO_MANY_COLUMNS, f"the header line is longer than {MAX_HEADER_BYTES:,} bytes"
        )
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileUnreadable(Reason.WRONG_ENCODING, f"the header is not UTF-8: {exc}") from exc
    if not line.strip():
        raise FileUnreadable(Reason.NO_ROWS, "the file has no header line")
    return next(csv.reader([line]))


def _check_header(columns: list[str], spec: DatasetSpec, report: ValidationReport) -> None:
    # Linear in the header: a Counter, and sets for membership (list.count per column was
    # quadratic: 20,000 columns took 4.5 s).
    if len(columns) > MAX_COLUMNS:
        raise FileUnreadable(
            Reason.TOO_MANY_COLUMNS, f"{len(columns):,} columns, over the {MAX_COLUMNS:,} allowed"
        )
    counts = Counter(columns)
    if len(counts) != len(columns):
        dupes = sorted(c for c, n in counts.items() if n > 1)
        report.duplicate_column_count = len(dupes)
        raise FileUnreadable(Reason.DUPLICATE_COLUMNS, f"columns appear twice: {_listed(dupes)}")
    expected = spec.columns
    report.missing_columns = [c for c in expected if c not in counts]
    if spec.dataframe_schema.strict:
        known = set(expected)
        unexpected = [c for c in columns if c not in known]
        report.unexpected_column_count = len(unexpected)
        report.unexpected_columns = unexpected[:MAX_LISTED_COLUMNS]


def _present(columns: list[str], spec: DatasetSpec) -> list[str]:
    """The spec's columns that the file has, in the spec's order: the ones checks can run on."""
    have = set(columns)
    return [c for c in spec.columns if c in have]


@contextlib.contextmanager
def _arrow_errors() -> Iterator[None]:
    try:
        yield
    except (pyarrow_lib.ArrowInvalid, pyarrow_lib.ArrowException, OSError) as exc:
        raise FileUnreadable(_arrow_reason(exc), str(exc).splitlines()[0][:300]) from exc


def iter_frames(
    path: Path, fmt: FileFormat, spec: DatasetSpec, chunk_rows: int, report: ValidationReport
) -> Iterator[pd.DataFrame]:
    """The file as DataFrames of at most ``chunk_rows`` rows of the spec's columns it has.

    The header is checked before this returns (so ``report`` already names missing and
    unexpected columns); the rows are read as the iterator is consumed. A missing or an
    unexpected column no longer stops the read: every check that can run on the columns
    present still runs, so one report carries every problem of the file.
    """
    with _arrow_errors():
        if fmt == "csv":
            header = _csv_header(path)
            _check_header(header, spec, report)
            present = _present(header, spec)
            # Everything as text: pandera does the typing, so a bad value becomes a
            # failure case on its row instead of an error for the whole file. Columns the
            # spec does not name are parsed (a ragged row is still found) but not kept.
            reader = pa_csv.open_csv(
                path,
                read_options=pa_csv.ReadOptions(
                    block_size=max(1 << 16, chunk_rows * 64), use_threads=False
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={c: pyarrow_lib.string() for c in present},
                    include_columns=present,
                    strings_can_be_null=True,
                ),
            )
            casts = _arrow_casts(spec)
            return _guarded(_rechunk((_typed(b, casts).to_pandas() for b in reader), chunk_rows))
        if fmt == "parquet":
            return _guarded(_parquet_frames(path, spec, chunk_rows, report))
        block_size = max(1 << 16, chunk_rows * 64)
        # pyarrow refuses a row longer than its block anyway; refusing it here bounds
        # the scan, and the depth check keeps its C recursion from crashing us.
        check_json_lines(path, max_row_bytes=block_size)
        json_reader = pa_json.open_json(
            path, read_options=pa_json.ReadOptions(block_size=block_size)
        )
        _check_header(json_reader.schema.names, spec, report)
        present = _present(json_reader.schema.names, spec)
        return _guarded(_rechunk((b.to_pandas()[present] for b in json_reader), chunk_rows))


def _guarded(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """``frames``, with pyarrow's errors while reading turned into FileUnreadable."""
    with _arrow_errors():
        yield from frames


def _check_parquet_sizes(meta: pq.FileMetaData) -> None:
    """Refuse, from the footer alone, row groups that decode to more than we can hold or
    that compression inflates past any honest ratio (a zstd or gzip bomb)."""
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.total_byte_size > MAX_DECODED_BATCH_BYTES:
            raise FileUnreadable(
                Reason.EXPANSION_TOO_LARGE,
                f"row group {i} is {group.total_byte_size:,} bytes uncompressed, over the "
                f"{MAX_DECODED_BATCH_BYTES:,} allowed",
            )
        for j in range(group.num_columns):
            col = group.column(j)
            ratio = col.total_uncompressed_size / max(col.total_compressed_size, 1)
            # A small column may compress any amount (a constant, plain-encoded column of
            # a million zeros does 10,000-fold); only a large one that does is a bomb.
            if ratio > MAX_COMPRESSION_RATIO and col.total_uncompressed_size > 64 * 1024**2:
                raise FileUnreadable(
                    Reason.EXPANSION_TOO_LARGE,
                    f"column {col.path_in_schema} of row group {i} expands {ratio:,.0f}-fold "
                    f"when decompressed, over the {MAX_COMPRESSION_RATIO}-fold allowed",
                )


def _dense_bytes(array: pyarrow_lib.DictionaryArray) -> int:
    """What a dictionary-encoded string column would take once decoded, computed from its
    indices and value lengths without decoding it."""
    lengths = pa_compute.binary_length(array.dictionary)
    return int(pa_compute.sum(pa_compute.take(lengths, array.indices)).as_py() or 0)


def _parquet_frames(
    path: Path, spec: DatasetSpec, chunk_rows: int, report: ValidationReport
) -> Iterator[pd.DataFrame]:
    """The footer's checks and the header's now; the batches of the spec's columns later."""
    probe = pq.ParquetFile(path)
    _check_parquet_sizes(probe.metadata)
    _check_header(probe.schema_arrow.names, spec, report)
    present = _present(probe.schema_arrow.names, spec)
    # Text columns are read as dictionaries (as small as the file's own encoding) so a
    # dictionary of one long value repeated over a batch is measured before it is expanded.
    texts = [
        f.name
        for f in probe.schema_arrow
        if f.name in present
        and (
            pyarrow_lib.types.is_string(f.type)
            or pyarrow_lib.types.is_large_string(f.type)
            or pyarrow_lib.types.is_binary(f.type)
        )
    ]
    return _parquet_batches(pq.ParquetFile(path, read_dictionary=texts), present, chunk_rows)


def _parquet_batches(
    pf: pq.ParquetFile, present: list[str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=present):
        size = batch.nbytes
        arrays = []
        for array in batch.columns:
            if isinstance(array, pyarrow_lib.DictionaryArray):
                size += _dense_bytes(array)
                array = array.dictionary_decode() if size <= MAX_DECODED_BATCH_BYTES else array
            arrays.append(array)
        if size > MAX_DECODED_BATCH_BYTES:
            raise FileUnreadable(
                Reason.EXPANSION_TOO_LARGE,
                f"a batch of {batch.num_rows:,} rows decodes to {size:,} bytes, over the "
                f"{MAX_DECODED_BATCH_BYTES:,} allowed",
            )
        dense = pyarrow_lib.RecordBatch.from_arrays(arrays, names=batch.schema.names)
        try:
            # The pandas metadata of the footer (index, dtypes) is the writer's to set: a
            # malformed one raises anything from JSONDecodeError to TypeError in pyarrow.
            yield dense.replace_schema_metadata(batch.schema.metadata).to_pandas()
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
            raise FileUnreadable(
                Reason.UNREADABLE_FILE, f"the file's pandas metadata is malformed: {exc}"[:300]
            ) from exc


_ARROW_TYPES = {
    "int64": pyarrow_lib.int64(),
    "float64": pyarrow_lib.float64(),
    "bool": pyarrow_lib.bool_(),
}


def _arrow_casts(spec: DatasetSpec) -> dict[str, pyarrow_lib.DataType]:
    return {
        name: _ARROW_TYPES[str(col.dtype)]
        for name, col in spec.dataframe_schema.columns.items()
        if str(col.dtype) in _ARROW_TYPES
    }


def _typed(
    batch: pyarrow_lib.RecordBatch, casts: dict[str, pyarrow_lib.DataType]
) -> pyarrow_lib.RecordBatch:
    """Cast text columns to their spec type in Arrow, which is many times faster than
    pandas. A batch whose column holds a value that does not cast keeps that column
    as text, so pandera (or the boolean parser) reports the value on its row."""
    arrays = []
    for name, array in zip(batch.schema.names, batch.columns, strict=True):
        target = casts.get(name)
        if target is not None:
            with contextlib.suppress(
                pyarrow_lib.ArrowInvalid, pyarrow_lib.ArrowNotImplementedError
            ):
                array = pa_compute.cast(array, target)
        arrays.append(array)
    return pyarrow_lib.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _rechunk(frames: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """Regroup pyarrow's byte-sized blocks into chunks of exactly ``rows`` rows."""
    pending: list[pd.DataFrame] = []
    size = 0
    for frame in frames:
        pending.append(frame)
        size += len(frame)
        while size >= rows:
            joined = pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0]
            yield joined.iloc[:rows].reset_index(drop=True)
            rest = joined.iloc[rows:].reset_index(drop=True)
            pending, size = ([rest] if len(rest) else []), len(rest)
    if size:
        yield pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0]


def _text_to_bool(
    df: pd.DataFrame, schema: pa.DataFrameSchema
) -> tuple[pd.DataFrame, list[tuple[int, str, Any]]]:
    """CSV booleans arrive as text: map the usual spellings, and report the rest.

    pandas would coerce any non-empty string to True, so a "maybe" would pass
    as True; it is reported here instead, as a failed bool coercion.
    """
    bad: list[tuple[int, str, Any]] = []
    for name, col in schema.columns.items():
        if name in df.columns and str(col.dtype) == "bool" and df[name].dtype == object:
            lowered = df[name].str.strip().str.lower()
            is_true, is_false = lowered.isin(_TRUE), lowered.isin(_FALSE)
            unparsed = ~(is_true | is_false) & df[name].notna()
            bad.extend((int(i), name, df.at[i, name]) for i in df.index[unparsed])
            # Unparsed cells become False only so pandera does not report them twice;
            # the chunk already fails, so nothing of it is curated.
            df[name] = is_true.where(df[name].notna(), None).astype(object)
    return df, bad


def _schema_without_uniqueness(
    schema: pa.DataFrameSchema,
) -> tuple[pa.DataFrameSchema, list[list[str]]]:
    """pandera would check uniqueness per chunk only; we check it across chunks instead."""
    groups = [[name] for name, col in schema.columns.items() if col.unique]
    if schema.unique:
        groups.append(
            list(schema.unique) if not isinstance(schema.unique, str) else [schema.unique]
        )
    updates = {name: {"unique": False} for name, col in schema.columns.items() if col.unique}
    stripped = copy.deepcopy(schema.update_columns(updates) if updates else schema)
    stripped.unique = None
    return stripped, groups


class _Uniqueness:
    """Seen-value hashes per unique column group, as sorted uint64 arrays (8 bytes a row)."""

    def __init__(self, groups: list[list[str]]) -> None:
        self.groups = groups
        self.seen = {tuple(g): np.empty(0, dtype=np.uint64) for g in groups}

    def duplicates(self, df: pd.DataFrame) -> list[tuple[list[str], np.ndarray]]:
        out = []
        for group in self.groups:
            if not set(group) <= set(df.columns):
                continue  # a missing column: reported as such, its uniqueness cannot run
            key = tuple(group)
            hashes = pd.util.hash_pandas_object(df[group], index=False).to_numpy(np.uint64)
            within = pd.Series(hashes).duplicated(keep="first").to_numpy()
            seen = self.seen[key]
            pos = np.searchsorted(seen, hashes)
            earlier = (
                (pos < len(seen)) & (seen[np.minimum(pos, len(seen) - 1)] == hashes)
                if len(seen)
                else np.zeros(len(hashes), dtype=bool)
            )
            mask = within | earlier
            if mask.any():
                out.append((group, mask))
            # Append only the new values and re-sort: uint64 sorts by radix in linear
            # time, where np.union1d would re-hash everything seen on every chunk.
            fresh = np.unique(hashes[~mask])
            merged = np.concatenate([seen, fresh])
            merged.sort(kind="stable")
            self.seen[key] = merged
        return out


class _Profile:
    """Streaming per-column summary: counts, nulls, numeric range/mean, top categories."""

    def __init__(self) -> None:
        self.cols: dict[str, dict[str, Any]] = {}

    def add(self, df: pd.DataFrame) -> None:
        for name in df.columns:
            s = df[name]
            c = self.cols.setdefault(name, {"dtype": str(s.dtype), "count": 0, "nulls": 0})
            c["count"] += int(s.notna().sum())
            c["nulls"] += int(s.isna().sum())
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                vals = s.dropna()
                if len(vals):
                    c["min"] = float(min(c.get("min", math.inf), vals.min()))
                    c["max"] = float(max(c.get("max", -math.inf), vals.max()))
                    c["sum"] = float(c.get("sum", 0.0) + vals.sum())
            elif not c.get("categories_truncated"):
                # A column with more distinct values than we keep (an id) stops being
                # counted: its top values say nothing and cost the most.
                counts: dict[str, int] = c.setdefault("top", {})
                for value, n in s.dropna().astype(str).value_counts().items():
                    if value in counts or len(counts) < MAX_PROFILE_CATEGORIES:
                        counts[str(value)] = counts.get(str(value), 0) + int(n)
                    else:
                        c["categories_truncated"] = True

    def result(self) -> dict[str, Any]:
        out = {}
        for name, c in self.cols.items():
            c = dict(c)
            if "sum" in c:
                c["mean"] = c.pop("sum") / c["count"] if c["count"] else None
            out[name] = c
        return out


# The checks of the frame's columns themselves, as pandera's lazy mode names them.
_HEADER_CHECKS = frozenset({"column_in_dataframe", "column_in_schema"})


def _problems(report: ValidationReport, row_failures: int) -> list[tuple[Reason, str]]:
    """Each kind of problem the file has, as (reason code, message), header first."""
    out = []
    if report.missing_columns:
        out.append(
            (Reason.MISSING_COLUMNS, f"missing columns: {', '.join(report.missing_columns)}")
        )
    if report.unexpected_columns:
        unexpected = report.unexpected_columns
        more = report.unexpected_column_count - len(unexpected)
        out.append(
            (
                Reason.UNEXPECTED_COLUMNS,
                f"columns not in the spec: {_listed(unexpected)}"
                + (f" and {more:,} more (see the report)" if more > 0 else ""),
            )
        )
    if row_failures:
        row_checks = [c for c in report.checks if c.check not in _HEADER_CHECKS]
        out.append(
            (
                Reason.SCHEMA_CHECKS_FAILED,
                f"{row_failures} failure(s) in {report.failing_rows} of "
                f"{report.rows_checked} rows, over {len(row_checks)} check(s)",
            )
        )
    return out


def validate_file(
    path: Path,
    fmt: FileFormat,
    spec: DatasetSpec,
    *,
    chunk_rows: int = 100_000,
    out_dir: Path | None = None,
    seed: int = 0,
    on_chunk: Callable[[int, int], None] | None = None,
    on_progress: Callable[[ValidationProgress], None] | None = None,
) -> ValidationRun:
    """Validate ``path``; with ``out_dir``, also write curated.parquet and reference.parquet.

    ``on_chunk(rows_so_far, failures_so_far)`` and ``on_progress(ValidationProgress)`` are
    called after each chunk, for progress; neither knows how it is shown.
    """
    report = ValidationReport(dataset=spec.name, spec_version=spec.spec_version, ok=False)
    schema, unique_groups = _schema_without_uniqueness(spec.dataframe_schema)
    uniqueness = _Uniqueness(unique_groups)
    profile = _Profile()
    rng = np.random.default_rng(seed)
    sample: pd.DataFrame | None = None
    k = spec.drift.reference_rows
    writer: pq.ParquetWriter | None = None
    arrow_schema: pyarrow_lib.Schema | None = None
    curated = out_dir / "curated.parquet" if out_dir else None
    counts: dict[tuple[str | None, str], CheckSummary] = {}
    bad_rows: set[int] = set()

    def record(row: int | None, column: str | None, check: str, value: Any) -> None:
        text = (
            None
            if value is None or (isinstance(value, float) and math.isnan(value))
            else str(value)[:200]
        )
        summary = counts.setdefault(
            (column, check), CheckSummary(column=column, check=check, failures=0)
        )
        summary.failures += 1
        if len(summary.examples) < MAX_EXAMPLES_PER_CHECK and text not in summary.examples:
            summary.examples.append(text)
        report.failure_count += 1
        if row is not None:
            bad_rows.add(row)
        if len(report.failure_cases) < MAX_FAILURE_CASES:
            report.failure_cases.append(
                FailureCase(row=row, column=column, check=check, value=text)
            )
        else:
            report.failure_cases_truncated = True

    def record_header() -> None:
        # Once for the file, in pandera's own terms (the checks its lazy mode names, with
        # the column as the failure case), before any row: pandera repeats them in every
        # chunk, and the cap on failure cases must not drop them behind the rows.
        for name in report.missing_columns:
            record(None, None, "column_in_dataframe", name)
        for name in report.unexpected_columns:
            record(None, None, "column_in_schema", name)
        unlisted = report.unexpected_column_count - len(report.unexpected_columns)
        if unlisted > 0:  # counted exactly, listed bounded (a hostile header)
            counts[(None, "column_in_schema")].failures += unlisted
            report.failure_count += unlisted
            report.failure_cases_truncated = True

    header_failures = 0
    unreadable: FileUnreadable | None = None
    try:
        offset = collected_at = 0
        # Counted only for a display: it reads the file once more.
        total_rows = estimated_rows(path, fmt) if on_progress is not None else 0
        frames = iter_frames(path, fmt, spec, chunk_rows, report)
        record_header()
        header_failures = report.failure_count
        missing = set(report.missing_columns)
        present = [c for c in spec.columns if c not in missing]
        if missing:
            # Every other column's checks still run. Without the missing ones in the
            # schema, pandera does not report them again in each chunk (record_header
            # did, once) nor mix their index-less cases into its per-row table.
            schema = schema.remove_columns(sorted(missing))
        for chunk in frames:
            # pandas/pandera objects of earlier chunks sit in reference cycles that the
            # cyclic GC frees only now and then, so RSS crept up with the file's length;
            # a full collection every GC_EVERY_ROWS keeps it flat (3M rows x 18 columns:
            # 921 -> 674 MB peak) at a cost that tiny chunks would otherwise multiply.
            if offset - collected_at >= GC_EVERY_ROWS:
                gc.collect()
                collected_at = offset
            report.chunks += 1
            chunk = chunk[present]
            chunk.index = pd.RangeIndex(offset, offset + len(chunk))
            chunk, unparsed_bools = _text_to_bool(chunk, schema)
            chunk_bad: set[int] = set()
            for idx, column, value in unparsed_bools:
                record(idx + 1, column, "coerce_dtype('bool')", value)
                chunk_bad.add(idx)
            try:
                valid = schema.validate(chunk, lazy=True)
            except SchemaErrors as errs:
                valid = None
                cases = errs.failure_cases
                uncoerced = set(
                    cases.loc[cases["check"].astype(str).str.startswith("coerce_dtype"), "column"]
                )
                for fc in cases.itertuples(index=False):
                    check = str(fc.check)
                    # After a failed coercion, pandera also reports the dtype check and
                    # every comparison of the column (as TypeErrors): the same fault again.
                    if (
                        fc.column in uncoerced
                        and not check.startswith("coerce_dtype")
                        and (
                            check.startswith("dtype(")
                            or str(fc.failure_case).startswith("TypeError(")
                        )
                    ):
                        continue
                    if pd.isna(fc.index):
                        record(None, fc.column, check, fc.failure_case)
                    else:
                        record(int(fc.index) + 1, fc.column, check, fc.failure_case)
                        chunk_bad.add(int(fc.index))
            for group, mask in uniqueness.duplicates(chunk):
                for idx in chunk.index[mask]:
                    record(
                        int(idx) + 1,
                        ",".join(group),
                        "unique",
                        ",".join(str(chunk.at[idx, c]) for c in group),
                    )
                    chunk_bad.add(int(idx))
            for idx in sorted(chunk_bad)[: max(0, MAX_BAD_ROWS - len(report.bad_rows_sample))]:
                row = {
                    str(k2): (None if pd.isna(v) else str(v)[:200])
                    for k2, v in chunk.loc[idx].items()
                }
                report.bad_rows_sample.append({"row": idx + 1, **row})
            offset += len(chunk)
            if on_chunk is not None:
                on_chunk(offset, report.failure_count)
            if on_progress is not None:
                done = min(offset / total_rows, 1.0) if total_rows else 1.0
                on_progress(ValidationProgress(offset, report.failure_count, done))
            if chunk_bad or report.failure_count:
                if writer is not None:  # no curated copy of a failing file
                    writer.close()
                    writer = None
                continue
            assert valid is not None
            profile.add(valid)
            if curated is not None:
                table = pyarrow_lib.Table.from_pandas(
                    valid, schema=arrow_schema, preserve_index=False
                )
                if writer is None and report.chunks == 1:
                    arrow_schema = table.schema
                    writer = pq.ParquetWriter(curated, arrow_schema, compression="zstd")
                if writer is not None:
                    writer.write_table(table)
            keyed = valid.assign(_key=rng.random(len(valid)))
            sample = keyed if sample is None else pd.concat([sample, keyed])
            sample = sample.nsmallest(k, "_key")
        report.rows_checked = offset
    except FileUnreadable as exc:
        if not header_failures and (report.missing_columns or report.unexpected_columns):
            # pyarrow reads the first block as it opens the file: the header passed its
            # checks, and was not recorded yet, when the rows' error came.
            record_header()
            header_failures = report.failure_count
        if header_failures:
            # The header's problems stay the reason; the rows' that stopped the read are
            # said beside them (a header with columns added whose rows lack them is ragged).
            unreadable = exc
            report.rows_checked = offset
        else:
            report.reason, report.message = exc.reason, exc.message
    finally:
        if writer is not None:
            writer.close()
    report.failing_rows = len(bad_rows)
    report.checks = sorted(counts.values(), key=lambda c: (-c.failures, str(c.column), c.check))
    report.failure_cases.sort(key=lambda f: (f.row or 0, str(f.column), f.check))
    if report.reason is None:
        problems = _problems(report, report.failure_count - header_failures)
        if unreadable is not None:
            problems.append((unreadable.reason, unreadable.message))
        if problems:
            # The first problem is the reason code (the header's before the rows', as
            # before); the message and the hint say what to do about each of them.
            report.reason = problems[0][0]
            report.message = "; ".join(message for _, message in problems)
            report.hint = "; ".join(reason.hint for reason, _ in problems)
        elif report.rows_checked == 0:
            report.reason, report.message = Reason.NO_ROWS, "the file has no data rows"
    report.ok = report.reason is None
    if report.reason:
        report.hint = report.hint or reason_of(report.reason).hint
        return ValidationRun(report=report)
    report.message = f"{report.rows_checked} rows passed {spec.name} spec {spec.spec_version}"
    reference = None
    if out_dir is not None and sample is not None:
        reference = out_dir / "reference.parquet"
        sample.sort_index().drop(columns="_key").to_parquet(reference, index=False)
    return ValidationRun(
        report=report, curated=curated, reference=reference, profile=profile.result()
    )
