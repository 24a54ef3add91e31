"""The cloud stacks, registered by cloud name: ``__main__`` and the mocked runs ask this
registry for the stack of ``dhow:cloud`` instead of branching on it, so adding a cloud
means one package ``infra/<cloud>/`` with a ``stack`` module and one line here.

Each stack module is imported only when its cloud is asked for: an AWS stack never
loads the Azure SDK, nor the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pulumi

from infra.config import StackConfig, StackConfigError


class CloudStack(Protocol):
    """What a cloud's ``infra/<cloud>/stack.py`` offers the program."""

    def region(self, cfg: StackConfig) -> str:
        """The one region (AWS) or location (Azure) the stack creates everything in."""
        ...

    def preflight(self, cfg: StackConfig) -> None:
        """Refuse, with ``StackConfigError`` naming the make target, a stack whose built
        artifacts (layers, app package) are missing: before anything is created."""
        ...

    def build(self, cfg: StackConfig) -> dict[str, pulumi.Input[object]]:
        """Create the stack's resources; returns what ``__main__`` exports."""
        ...


def _aws() -> CloudStack:
    from infra.aws import stack

    return stack


def _azure() -> CloudStack:
    from infra.azure import stack

    return stack


STACKS: dict[str, Callable[[], CloudStack]] = {"aws": _aws, "azure": _azure}


def stack_for(cloud: str) -> CloudStack:
    """The registered stack of ``cloud``, or ``StackConfigError`` naming the clouds."""
    try:
        return STACKS[cloud]()
    except KeyError:
        raise StackConfigError(
            f"no stack for cloud {cloud!r}: set dhow:cloud to one of {', '.join(STACKS)}"
        ) from None
