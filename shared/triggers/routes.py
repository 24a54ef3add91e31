"""One route table per function: the typed events it takes, each to a service method.

A function's ``core`` builds its service and one ``RouteTable``; its entry points hand
each message body to ``RouteTable.run``, which reads it with the registered shapes of
the events the table takes (``shared.triggers.registry``) and calls the route of each
event read. Whatever the table does not take (an unknown shape, or an event of a rule
mis-wired to this queue) is refused with ``EventParseError``: the message fails its
delivery, is retried, and ends in the DLQ (poison queue), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict

from pydantic import BaseModel

from shared.errors import EventParseError
from shared.events import DriftDetected, PipelineEvent
from shared.triggers.registry import (
    Payload,
    TriggerContext,
    TriggerShape,
    claiming,
    loads,
    shapes_producing,
    top_level_keys,
)


def kind_of(event: BaseModel) -> str:
    """An event's name as errors and logs say it: a pipeline event's type, or its class."""
    return event.event_type if isinstance(event, PipelineEvent) else type(event).__name__


class DriftPolicy(TypedDict):
    """A route's guard for the ``DriftDetected`` whose policy a function carries out."""

    when: Callable[[DriftDetected], bool]
    label: str


def drift_policy(action: Literal["retrain", "rollback"]) -> DriftPolicy:
    """Only a ``DriftDetected`` whose policy is ``action`` (each function owns one; the
    topology's rules route by it): ``.on(DriftDetected, ..., **drift_policy("retrain"))``."""
    return DriftPolicy(
        when=lambda event: event.action == action, label=f"a {action}'s DriftDetected"
    )


@dataclass(frozen=True)
class Route[S, E: BaseModel]:
    """Events of type ``event`` (for which ``when`` holds) go to ``call(service, event)``."""

    event: type[E]
    call: Callable[[S, E], object]
    when: Callable[[E], bool] | None
    # What the function takes, as its refusal of anything else says it.
    label: str

    def takes(self, event: BaseModel) -> bool:
        return isinstance(event, self.event) and (self.when is None or self.when(event))


@dataclass(frozen=True)
class RouteTable[S]:
    """The events one function takes and the service method each goes to.

    The service is passed to ``run`` on each call, not kept: the entry point passes its
    module's service as it is then (which a test may have replaced).
    """

    function: str  # as the errors name it ("train-launch")
    context: TriggerContext = field(default_factory=TriggerContext)
    routes: tuple[Route[S, Any], ...] = ()

    def on[E: BaseModel](
        self,
        event: type[E],
        call: Callable[[S, E], object],
        *,
        when: Callable[[E], bool] | None = None,
        label: str | None = None,
    ) -> RouteTable[S]:
        """This table with one more route: ``event`` (when ``when`` holds) to ``call``."""
        route: Route[S, Any] = Route(event, call, when, label or event.__name__)
        return replace(self, routes=(*self.routes, route))

    @property
    def shapes(self) -> tuple[type[TriggerShape], ...]:
        """The registered shapes this function reads: those of the events it takes."""
        return shapes_producing(r.event for r in self.routes)

    @property
    def takes(self) -> str:
        labels = [r.label for r in self.routes]
        return (
            " or ".join(labels) if len(labels) < 3 else ", ".join(labels[:-1]) + f" or {labels[-1]}"
        )

    def parse(self, body: Payload) -> list[BaseModel]:
        """The typed events of one message body, read by the one shape it is."""
        data = loads(body)
        shapes = self.shapes
        shape = claiming(data, shapes)
        if shape is None:
            raise EventParseError(
                f"payload is not a trigger {self.function} takes",
                hint=f"expected {', '.join(s.name for s in shapes)}; "
                f"top-level keys were {top_level_keys(data)}",
            )
        return shape.parse(data, self.context)

    def route_for(self, event: BaseModel) -> Route[S, Any]:
        """The route ``event`` takes, or the refusal of an event this function does not."""
        for route in self.routes:
            if route.takes(event):
                return route
        raise EventParseError(
            f"{self.function} takes {self.takes}, and was sent {kind_of(event)}",
            hint="check the event rules that feed its queue",
        )

    def run(self, body: Payload, service: S) -> None:
        """Every event of ``body`` to its route on ``service``; none runs unless all
        have one."""
        routed = [(self.route_for(event), event) for event in self.parse(body)]
        for route, event in routed:
            route.call(service, event)
