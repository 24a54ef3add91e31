"""IAM judged by tools other than our own reading: parliament lints a policy, and moto's
IAM policy evaluator says whether a policy allows one action on one resource.

Why these two:

- **parliament** (duo-labs, PyPI 1.6.4) checks each statement against its copy of the
  Service Authorization Reference (``iam_definition.json``): actions that do not exist,
  resources of the wrong type for an action (``codedeploy:StopDeployment`` only on
  ``*``), condition keys that an action never carries (``kms:GrantIsForAWSResource`` on
  ``kms:DescribeKey``). Its reference also lists each action's *dependent actions*
  (``sagemaker:CreateProcessingJob`` needs ``sagemaker:AddTags``), which the tests read.
- **moto's** ``IAMPolicy(...).is_action_permitted`` (``moto/iam/access_control.py``) is
  the evaluator moto itself enforces IAM with, maintained with moto, already a dev
  dependency. We considered ``policyuniverse`` (it expands and parses actions and ARNs,
  but has no "does this policy allow this request" evaluation) and ``policy_sentry``
  (it writes policies; it does not evaluate them). moto evaluates Allow and Deny, Action
  and NotAction, ``*`` wildcards in actions and resources, and ``StringEquals``
  conditions on the context keys we hand it; it ignores other operators. It is stricter
  than IAM in two ways, both of which can only make a check fail, never pass wrongly:
  actions are matched case-sensitively, and an Allow whose ``StringEquals`` condition is
  not met counts as a deny. So a call it allows, IAM allows.
"""

from __future__ import annotations

import gc
import json
import warnings
from functools import cache
from pathlib import Path
from typing import Any

from moto.iam.access_control import IAMPolicy, PermissionResult

from tests.infra.harness import Program

with warnings.catch_warnings():
    # parliament 1.6.4 finds its data files with pkg_resources, which warns that it is
    # deprecated, and opens them without closing them (a ResourceWarning when collected):
    # both at its import, in its code, not ours. Collected here, where they are ignored.
    warnings.simplefilter("ignore", UserWarning)
    warnings.simplefilter("ignore", ResourceWarning)
    import parliament

    gc.collect()


def allows(
    policy: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None
) -> bool:
    """Whether ``policy`` allows ``action`` on ``resource`` (moto's evaluator)."""
    result = IAMPolicy(json.dumps(policy)).is_action_permitted(
        action, resource, incoming_condition_values=context
    )
    return bool(result == PermissionResult.PERMITTED)


@cache
def service_reference() -> dict[str, dict[str, Any]]:
    """parliament's Service Authorization Reference: ``"prefix:Action"`` -> its entry."""
    path = Path(parliament.iam_definition_path)
    out: dict[str, dict[str, Any]] = {}
    for service in json.loads(path.read_text()):
        for p in service["privileges"]:
            out[f"{service['prefix']}:{p['privilege']}".lower()] = p
    return out


def dependent_actions(action: str) -> set[str]:
    """The actions IAM also checks when ``action`` is called on its resource."""
    entry = service_reference().get(action.lower())
    if entry is None:
        return set()
    return {d for rt in entry["resource_types"] for d in rt["dependent_actions"]}


def resource_types(action: str) -> set[str]:
    """The resource types ``action`` can be scoped to (empty: only ``*``)."""
    entry = service_reference()[action.lower()]
    return {rt["resource_type"] for rt in entry["resource_types"] if rt["resource_type"]}


def lint(policy: str) -> list[Any]:
    """parliament's findings on one policy document (its community auditors left out:
    they are opinions about sensitive actions, not the reference)."""
    return list(parliament.analyze_policy_string(policy).findings)


def generated_policies(program: Program) -> list[tuple[str, str, str]]:
    """Every policy document the program hands AWS: (resource type, name, JSON), found
    by shape in every resource's inputs, so a policy added later is linted too."""
    out = []
    for r in program.resources:
        if not r.typ.startswith("aws:"):
            continue
        for value in r.outputs.values():
            if isinstance(value, str) and '"Statement"' in value:
                try:
                    doc = json.loads(value)
                except ValueError:
                    continue
                if isinstance(doc, dict) and "Statement" in doc:
                    out.append((r.typ, r.name, value))
    return out
