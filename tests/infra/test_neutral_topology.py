"""The topology speaks neutral verbs and each stack translates them: no cloud's action in
the topology's permissions, no AWS action in the Azure stack, entry points declared per
cloud, and no rule picked out by its name."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import get_args

from infra.aws.iam import permission_actions
from shared.topology import Function, Permission, Verb, build_topology

ROOT = Path(__file__).resolve().parents[2]
# An IAM action, "service:Action" (s3:GetObject, events:PutEvents).
_IAM_ACTION = re.compile(r"^[a-z0-9-]+:[A-Z][A-Za-z]+$")


def _strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def test_permissions_are_verbs_that_every_stack_translates() -> None:
    topo = build_topology("uae-prod")
    assert [f.name for f in dataclasses.fields(Permission)] == ["verbs", "resource", "kind"]
    for fn in topo.functions:
        for perm in fn.permissions:
            assert set(perm.verbs) <= set(get_args(Verb)), (fn.logical, perm)
            # infra/aws/iam.py has the IAM actions of each verb it is given.
            assert permission_actions(perm), (fn.logical, perm)


def test_the_topology_names_no_cloud_action() -> None:
    assert [s for s in _strings(ROOT / "shared" / "topology.py") if _IAM_ACTION.match(s)] == []


def test_the_azure_stack_matches_no_aws_action_and_no_rule_by_name() -> None:
    rules = {r.logical for r in build_topology("uae-prod").rules}
    for path in sorted((ROOT / "infra" / "azure").glob("*.py")):
        strings = _strings(path)
        assert [s for s in strings if _IAM_ACTION.match(s)] == [], path
        assert [s for s in strings if s in rules] == [], path


def test_entry_points_are_declared_per_cloud() -> None:
    """Both handlers are fields of the function, not one derived from the other."""
    fields = {f.name for f in dataclasses.fields(Function)}
    assert {"aws_handler", "azure_handler"} <= fields
    for fn in build_topology("uae-prod").functions:
        for handler in (fn.aws_handler, fn.azure_handler):
            module = ROOT / (handler.rpartition(".")[0].replace(".", "/") + ".py")
            assert module.exists(), (fn.logical, handler)


def test_each_rule_says_what_emits_its_events() -> None:
    """The stacks subscribe by a rule's source: the Azure stack takes the upload rule as
    the storage source and the job ends as the ML workspace's run events."""
    topo = build_topology("uae-prod")
    by_source: dict[str, set[str]] = {}
    for rule in topo.rules:
        by_source.setdefault(rule.source, set()).add(rule.logical)
    assert by_source["storage"] == {"raw_object_created"}
    assert by_source["training_job"] == {"training_job_ended"}
    assert by_source["validation_job"] == {"validation_job_ended"}
    assert {r.logical for r in topo.rules if r.bus == "pipeline"} == by_source["pipeline"]
