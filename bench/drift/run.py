"""bench/drift: our drift verdict against evidently's DataDriftPreset on the same frames.

For each size it builds a reference and a current frame of 20 columns (ten
floats, four many-valued integers, four seven-value categoricals, two booleans;
four columns shifted a little), then runs, each in its own child process (so the
peak RSS is that run's alone, and the imports are not shared):

- ours:      ``shared.drift.compare`` with the default tests;
- evidently: ``Report([DataDriftPreset()]).run(current, reference)`` with the same
  column types, as the issue measured it.

Both run in the same invocation, one after the other, because these machines are
noisy; the ratio is what to compare between runs. The children also return every
column's statistic and verdict, and the parent checks that they agree (to 1e-6).

    .venv/bin/python bench/drift/run.py [--rows 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

CATS = np.array(["abu-dhabi", "dubai", "sharjah", "ajman", "ras-al-khaimah", "fujairah", "uaq"])


def frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    def one(seed: int, shift: float) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        cols: dict[str, Any] = {}
        for i in range(10):
            cols[f"f{i}"] = rng.normal(shift if i < 2 else 0.0, 1.0, rows)
        for i in range(4):
            cols[f"i{i}"] = rng.integers(0, 1000 + (int(300 * shift) if i == 0 else 0), rows)
        even, skewed = np.full(7, 1 / 7), np.array([0.16] * 6 + [0.04])
        for i in range(4):
            cols[f"c{i}"] = rng.choice(CATS, rows, p=skewed if (i == 0 and shift) else even)
        for i in range(2):
            cols[f"b{i}"] = rng.random(rows) < 0.5
        return pd.DataFrame(cols)

    kinds = {c: ("cat" if c[0] in "cb" else "num") for c in one(0, 0).columns}
    return one(1, 0.0), one(2, 0.1), kinds


def peak_rss_mb() -> float:
    """This process's own peak (VmHWM): ru_maxrss would keep the forked parent's."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def child_ours(rows: int) -> dict[str, Any]:
    ref, cur, kinds = frames(rows)
    t0 = time.perf_counter()
    from shared.drift import compare

    imported = time.perf_counter()
    verdict = compare(ref, cur, kinds)  # type: ignore[arg-type]
    done = time.perf_counter()
    return {
        "import_s": imported - t0,
        "run_s": done - imported,
        "drift": verdict.verdict == "drift",
        "columns": {c.column: [c.stattest, c.statistic, c.drifted] for c in verdict.columns},
    }


def child_evidently(rows: int) -> dict[str, Any]:
    ref, cur, kinds = frames(rows)
    t0 = time.perf_counter()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    imported = time.perf_counter()
    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "num"],
        categorical_columns=[c for c, k in kinds.items() if k == "cat"],
    )
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    done = time.perf_counter()
    values: dict[str, float] = {}
    share = 0.0
    for m in snap.dict()["metrics"]:
        if m["config"]["type"].endswith("ValueDrift"):
            values[m["config"]["column"]] = float(m["value"])
        else:
            share = float(m["value"]["share"])
    return {
        "import_s": imported - t0,
        "run_s": done - imported,
        "drift": share >= 0.5,
        "values": values,
    }


def measure(which: str, rows: int) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, __file__, "--child", which, "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise SystemExit(f"{which} at {rows} rows failed:\n{r.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="100000,1000000")
    p.add_argument("--child", choices=["ours", "evidently"])
    args = p.parse_args()
    if args.child:
        result = (child_ours if args.child == "ours" else child_evidently)(int(args.rows))
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return 0

    header = (
        "| rows x 20 columns | evidently s | ours s | ours/evidently | evidently peak RSS MB "
        "| ours peak RSS MB | max |stat diff| | verdicts equal |"
    )
    print(header)
    print("|" + "---:|" * 8)
    for rows in [int(x) for x in args.rows.split(",")]:
        ev = measure("evidently", rows)
        ours = measure("ours", rows)
        diff = max(
            abs(ours["columns"][c][1] - v) / max(1.0, abs(v)) for c, v in ev["values"].items()
        )
        same = ours["drift"] == ev["drift"] and set(ours["columns"]) == set(ev["values"])
        print(
            f"| {rows:,} | {ev['run_s']:.1f} | {ours['run_s']:.2f} | "
            f"{ours['run_s'] / ev['run_s']:.3f} | {ev['peak_rss_mb']:,.0f} | "
            f"{ours['peak_rss_mb']:,.0f} | {diff:.1e} | {'yes' if same else 'NO'} |",
            flush=True,
        )
        print(
            f"  (imports: evidently {ev['import_s']:.1f} s, ours {ours['import_s']:.2f} s; "
            f"drifted columns: {sorted(c for c, v in ours['columns'].items() if v[2])})",
            flush=True,
        )
        if diff > 1e-6 or not same:
            print("  the statistics or verdicts differ: see tests/unit/test_drift.py")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
