"""A file larger than the memory limit set for the test validates within that limit.

The validation runs in a child process (the CLI, as a data team would run it),
and its peak resident memory is read from the kernel with wait4 as it exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pc
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MB = 256
FILE_MB = 450
ROWS = 1_000_000


def write_wide_csv(path: Path) -> None:
    rng = np.random.default_rng(3)
    note = "x" * 460  # a free-text column makes rows wide, so bytes grow faster than rows
    with pc.CSVWriter(
        path,
        pa.schema(
            [
                ("id", pa.string()),
                ("amount", pa.int64()),
                ("note", pa.string()),
                ("label", pa.int64()),
            ]
        ),
        write_options=pc.WriteOptions(quoting_style="none"),
    ) as w:
        for start in range(0, ROWS, 100_000):
            n = 100_000
            w.write_table(
                pa.table(
                    {
                        "id": pa.array(np.char.add("r", np.arange(start, start + n).astype(str))),
                        "amount": rng.integers(0, 1000, n),
                        "note": pa.array([note] * n),
                        "label": rng.integers(0, 2, n),
                    }
                )
            )


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("wide")
    specs = d / "specs"
    specs.mkdir()
    spec = {
        "name": "wide",
        "version": 1,
        "target": "label",
        "task": "classification",
        "schema": {
            "schema_type": "dataframe",
            "api": "pandas",
            "coerce": True,
            "strict": True,
            "columns": {
                "id": {"dtype": "object", "unique": True},
                "amount": {"dtype": "int64", "greater_than_or_equal_to": 0},
                "note": {"dtype": "object"},
                "label": {"dtype": "int64", "isin": [0, 1]},
            },
        },
    }
    (specs / "wide.yaml").write_text(yaml.safe_dump(spec))
    data = d / "wide.csv"
    write_wide_csv(data)
    return specs, data


# The child reports its own high-water mark at exit. Not ru_maxrss: Linux carries
# the forked parent's peak (pytest's, here) into the child's across exec; VmHWM
# belongs to the new address space alone.
PEAK_AT_EXIT = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "    sys.stderr.write('PEAK_KB ' + hwm.split()[1] + '\\n')\n"
    "atexit.register(peak)\n"
    "sys.argv = ['dhow', *sys.argv[1:]]\n"
    "runpy.run_module('dhow_cli', run_name='__main__')\n"
)


def test_file_larger_than_the_limit_validates_within_it(wide: tuple[Path, Path]) -> None:
    specs, data = wide
    assert data.stat().st_size > FILE_MB * 1024**2 > LIMIT_MB * 1024**2
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK_AT_EXIT,
            "dataset",
            "validate",
            "wide",
            str(data),
            "--specs-dir",
            str(specs),
            "--chunk-rows",
            "5000",
            "--json",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    peak_mb = int(r.stderr.rsplit("PEAK_KB ", 1)[1].split()[0]) / 1024
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert report["rows_checked"] == ROWS
    assert report["chunks"] == ROWS // 5000
    print(f"\n{data.stat().st_size / 1024**2:.0f} MB file validated at {peak_mb:.0f} MB peak RSS")
    assert peak_mb < LIMIT_MB
