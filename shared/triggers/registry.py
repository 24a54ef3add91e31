"""The registry of trigger shapes: raw payloads in, typed events out.

Each shape a function can be sent (an S3 event through EventBridge, SageMaker's job
state changes, an Event Grid event on a Storage queue, a schedule's message, ...) is one
class with an ``infer`` classmethod that says whether a payload is its kind and a
``parse`` that reads the envelope and its body into typed events in one call. It is the
pattern mangum uses for its handlers (a list of classes with ``infer``) and powertools
for its envelopes, so adding a source is one class, never a branch in a chain.

Each cloud's module (``shared.triggers.aws``, ``shared.triggers.azure``) registers its
own shapes with ``register_shape``; ``shared.triggers.schedule`` holds the neutral ones.
A function reads only the shapes whose events its route table takes
(``shared.triggers.routes``): on one queue no two of them claim the same payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from shared.constants import EVENT_SOURCE
from shared.errors import ConfigError, EventParseError
from shared.events import PipelineEvent, parse_pipeline_event

Json = Mapping[str, Any]
Payload = str | bytes | Json | list[Any]


def loads(payload: Payload) -> Json:
    """One JSON object from a trigger body (text, bytes, or already decoded)."""
    data: Any = payload
    if isinstance(payload, str | bytes):
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventParseError(
                "trigger payload is not JSON",
                hint="expected an S3, EventBridge or Event Grid event",
            ) from exc
    if isinstance(data, list) and len(data) == 1:
        data = data[0]  # Event Grid delivers arrays; one event per message is our wiring
    if not isinstance(data, Mapping):
        raise EventParseError("trigger payload is not a JSON object", hint=f"got {type(data)}")
    return data


@dataclass(frozen=True)
class TriggerContext:
    """What a shape may need from its function's settings to read a payload."""

    # The start of every serve target's name (``<prefix><dataset>``): a deployment end of
    # any other target is not Dhow's. Only deploy's table sets it.
    serve_prefix: str | None = None

    def require_serve_prefix(self) -> str:
        if self.serve_prefix is None:
            raise ConfigError(
                "a deployment state change was read without the stage's serve prefix",
                hint="build the function's route table with TriggerContext(serve_prefix=...)",
            )
        return self.serve_prefix


class TriggerShape:
    """One kind of raw trigger: whether a payload is it, and the typed events it holds.

    Subclasses set ``name``, ``produces`` (the typed event class ``read`` returns),
    ``broken`` and ``hint`` (what the error says when a payload of this kind lacks a
    field), and implement ``infer`` and ``read``.
    """

    name: ClassVar[str]
    produces: ClassVar[type[BaseModel]]
    broken: ClassVar[str] = "payload is missing a field:"
    hint: ClassVar[str] = "compare it with tests/events/ for the expected shape"

    @classmethod
    def infer(cls, data: Json) -> bool:
        """Whether ``data`` is this shape (cheap: the envelope's marks, no parsing)."""
        raise NotImplementedError

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> Sequence[BaseModel]:
        """The typed events in ``data``; none for one that asks nothing (a test event, a
        deployment that has not ended). May raise KeyError, TypeError or ValueError."""
        raise NotImplementedError

    @classmethod
    def parse(cls, data: Json, context: TriggerContext | None = None) -> list[BaseModel]:
        """``read``, with a payload that lacks what this shape needs refused as such."""
        try:
            return list(cls.read(data, context or TriggerContext()))
        except (KeyError, TypeError, ValueError) as exc:
            # The first line: a pydantic error goes on to list every field, one per line.
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EventParseError(f"{cls.broken} {first}", hint=cls.hint) from exc


class PipelineEnvelope(TriggerShape):
    """A pipeline event in a cloud's envelope: from Dhow's source, its type under
    ``type_field`` and its body under ``body_field`` (``shared.events``)."""

    produces = PipelineEvent
    broken = "pipeline event is missing a field:"
    type_field: ClassVar[str]
    body_field: ClassVar[str]

    @classmethod
    def infer(cls, data: Json) -> bool:
        return data.get("source") == EVENT_SOURCE and cls.type_field in data

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[PipelineEvent]:
        return [parse_pipeline_event(str(data[cls.type_field]), data[cls.body_field])]


SHAPES: list[type[TriggerShape]] = []


def register_shape[S: type[TriggerShape]](shape: S) -> S:
    """Add ``shape`` to the registry (a class decorator; a cloud's kit registers its own)."""
    if shape not in SHAPES:
        SHAPES.append(shape)
    return shape


def shapes_producing(kinds: Iterable[type[BaseModel]]) -> tuple[type[TriggerShape], ...]:
    """The registered shapes whose events are (or may be) of one of ``kinds``."""
    wanted = tuple(kinds)
    return tuple(
        s
        for s in SHAPES
        if any(issubclass(s.produces, k) or issubclass(k, s.produces) for k in wanted)
    )


def claiming(data: Json, shapes: Sequence[type[TriggerShape]]) -> type[TriggerShape] | None:
    """The first of ``shapes`` that says ``data`` is its kind."""
    return next((s for s in shapes if s.infer(data)), None)


def parse_as[E: BaseModel](
    payload: Payload,
    kind: type[E],
    *,
    refused: str,
    hint: str | Callable[[Json], str],
    context: TriggerContext | None = None,
) -> list[E]:
    """The events of type ``kind`` in ``payload``, read by the one registered shape it is;
    ``refused`` and ``hint`` (of the payload) say what was expected when no shape of
    ``kind`` claims it, or it holds an event of another type."""
    data = loads(payload)
    shape = claiming(data, shapes_producing([kind]))
    events = shape.parse(data, context) if shape is not None else None
    if events is None or not all(isinstance(e, kind) for e in events):
        raise EventParseError(refused, hint=hint if isinstance(hint, str) else hint(data))
    return [e for e in events if isinstance(e, kind)]


def parse_one[E: BaseModel](
    payload: Payload, kind: type[E], refused: str, hint: str | Callable[[Json], str]
) -> E:
    """The one event of type ``kind`` in ``payload`` (``parse_as``)."""
    [event] = parse_as(payload, kind, refused=refused, hint=hint)
    return event


def top_level_keys(data: Json) -> list[str]:
    """A payload's first few top-level keys, for an error that says what came instead."""
    return sorted(data)[:8]
