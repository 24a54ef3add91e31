"""The drift check's HTML report: evidently's own, drawn on a bounded sample.

The verdict (``shared.drift``) uses every row; evidently's report of a million
rows takes over a minute and hundreds of MB of HTML, so the report is drawn on
at most ``sample_rows`` rows a side, with the verdict's tests and thresholds,
and says so in a banner at its top, next to the full-data statistics.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from shared.drift import ColumnKind, DriftVerdict

DEFAULT_SAMPLE_ROWS = 5000

# How a stored report is to be served: as HTML in UTF-8, and downloaded rather than
# opened in the storage's own origin (S3 and Blob storage serve an object with these as
# its system properties, and cannot add a CSP header of their own: facts
# aws.s3.object_response_headers, azure.blob.content_settings).
REPORT_CONTENT_TYPE = "text/html; charset=utf-8"
REPORT_DISPOSITION = 'attachment; filename="report.html"'

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


# evidently writes the data of its plots as JSON inside <script> blocks, without
# escaping "<": a captured value like "</script><script>...</script>" closes its block
# and becomes script of the stored page. "<" in text becomes the full-width less-than (U+FF1C),
# which looks the same to a reader and can open no tag; the verdict uses the raw values.
_NO_TAG = str.maketrans({"<": "\uff1c"})


def _sample(df: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    picked = df.sample(n=rows, random_state=seed) if len(df) > rows else df
    # evidently's plots fail on infinities (its tests drop them with the nulls).
    picked = picked.replace([np.inf, -np.inf], np.nan)
    text = [c for c in picked.columns if not pd.api.types.is_numeric_dtype(picked[c])]
    if text:
        picked = picked.assign(
            **{
                c: picked[c].map(lambda v: v.translate(_NO_TAG) if isinstance(v, str) else v)
                for c in text
            }
        )
    return picked


def content_security_policy(page: str) -> str:
    """A CSP that lets the page run exactly the scripts evidently wrote into it (each by
    its SHA-256) and nothing else: no inline handler, no script from elsewhere, no request
    out of the page, no form, no <base>. evidently's fonts and images are data: URLs and
    its styles inline."""
    hashes = sorted(
        {
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in _SCRIPT.findall(page)
        }
    )
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + (" ".join(hashes) or "'none'"),
            "style-src 'unsafe-inline'",
            "font-src data:",
            "img-src data: blob:",
            "connect-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def _banner(verdict: DriftVerdict, title: str, ref_rows: int, cur_rows: int) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c.column)}</td><td>{html.escape(c.stattest)}</td>"
        f"<td>{c.statistic:.6g}</td><td>{c.threshold:g}</td>"
        f"<td>{'<b>drift</b>' if c.drifted else 'no drift'}</td></tr>"
        for c in verdict.columns
    )
    sampled = (
        f"This report was drawn on a random sample of {cur_rows:,} of the "
        f"{verdict.current_rows:,} current rows and {ref_rows:,} of the "
        f"{verdict.reference_rows:,} reference rows; its figures may differ a little "
        "from the verdict, which used every row (below, and in summary.json)."
        if cur_rows < verdict.current_rows or ref_rows < verdict.reference_rows
        else f"This report uses all {verdict.current_rows:,} current and "
        f"{verdict.reference_rows:,} reference rows, as the verdict does."
    )
    share = f"{verdict.drift_share:.0%}" if verdict.drift_share is not None else "-"
    return (
        '<div style="font-family:sans-serif;border:2px solid #c33;padding:12px;margin:12px">'
        f"<h2>{html.escape(title)}: {verdict.verdict.replace('_', ' ')}</h2>"
        f"<p>{share} of columns drifted (threshold "
        f"{verdict.drift_share_threshold:.0%}). {html.escape(sampled)}</p>"
        "<table border=1 cellpadding=4><tr><th>column</th><th>test</th><th>statistic</th>"
        f"<th>threshold</th><th>verdict</th></tr>{rows}</table></div>"
    )


def render_html(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, ColumnKind],
    verdict: DriftVerdict,
    title: str,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    seed: int = 0,
) -> bytes:
    """evidently's DataDriftPreset report with the verdict's tests, and our banner."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = _sample(reference, sample_rows, seed), _sample(current, sample_rows, seed)
    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "num"],
        categorical_columns=[c for c, k in kinds.items() if k == "cat"],
    )
    preset = DataDriftPreset(
        drift_share=verdict.drift_share_threshold,
        per_column_method={c.column: c.stattest for c in verdict.columns},
        per_column_threshold={c.column: c.threshold for c in verdict.columns},
    )
    snapshot = Report([preset]).run(
        Dataset.from_pandas(cur[list(kinds)], data_definition=definition),
        Dataset.from_pandas(ref[list(kinds)], data_definition=definition),
    )
    with tempfile.TemporaryDirectory(prefix="dhow-report-") as tmp:
        path = Path(tmp) / "report.html"
        snapshot.save_html(str(path))
        page = path.read_text(encoding="utf-8")
    # The policy is drawn from the page as evidently wrote it, its values already kept
    # from opening a tag (_sample), and goes first in <head>, before any script.
    csp = content_security_policy(page)
    meta = f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">'
    page = page.replace("<head>", "<head>" + meta, 1)
    banner = _banner(verdict, title, len(ref), len(cur))
    page = page.replace("<body>", "<body>" + banner, 1)
    return page.encode("utf-8")
