"""The local router: plays the serve functions' Lambda alias and CodeDeploy.

``/datasets/<dataset>/...`` goes to that dataset's serve app (the same FastAPI app
the Lambda runs), for the model version the rollout picks. During a rollout the
candidate's share of requests follows the schedule the deploy function wrote
(``shared.adapters.local_serving``). The split is deterministic, not random: of
every ``1/share`` requests exactly one goes to the candidate, so a test can say
how many requests a bad canary may fail.

A controller thread steps the share on time (a schedule minute lasts
``DHOW_LOCAL_MINUTE_SECONDS``), and judges the alarms the stack sets in the
cloud: over at least ``min_requests`` requests since the rollout began, a share
of 5xx answers above ``error_rate_threshold`` or a p99 latency above
``p99_latency_ms`` rolls back at once. At the end it publishes CodeDeploy's
"Deployment State-change Notification" (SUCCESS or FAILURE) on the default bus.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.adapters.local_serving import RouterState, load_router_state, save_router_state
from shared.capture import InferenceCapture
from shared.errors import DhowError
from shared.ports import LineageStore, ModelRegistry, ObjectStore
from shared.serve_app import model_app
from shared.specs import DatasetSpec, load_spec, specs_dir

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PATH = re.compile(r"^/datasets/([a-z0-9][a-z0-9_-]{0,62})(/.*)?$")


@dataclass
class RolloutStats:
    """What the alias saw since one rollout began (both versions), for the alarms."""

    deployment_id: str | None = None
    routed: int = 0
    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    by_version: dict[str, dict[str, int]] = field(default_factory=dict)

    def p99_ms(self) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class DatasetRoute:
    spec: DatasetSpec
    capture: InferenceCapture
    apps: dict[int, ASGIApp] = field(default_factory=dict)
    state: RouterState = field(default_factory=RouterState)
    stats: RolloutStats = field(default_factory=RolloutStats)


class Router:
    """The ASGI app and its controller. ``publish_state_change`` puts CodeDeploy's event."""

    def __init__(
        self,
        store: ObjectStore,
        registry: ModelRegistry,
        lineage: LineageStore,
        *,
        capture_container: str,
        serve_prefix: str,
        publish_state_change: Callable[[dict[str, Any]], None],
        specs_dir: str | None = None,
        minute_seconds: float = 60.0,
        tick_s: float = 0.2,
    ) -> None:
        self._store = store
        self._registry = registry
        self._lineage = lineage
        self._capture_container = capture_container
        self._serve_prefix = serve_prefix
        self._publish = publish_state_change
        self._specs = specs_dir
        self._minute = minute_seconds
        self._tick = tick_s
        self._routes: dict[str, DatasetRoute] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- requests -------------------------------------------------------------

    def _route(self, dataset: str) -> DatasetRoute:
        with self._lock:
            route = self._routes.get(dataset)
        if route is None:
            spec = load_spec(dataset, self._specs)
            capture = InferenceCapture.for_spec(self._store, self._capture_container, spec)
            route = DatasetRoute(spec, capture)
            route.state, _ = load_router_state(self._lineage, dataset)
            with self._lock:
                route = self._routes.setdefault(dataset, route)
        return route

    def _app(self, route: DatasetRoute, version: int) -> ASGIApp:
        app = route.apps.get(version)
        if app is None:
            app = model_app(route.spec, self._store, self._registry, version, route.capture)
            route.apps[version] = app
        return app

    def _choose(self, route: DatasetRoute) -> int | None:
        state, stats = route.state, route.stats
        with self._lock:
            if state.status == "InProgress" and state.candidate is not None:
                n = stats.routed
                stats.routed += 1
                # Smooth deterministic split: exactly `weight` of requests, evenly spread.
                if math.floor((n + 1) * state.weight) > math.floor(n * state.weight):
                    return state.candidate
                return state.stable if state.stable is not None else state.candidate
            return state.stable

    def _observe(
        self, route: DatasetRoute, deployment_id: str | None, version: int, status: int, ms: float
    ) -> None:
        with self._lock:
            stats = route.stats
            per = stats.by_version.setdefault(str(version), {"requests": 0, "errors": 0})
            per["requests"] += 1
            per["errors"] += int(status >= 500)
            if deployment_id is None or deployment_id != stats.deployment_id:
                return
            stats.requests += 1
            stats.errors += int(status >= 500)
            stats.latencies_ms.append(ms)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/_router/status":
            await _json(send, 200, self.status())
            return
        m = _PATH.match(path)
        if not m:
            await _json(send, 404, _err("not_found", "use /datasets/<dataset>/predict"))
            return
        dataset = m.group(1)
        try:
            route = await asyncio.to_thread(self._route, dataset)
        except DhowError as exc:
            await _json(send, 404, {"error": exc.as_dict()})
            return
        version = self._choose(route)
        if version is None:
            await _json(
                send,
                503,
                _err(
                    "nothing_deployed",
                    f"no model of {dataset} is deployed yet",
                    "upload data: an approved model is deployed by itself",
                ),
            )
            return
        deployment_id = route.state.deployment_id if route.state.status == "InProgress" else None
        app = self._app(route, version)
        status_seen = 500

        async def send_watch(message: Message) -> None:
            nonlocal status_seen
            if message["type"] == "http.response.start":
                status_seen = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-dhow-routed-version", str(version).encode()))
                message = {**message, "headers": headers}
            await send(message)

        sub_scope = dict(scope)
        sub_scope["root_path"] = scope.get("root_path", "") + f"/datasets/{dataset}"
        t0 = time.perf_counter()
        try:
            await app(sub_scope, receive, send_watch)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            if m.group(2) and m.group(2).startswith("/predict"):
                self._observe(route, deployment_id, version, status_seen, ms)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the controller -------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="router-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for route in list(self._routes.values()):
            route.capture.flush()

    def _datasets(self) -> list[str]:
        """Every dataset with a spec: a rollout must finish even if nobody calls it."""
        return sorted({p.stem for p in specs_dir(self._specs).glob("*.yaml")} | set(self._routes))

    def _loop(self) -> None:
        while not self._stop.wait(self._tick):
            for dataset in self._datasets():
                try:
                    self.tick(dataset)
                except Exception:
                    log.exception("router controller failed for %s; retrying", dataset)

    def tick(self, dataset: str, now: datetime | None = None) -> None:
        """Refresh the rollout from its row, step it, and judge its alarms."""
        route = self._route(dataset)
        route.capture.flush_if_due()
        state, row = load_router_state(self._lineage, dataset)
        with self._lock:
            if state.deployment_id != route.stats.deployment_id:
                route.stats = RolloutStats(deployment_id=state.deployment_id)
            route.state = state
            stats = route.stats
            requests, errors, p99 = stats.requests, stats.errors, stats.p99_ms()
        if state.status != "InProgress" or state.started_at is None:
            return
        now = now or datetime.now(UTC)
        elapsed_min = (now - state.started_at).total_seconds() / self._minute
        reason = None
        if requests >= state.min_requests:
            rate = errors / requests
            if rate > state.error_rate_threshold:
                reason = (
                    f"alarm {self._serve_prefix}{dataset}-errors: {errors} of {requests} requests "
                    f"failed ({rate:.1%} > {state.error_rate_threshold:.1%})"
                )
            elif p99 > state.p99_latency_ms:
                reason = (
                    f"alarm {self._serve_prefix}{dataset}-p99-latency: p99 {p99:.0f} ms over "
                    f"{requests} requests > {state.p99_latency_ms} ms"
                )
        if reason is not None:
            new = state.model_copy(
                update={"candidate": None, "weight": 0.0, "status": "RolledBack", "reason": reason}
            )
            if save_router_state(self._lineage, row, new):
                log.warning("rolled back %s: %s", state.deployment_id, reason)
                with self._lock:
                    route.state = new
                self._publish(self._state_change(dataset, new, "FAILURE"))
            return
        share = max((w for at, w in state.schedule if at <= elapsed_min), default=state.weight)
        if share >= 1.0:
            new = state.model_copy(
                update={"stable": state.candidate, "candidate": None, "weight": 0.0}
            )
            new = new.model_copy(update={"status": "Succeeded"})
            if save_router_state(self._lineage, row, new):
                with self._lock:
                    route.state = new
                self._publish(self._state_change(dataset, new, "SUCCESS"))
        elif share != state.weight:
            new = state.model_copy(update={"weight": share})
            if save_router_state(self._lineage, row, new):
                with self._lock:
                    route.state = new

    def _state_change(self, dataset: str, state: RouterState, result: str) -> dict[str, Any]:
        return {
            "application": f"{self._serve_prefix.removesuffix('serve-')}serving",
            "deploymentGroup": f"{self._serve_prefix}{dataset}",
            "deploymentId": state.deployment_id,
            "state": result,
            "instanceGroupId": state.deployment_id,
        }

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: {
                    **route.state.model_dump(
                        mode="json",
                        include={
                            "stable",
                            "candidate",
                            "weight",
                            "status",
                            "deployment_id",
                            "reason",
                        },
                    ),
                    "traffic": route.state.traffic(),
                    "rollout": {
                        "requests": route.stats.requests,
                        "errors": route.stats.errors,
                        "p99_ms": round(route.stats.p99_ms(), 2),
                    },
                    "by_version": route.stats.by_version,
                    "capture": route.capture.snapshot(),
                }
                for name, route in self._routes.items()
            }


def _err(reason: str, message: str, hint: str = "") -> dict[str, Any]:
    return {"error": {"reason": reason, "message": message, "hint": hint}}


async def _json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload, default=str).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_router(settings: Any) -> Router:
    """The router for the local platform's settings (LocalStack and moto, or Azurite).

    It plays CodeDeploy on both clouds, so its end-of-rollout notification has
    CodeDeploy's shape: on the default bus on AWS, and on Azure straight to the queue
    the deploy function reads (what the serving rule targets).
    """
    from shared.topology import build_topology
    from shared.triggers import CODEDEPLOY_STATE_CHANGE
    from shared.wiring import build_model_registry, build_ports, serve_prefix

    topo = build_topology(settings.stage)
    ports = build_ports(settings, topo)
    publish: Callable[[dict[str, Any]], None]
    if settings.cloud == "azure":
        from shared.adapters.azure import LocalEventGrid, azure_clients

        grid = LocalEventGrid(azure_clients(settings), topo)

        def publish(detail: dict[str, Any]) -> None:
            grid.deliver_system_event(
                "serving_deployment_ended",
                {
                    "source": "aws.codedeploy",
                    "detail-type": CODEDEPLOY_STATE_CHANGE,
                    "detail": {**detail, "region": settings.azure_location},
                },
            )
    else:
        from shared.adapters.aws import aws_client

        events = aws_client("events", settings)

        def publish(detail: dict[str, Any]) -> None:
            events.put_events(
                Entries=[
                    {
                        "Source": "aws.codedeploy",
                        "DetailType": CODEDEPLOY_STATE_CHANGE,
                        "Detail": json.dumps({**detail, "region": settings.aws_region}),
                        "EventBusName": "default",
                    }
                ]
            )

    return Router(
        ports.store,
        build_model_registry(settings, ports),
        ports.lineage,
        capture_container=topo.bucket("capture").name,
        serve_prefix=serve_prefix(settings),
        publish_state_change=publish,
        specs_dir=settings.specs_dir,
        minute_seconds=settings.local_minute_seconds,
    )
