"""The local router: plays the serve functions' Lambda alias and CodeDeploy.

``/datasets/<dataset>/...`` goes to that dataset's serve app (the same FastAPI app
the Lambda runs), for the model version the rollout picks. During a rollout the
candidate's share of requests follows the schedule the deploy function wrote
(``dhow_local.serving``). The split is deterministic, not random: of
every ``1/share`` requests exactly one goes to the candidate, so a test can say
how many requests a bad canary may fail.

A controller thread steps the share on time (a schedule minute lasts
``DHOW_LOCAL_MINUTE_SECONDS``), and judges the candidate as the cloud's alarms do,
with the same definition (``shared.canary.CanaryRule``): on the candidate's own
requests, period by period (60 real seconds from the rollout's start; CloudWatch's
periods are clock minutes), over at least ``min_requests`` of them, a share of 5xx
answers above ``error_rate_threshold`` or a p99 latency above ``p99_latency_ms``
rolls back at once. At the end it publishes CodeDeploy's "Deployment State-change
Notification" (SUCCESS or FAILURE) on the default bus.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dhow_local.serving import RouterState, load_router_state, save_router_state
from shared.canary import PeriodCounts
from shared.capture import InferenceCapture
from shared.errors import DhowError
from shared.ports import LineageStore, ModelRegistry, ObjectStore
from shared.reasons import Reason
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
    """What one rollout saw: every version's answers, and the candidate's own requests
    per alarm period (what the alarms judge)."""

    deployment_id: str | None = None
    routed: int = 0
    candidate: PeriodCounts = field(default_factory=PeriodCounts)  # the whole rollout
    periods: dict[int, PeriodCounts] = field(default_factory=dict)
    by_version: dict[str, dict[str, int]] = field(default_factory=dict)


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
            dataset = route.spec.name

            # The app times its own /predict answers, as on Lambda: the same clock, with
            # the model's load left out (shared.canary), so a cold candidate is no slower
            # here than in the cloud.
            def observe(status: int, ms: float) -> None:
                self.observe(dataset, version, status, ms)

            app = model_app(
                route.spec, self._store, self._registry, version, route.capture, observe
            )
            route.apps[version] = app
        return app

    def _choose(self, route: DatasetRoute) -> int | None:
        state, stats = route.state, route.stats
        with self._lock:
            if state.status == "InProgress" and state.candidate is not None:
                n = stats.routed
                stats.routed += 1
                # Smooth deterministic split: exactly `share` of requests, evenly spread.
                if math.floor((n + 1) * state.share) > math.floor(n * state.share):
                    return state.candidate
                return state.stable if state.stable is not None else state.candidate
            return state.stable

    def observe(
        self,
        dataset: str,
        version: int,
        status: int,
        ms: float,
        at: datetime | None = None,
    ) -> None:
        """One answered ``/predict`` of ``version``: counted for its version, and for the
        alarms when it is the candidate of the rollout in progress."""
        route = self._route(dataset)
        at = at or datetime.now(UTC)
        with self._lock:
            stats, state = route.stats, route.state
            per = stats.by_version.setdefault(str(version), {"requests": 0, "errors": 0})
            per["requests"] += 1
            per["errors"] += int(status >= 500)
            judged = (
                state.status == "InProgress"
                and state.deployment_id == stats.deployment_id
                and state.candidate == version
                and state.started_at is not None
            )
            if not judged or state.started_at is None:
                return
            period = state.rule().period_s
            index = max(0, int((at - state.started_at).total_seconds() // period))
            stats.periods.setdefault(index, PeriodCounts()).add(status, ms)
            stats.candidate.add(status, ms)

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
        if path.startswith("/_router/periods/"):
            await _json(send, 200, self.periods(path.removeprefix("/_router/periods/")))
            return
        m = _PATH.match(path)
        if not m:
            await _json(send, 404, _err(Reason.NOT_FOUND, "use /datasets/<dataset>/predict"))
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
                    Reason.NOTHING_DEPLOYED,
                    f"no model of {dataset} is deployed yet",
                    Reason.NOTHING_DEPLOYED.hint,
                ),
            )
            return
        app = self._app(route, version)

        async def send_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-dhow-routed-version", str(version).encode()))
                message = {**message, "headers": headers}
            await send(message)

        sub_scope = dict(scope)
        sub_scope["root_path"] = scope.get("root_path", "") + f"/datasets/{dataset}"
        # Each judged request is observed by the app itself (see _app).
        await app(sub_scope, receive, send_watch)

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
            periods = [
                PeriodCounts(p.requests, p.errors, list(p.latencies_ms))
                for _, p in sorted(route.stats.periods.items())
            ]
        if state.status != "InProgress" or state.started_at is None:
            return
        if state.stepped_by == "deployer":
            # On Azure the deploy function steps and judges (it reads our counts from
            # /_router/periods, where it reads Azure Monitor in the cloud).
            return
        now = now or datetime.now(UTC)
        elapsed_min = (now - state.started_at).total_seconds() / self._minute
        rule = state.rule()
        verdict = next((v for v in map(rule.verdict, periods) if v is not None), None)
        # "errors: ..." or "p99-latency: ...": the reason names the alarm as the cloud's is.
        reason = None if verdict is None else f"alarm {self._serve_prefix}{dataset}-{verdict}"
        if reason is not None:
            new = state.rolled_back(reason)
            if save_router_state(self._lineage, row, new):
                log.warning("rolled back %s: %s", state.deployment_id, reason)
                with self._lock:
                    route.state = new
                self._publish(self._state_change(dataset, new, "FAILURE"))
            return
        share = state.share_due(elapsed_min)
        if share >= 1.0:
            new = state.succeeded()
            if save_router_state(self._lineage, row, new):
                with self._lock:
                    route.state = new
                self._publish(self._state_change(dataset, new, "SUCCESS"))
        elif share != state.share:
            new = state.model_copy(update={"share": share})
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

    def periods(self, dataset: str) -> dict[str, Any]:
        """The candidate's own requests per period of the rollout in progress, as Azure
        Monitor reports an endpoint deployment's minutes (requests, 5xx, p99)."""
        with self._lock:
            route = self._routes.get(dataset)
            if route is None:
                return {"deployment_id": None, "periods": []}
            return {
                "deployment_id": route.stats.deployment_id,
                "candidate": route.state.candidate,
                "periods": [
                    {"index": i, "requests": p.requests, "errors": p.errors, "p99_ms": p.p99_ms}
                    for i, p in sorted(route.stats.periods.items())
                ],
            }

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: {
                    **{
                        k: v
                        for k, v in route.state.stored().items()
                        if k
                        in ("stable", "candidate", "weight", "status", "deployment_id", "reason")
                    },
                    "traffic": route.state.traffic(),
                    # The candidate's own requests in this rollout (what the alarms judge).
                    "rollout": {
                        "requests": route.stats.candidate.requests,
                        "errors": route.stats.candidate.errors,
                        "p99_ms": round(route.stats.candidate.p99_ms, 2),
                    },
                    "by_version": route.stats.by_version,
                    "capture": route.capture.snapshot(),
                }
                for name, route in self._routes.items()
            }


def _err(reason: Reason, message: str, hint: str = "") -> dict[str, Any]:
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
    from dhow_local.kit import local_kit
    from shared.topology import build_topology
    from shared.wiring import build_model_registry, build_ports, serve_prefix

    topo = build_topology(settings.stage)
    ports = build_ports(settings, topo)
    return Router(
        ports.store,
        build_model_registry(settings, ports),
        ports.lineage,
        capture_container=topo.bucket("capture").name,
        serve_prefix=serve_prefix(settings),
        publish_state_change=local_kit(settings).publish_deployment_ended,
        specs_dir=settings.specs_dir,
        minute_seconds=settings.local_minute_seconds,
    )
