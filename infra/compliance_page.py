"""The compliance report as one self-contained HTML page an auditor can read.

Failures come first, then each stack's resources, roles, datasets and policy verdicts.
Every value is escaped (resource names come from a stack file or a state file, which
anyone may have written), and the page loads nothing: its style is inline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from infra.compliance import ComplianceReport, StackReport

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1b1b1b; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left;
  vertical-align: top; }
th { background: #f0f0f0; }
.fail { color: #a00000; font-weight: 600; }
.ok { color: #006000; font-weight: 600; }
code { font-size: 0.8rem; }
"""


def _cell(value: object) -> str:
    if value is None or value == "":
        return "<td>-</td>"
    if isinstance(value, list | tuple):
        return "<td>" + "<br>".join(escape(str(v)) for v in value) + "</td>"
    return f"<td>{escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _role_rows(stack: StackReport) -> Iterable[Sequence[object]]:
    for r in stack.roles:
        if not r.grants:
            yield (r.kind, r.name, r.assumed_by, None, "nothing", None, r.used_by)
        for g in r.grants:
            yield (r.kind, r.name, r.assumed_by, g.role, g.actions, g.resources, r.used_by)


def _stack_section(stack: StackReport) -> str:
    title = escape(f"{stack.stack} ({stack.cloud}), read from {stack.source}")
    resources = _table(
        (
            "type",
            "name",
            "region",
            "encryption at rest",
            "key",
            "public access",
            "retention",
            "failures",
        ),
        (
            (
                e.type,
                e.physical_name,
                e.region,
                e.encryption,
                e.key,
                e.public_access,
                e.retention,
                e.failures,
            )
            for e in stack.resources
        ),
    )
    roles = _table(
        ("kind", "name", "assumed by", "role", "actions", "on", "used by"),
        _role_rows(stack),
    )
    datasets = "".join(
        f"<h4>{escape(d.dataset)} <small>spec {escape(d.spec_version)}</small></h4>"
        f"<p>Personal data: {escape(', '.join(d.personal_data) or 'no column marked')}</p>"
        + _table(
            ("copy", "store", "type", "region", "encryption", "kept"),
            (
                (c.store, c.name, c.resource_type, c.region, c.encryption, c.retention)
                for c in d.copies
            ),
        )
        for d in stack.datasets
    )
    verdicts = (
        _table(
            ("policy", "resource", "message"),
            ((v.policy, v.resource, v.message) for v in stack.verdicts),
        )
        if stack.verdicts
        else '<p class="ok">The policy pack finds no violation.</p>'
    )
    return (
        f"<section><h2>{title}</h2>"
        f"<h3>Resources ({len(stack.resources)})</h3>{resources}"
        f"<h3>Roles and identities ({len(stack.roles)})</h3>{roles}"
        f"<h3>Datasets</h3>{datasets or '<p>No dataset spec.</p>'}"
        f"<h3>Policy pack verdicts</h3>{verdicts}</section>"
    )


def render_html(report: ComplianceReport) -> str:
    """The whole report as one HTML document."""
    failures = report.failures
    if failures:
        summary = f'<p class="fail">{len(failures)} failure(s).</p>' + _table(
            ("stack", "resource", "what"), ((f.stack, f.resource, f.what) for f in failures)
        )
    else:
        summary = (
            '<p class="ok">No failure: every resource in the UAE, encrypted at rest, '
            "not public, and the policy pack finds no violation.</p>"
        )
    stacks = "".join(_stack_section(s) for s in report.stacks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Dhow compliance report</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Dhow compliance report</h1>"
        f"<p>Generated {escape(report.generated_at)} for "
        f"{escape(', '.join(s.stack for s in report.stacks))}.</p>"
        f"<h2>Failures</h2>{summary}{stacks}</body></html>\n"
    )


def write(report: ComplianceReport, out: Path) -> tuple[Path, Path]:
    """``compliance.html`` and ``compliance.json`` in ``out`` (created if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    page, document = out / "compliance.html", out / "compliance.json"
    page.write_text(render_html(report), encoding="utf-8")
    document.write_text(report.to_json() + "\n", encoding="utf-8")
    return page, document
