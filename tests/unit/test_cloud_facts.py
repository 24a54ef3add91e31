"""The table of cloud facts: well formed, and every fact enforced by a test or a policy.

A fact is enforced where a test or a policy rule names its id (``fact("aws.…")`` or
``value("aws.…")``) and checks the code against it; a fact no test or rule names fails
here, so the table cannot hold a rule nothing checks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.cloud_facts import CloudFactError, fact, facts
from shared.topology import build_topology

ROOT = Path(__file__).resolve().parents[2]
# Where enforcement lives: the tests, and the policy pack that `pulumi up` runs.
ENFORCERS = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("infra/policy/*.py")]
_NAMED = re.compile(r"""(?:fact|value)\(\s*["']((?:aws|azure)\.[a-z0-9_.]+)["']""")


def _named_by() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in ENFORCERS:
        for fid in _NAMED.findall(path.read_text()):
            out.setdefault(fid, set()).add(str(path.relative_to(ROOT)))
    return out


def test_every_fact_is_enforced_by_a_test_or_a_policy_rule() -> None:
    named = _named_by()
    unenforced = sorted(fid for fid in facts() if fid not in named)
    assert not unenforced, f"facts no test or policy rule names: {unenforced}"


def test_enforcers_name_only_facts_the_table_has() -> None:
    unknown = sorted(fid for fid in _named_by() if fid not in facts())
    assert not unknown, f"tests or policies name facts no table holds: {unknown}"


def test_every_fact_has_a_documentation_source() -> None:
    for f in facts().values():
        assert f.source.startswith("https://"), f.id
        assert f.rule, f.id


def test_a_missing_fact_is_a_clear_error() -> None:
    missing = "aws.nothing.here"
    with pytest.raises(CloudFactError, match="no cloud fact"):
        fact(missing)


def test_malformed_tables_are_refused(tmp_path: Path) -> None:
    (tmp_path / "aws-x.yaml").write_text("- id: aws.x.y\n  rule: r\n  value: 1\n")
    with pytest.raises(CloudFactError, match="exactly"):
        facts.__wrapped__(tmp_path)


def test_no_function_runs_longer_than_lambda_allows() -> None:
    limit = fact("aws.lambda.max_timeout_s").value
    for fn in build_topology("t").functions:
        assert fn.timeout_s <= limit, fn.name
