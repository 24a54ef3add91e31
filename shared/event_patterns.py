"""EventBridge event patterns, evaluated here for the places no EventBridge runs.

The topology writes its routing rules as EventBridge patterns. On AWS EventBridge
evaluates them; the Pulumi program turns the pipeline bus's rules into Event Grid
filters for Azure; and the local platform on Azure, which has no Event Grid,
routes each event with ``matches`` below. Only the subset the topology uses is
understood: nested objects, lists of exact values, and ``{"prefix": ...}``. Any
other operator raises, so a new rule cannot silently match nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _value_matches(allowed: list[Any], value: Any) -> bool:
    for option in allowed:
        if isinstance(option, Mapping):
            if set(option) != {"prefix"}:
                raise ValueError(f"unsupported pattern operator {sorted(option)}")
            if isinstance(value, str) and value.startswith(str(option["prefix"])):
                return True
        elif value == option:
            return True
    return False


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """True if ``event`` (an EventBridge-shaped envelope, or a part of one) matches."""
    for key, wanted in pattern.items():
        if isinstance(wanted, Mapping):
            inner = event.get(key)
            if not isinstance(inner, Mapping) or not matches(wanted, inner):
                return False
        elif isinstance(wanted, list):
            if key not in event or not _value_matches(wanted, event[key]):
                return False
        else:
            raise ValueError(f"pattern field {key!r} must be a list or an object")
    return True
