"""Does a resource policy deny, allow or say nothing about one request?

moto's evaluator (tests/infra/iam_check.py) cannot judge the queues' Deny: it evaluates
``StringEquals`` only, ignores every other operator, and counts a statement whose
condition fails as a deny whatever its effect, so a conditional Deny would read as
"denied" for every sender. This evaluates the few operators the stack's resource
policies use, by IAM's documented rules (facts aws.iam.negated_condition_missing_key,
aws.sqs.deny_foreign_senders_keys), and refuses any operator it does not know rather
than ignore it, so a policy it cannot read fails the test instead of passing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

from shared.cloud_facts import value

Decision = Literal["deny", "allow", "neutral"]
MISSING = value("aws.iam.negated_condition_missing_key")


@dataclass(frozen=True)
class Request:
    """One call as IAM sees it: who (an AWS service, or an IAM role's session), what, on
    which resource, with which context keys."""

    action: str
    resource: str
    service: str | None = None  # "events.amazonaws.com" for a service principal
    role_arn: str | None = None  # the role an IAM principal's session is of
    context: dict[str, str] = field(default_factory=dict)

    def keys(self) -> dict[str, str]:
        # Both keys are in every signed request (fact aws.sqs.deny_foreign_senders_keys).
        keys = value("aws.sqs.deny_foreign_senders_keys")
        out = dict(self.context)
        out[keys["service"]] = "true" if self.service else "false"
        if self.role_arn:
            out[keys["principal"]] = self.role_arn
        return out


def _listed(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _principal_matches(principal: Any, req: Request) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        raise ValueError(f"unknown Principal {principal!r}")
    if "Service" in principal:
        return req.service in _listed(principal["Service"])
    if "AWS" in principal:
        return any(req.role_arn == p or p == "*" for p in _listed(principal["AWS"]))
    raise ValueError(f"unknown Principal {principal!r}")


def _operator_holds(op: str, key: str, wanted: list[str], keys: dict[str, str]) -> bool:
    negated = "Not" in op
    if key not in keys:
        return bool(MISSING["missing_key_negated"] if negated else MISSING["missing_key_positive"])
    actual = keys[key]
    if op in ("ArnEquals", "ArnNotEquals", "StringEquals", "StringNotEquals"):
        hit = any(actual == w for w in wanted)
    elif op in ("ArnLike", "ArnNotLike", "StringLike", "StringNotLike"):
        hit = any(fnmatchcase(actual, w) for w in wanted)
    elif op == "Bool":
        hit = any(actual.lower() == w.lower() for w in wanted)
    else:
        raise ValueError(f"condition operator {op} is not evaluated here: add it")
    # A negated operator's values are NORed: true when none of them matches.
    return not hit if negated else hit


def _applies(stmt: dict[str, Any], req: Request) -> bool:
    actions = _listed(stmt["Action"])
    resources = _listed(stmt["Resource"])
    if not any(fnmatchcase(req.action, a) for a in actions):
        return False
    if not any(fnmatchcase(req.resource, r) for r in resources):
        return False
    if not _principal_matches(stmt["Principal"], req):
        return False
    keys = req.keys()
    # Every operator, and every key under one operator, must hold (AND).
    return all(
        _operator_holds(op, key, _listed(wanted), keys)
        for op, pairs in stmt.get("Condition", {}).items()
        for key, wanted in pairs.items()
    )


def decide(policy: dict[str, Any], req: Request) -> Decision:
    """An explicit Deny wins; else an Allow that applies; else nothing."""
    applying = [s for s in policy["Statement"] if _applies(s, req)]
    if any(s["Effect"] == "Deny" for s in applying):
        return "deny"
    if any(s["Effect"] == "Allow" for s in applying):
        return "allow"
    return "neutral"


def may_send(queue_policy: dict[str, Any], req: Request, identity_allows: bool) -> bool:
    """Whether the send succeeds in the queue's own account: an explicit Deny in the queue
    policy stops it; else the queue policy or the caller's own policy must allow it (a
    service principal has no identity policy: only the queue policy can admit it)."""
    decision = decide(queue_policy, req)
    if decision == "deny":
        return False
    return decision == "allow" or (req.service is None and identity_allows)
