"""bench/validation: our chunked validate path against plain pandas checks of the same rules.

For each size it writes a realistic 18-column CSV, then runs, each in its own
child process (so peak RSS is the kernel's figure for that run alone):

- ours:   shared.validation.validate_file, 100k-row chunks, curated Parquet written;
- pandas: read the whole file with pandas and apply the same rules vectorised.

Both run in the same invocation, one after the other, because these machines
are noisy; the ratio is what to compare between runs.

    .venv/bin/python bench/validation/run.py [--rows 100000,1000000,5000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pc
import yaml

SEGMENTS = ["bronze", "silver", "gold", "platinum"]
EMIRATES = ["abu-dhabi", "dubai", "sharjah", "ajman", "ras-al-khaimah", "fujairah", "umm-al-quwain"]
CHANNELS = ["app", "web", "branch", "call-centre"]
PLANS = ["prepaid", "postpaid", "business"]

RULES = {  # column -> (dtype, check) ; the spec and the pandas baseline both come from here
    "customer_id": ("object", {"unique": True}),
    "age": ("int64", {"greater_than_or_equal_to": 18, "less_than_or_equal_to": 110}),
    "tenure_months": ("int64", {"greater_than_or_equal_to": 0, "less_than_or_equal_to": 600}),
    "monthly_spend_aed": ("float64", {"greater_than_or_equal_to": 0}),
    "data_gb": ("float64", {"greater_than_or_equal_to": 0}),
    "voice_minutes": ("int64", {"greater_than_or_equal_to": 0}),
    "support_calls": ("int64", {"greater_than_or_equal_to": 0, "less_than_or_equal_to": 1000}),
    "late_payments": ("int64", {"greater_than_or_equal_to": 0}),
    "discount_pct": ("float64", {"greater_than_or_equal_to": 0, "less_than_or_equal_to": 100}),
    "credit_score": ("int64", {"greater_than_or_equal_to": 300, "less_than_or_equal_to": 900}),
    "segment": ("object", {"isin": SEGMENTS}),
    "emirate": ("object", {"isin": EMIRATES}),
    "channel": ("object", {"isin": CHANNELS}),
    "plan": ("object", {"isin": PLANS}),
    "has_mobile_app": ("bool", {}),
    "autopay": ("bool", {}),
    "nps": ("int64", {"greater_than_or_equal_to": -100, "less_than_or_equal_to": 100}),
    "churned": ("int64", {"isin": [0, 1]}),
}


def write_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(42)
    writer = None
    for start in range(0, rows, 250_000):
        n = min(250_000, rows - start)
        cols = {
            "customer_id": pa.array(np.char.add("C", np.arange(start, start + n).astype(str))),
            "age": rng.integers(18, 90, n),
            "tenure_months": rng.integers(0, 240, n),
            "monthly_spend_aed": np.round(rng.lognormal(5.5, 0.5, n), 2),
            "data_gb": np.round(rng.gamma(2, 5, n), 2),
            "voice_minutes": rng.integers(0, 3000, n),
            "support_calls": rng.integers(0, 12, n),
            "late_payments": rng.poisson(0.4, n),
            "discount_pct": np.round(rng.uniform(0, 30, n), 1),
            "credit_score": rng.integers(300, 900, n),
            "segment": np.array(SEGMENTS)[rng.integers(0, 4, n)],
            "emirate": np.array(EMIRATES)[rng.integers(0, 7, n)],
            "channel": np.array(CHANNELS)[rng.integers(0, 4, n)],
            "plan": np.array(PLANS)[rng.integers(0, 3, n)],
            "has_mobile_app": np.where(rng.random(n) < 0.6, "true", "false"),
            "autopay": np.where(rng.random(n) < 0.5, "true", "false"),
            "nps": rng.integers(-100, 101, n),
            "churned": rng.integers(0, 2, n),
        }
        table = pa.table(cols)
        if writer is None:
            writer = pc.CSVWriter(
                path, table.schema, write_options=pc.WriteOptions(quoting_style="none")
            )
        writer.write_table(table)
    assert writer is not None
    writer.close()


def write_spec(specs: Path) -> None:
    columns = {name: {"dtype": dtype, **checks} for name, (dtype, checks) in RULES.items()}
    spec = {
        "name": "bench",
        "version": 1,
        "target": "churned",
        "task": "classification",
        "schema": {
            "schema_type": "dataframe",
            "api": "pandas",
            "coerce": True,
            "strict": True,
            "columns": columns,
        },
    }
    (specs / "bench.yaml").write_text(yaml.safe_dump(spec))


def child_ours(path: str, specs: str, out: str) -> dict[str, object]:
    from shared.specs import load_spec
    from shared.validation import validate_file

    report = validate_file(
        Path(path), "csv", load_spec("bench", specs), chunk_rows=100_000, out_dir=Path(out)
    ).report
    return {"ok": report.ok, "rows": report.rows_checked, "failures": report.failure_count}


def child_pandas(path: str) -> dict[str, object]:
    import pandas as pd

    df = pd.read_csv(path)
    failures = 0
    for name, (dtype, checks) in RULES.items():
        s = df[name]
        if dtype == "bool":
            failures += int((~s.astype(str).str.lower().isin(["true", "false"])).sum())
            continue
        if dtype in ("int64", "float64"):
            s = pd.to_numeric(s, errors="coerce")
            failures += int(s.isna().sum())
        failures += int(df[name].isna().sum())
        if "greater_than_or_equal_to" in checks:
            failures += int((s < checks["greater_than_or_equal_to"]).sum())
        if "less_than_or_equal_to" in checks:
            failures += int((s > checks["less_than_or_equal_to"]).sum())
        if "isin" in checks:
            failures += int((~s.isin(checks["isin"])).sum())
        if checks.get("unique"):
            failures += int(s.duplicated().sum())
    return {"ok": failures == 0, "rows": len(df), "failures": failures}


def peak_rss_mb() -> float:
    """This process's high-water RSS. Not ru_maxrss, which on Linux keeps the peak of
    the forked parent from before exec; VmHWM belongs to this address space alone."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def measure(argv: list[str]) -> tuple[float, float, dict[str, object]]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - t0
    result = json.loads(r.stdout.strip().splitlines()[-1])
    return seconds, float(result.pop("peak_rss_mb")), result


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", default="100000,1000000,5000000")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_ours(*rest) if kind == "ours" else child_pandas(*rest)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return 0
    print(
        "| rows | file MB | ours rows/s | ours peak RSS MB | pandas rows/s | pandas peak RSS MB"
        " | speed ours/pandas | RSS ours/pandas |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="dhow-bench-") as tmp:
        d = Path(tmp)
        write_spec(d)
        for rows in (int(x) for x in args.rows.split(",")):
            data = d / f"data-{rows}.csv"
            write_csv(data, rows)
            out = d / f"out-{rows}"
            out.mkdir()
            t_ours, rss_ours, r_ours = measure(["--child", "ours", str(data), str(d), str(out)])
            t_pd, rss_pd, r_pd = measure(["--child", "pandas", str(data)])
            assert r_ours["ok"], r_ours
            assert r_pd["ok"], r_pd
            assert r_ours["rows"] == r_pd["rows"] == rows, (r_ours, r_pd)
            print(
                f"| {rows:,} | {data.stat().st_size / 1e6:,.0f} | {rows / t_ours:,.0f} | "
                f"{rss_ours:,.0f} | {rows / t_pd:,.0f} | {rss_pd:,.0f} | "
                f"{t_pd / t_ours:.2f} | {rss_ours / rss_pd:.2f} |",
                flush=True,
            )
            data.unlink()
    print("\nTimes include process start and imports (about 1 s for ours: pandera, pyarrow).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
