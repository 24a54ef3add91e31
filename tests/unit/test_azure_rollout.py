"""The progressive rollout on Azure (issue 15, defect 8): the deploy function steps the
spec's schedule with delayed checks on its own queue and judges the candidate on its own
minutes with ``CanaryRule``, on an Azure ML online endpoint in the cloud and on the local
router locally, through the same ``SteppedRolloutDeployer``.

Azure cannot run here: the requests are asserted as sent, the entities through azure-ai-ml's
own validation, the metrics query against the documented parameters of Metrics - List.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint
from azure.ai.ml.entities._endpoint._endpoint_helpers import (
    validate_endpoint_or_deployment_name,
)
from dhow_local.serving import RouterMetrics, RouterTraffic, load_router_state

from shared.adapters.azure_serving import (
    CHECK_KEY,
    AzureMonitorEndpointMetrics,
    CandidateMetrics,
    CheckTimer,
    OnlineEndpointTraffic,
    QueueCheckTimer,
    RolloutState,
    SteppedRolloutDeployer,
    TrafficSplit,
    check_delay_s,
    deployment_name,
    endpoint_name,
)
from shared.canary import CanaryRule, PeriodCounts, endpoint_periods
from shared.cloud_facts import fact, value
from shared.errors import ConfigError
from shared.ports import DeploymentPlan
from tests.helpers import MemoryLineage
from tests.helpers import deployment_plan as plan

PREFIX = "dhow-prod-serve-"
T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
RULE = CanaryRule(min_requests=20, max_error_rate=0.05, max_p99_ms=2000)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Weights(TrafficSplit):
    def __init__(self) -> None:
        self.sets: list[dict[int, int]] = []
        self.prepared: list[int] = []

    def prepare(self, p: DeploymentPlan) -> None:
        self.prepared.append(p.model_version)

    def set(self, dataset: str, weights: Mapping[int, int], state: RolloutState) -> None:
        self.sets.append(dict(weights))


class Minutes(CandidateMetrics):
    def __init__(self) -> None:
        self.minutes: list[PeriodCounts] = []

    def periods(
        self, dataset: str, state: RolloutState, until: datetime
    ) -> dict[datetime, PeriodCounts]:
        return {T0 + timedelta(minutes=i): m for i, m in enumerate(self.minutes)}


class Timer(CheckTimer):
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def after(self, seconds: int, body: str) -> None:
        self.sent.append((seconds, body))


def rig() -> tuple[SteppedRolloutDeployer, Weights, Minutes, Timer, Clock]:
    weights, minutes, timer, clock = Weights(), Minutes(), Timer(), Clock()
    deployer = SteppedRolloutDeployer(
        MemoryLineage(), weights, minutes, timer, alarm_prefix=PREFIX, clock=clock
    )
    # v1 serves: its own all-at-once rollout ended.
    first = deployer.start(plan(1, None)).deployment_id
    clock.now += timedelta(seconds=1)
    assert deployer.advance("customers", first) is not None
    weights.sets.clear()
    timer.sent.clear()
    return deployer, weights, minutes, timer, clock


def test_a_healthy_canary_steps_on_schedule_and_completes() -> None:
    deployer, weights, minutes, timer, clock = rig()
    clock.now = T0 + timedelta(hours=1)
    started = clock.now
    rollout = deployer.start(plan()).deployment_id
    assert weights.sets == [{1: 90, 2: 10}]
    assert deployer.traffic("customers") == {"1": 0.9, "2": 0.1}
    # Checked each minute (the metrics period), not only at the step's end.
    assert timer.sent[-1][0] == 60
    assert json.loads(timer.sent[-1][1]) == {
        CHECK_KEY: {"dataset": "customers", "deployment_id": rollout}
    }
    minutes.minutes = [PeriodCounts(30, 1, [50.0] * 30)]  # 3.3%: under 5%
    for minute in range(1, 5):
        clock.now = started + timedelta(minutes=minute)
        assert deployer.advance("customers", rollout) is None
    clock.now = started + timedelta(minutes=5)
    end = deployer.advance("customers", rollout)
    assert end is not None
    assert end.status == "Succeeded"
    assert weights.sets[-1] == {2: 100}
    assert deployer.traffic("customers") == {"2": 1.0}


def test_a_failing_canary_rolls_back_at_the_first_failing_minute() -> None:
    deployer, weights, minutes, _timer, clock = rig()
    clock.now = T0 + timedelta(hours=1)
    rollout = deployer.start(plan()).deployment_id
    clock.now += timedelta(minutes=1)
    minutes.minutes = [PeriodCounts(20, 8, [50.0] * 20)]
    end = deployer.advance("customers", rollout)
    assert end is not None
    assert end.status == "RolledBack"
    assert end.reason == (
        "alarm dhow-prod-serve-customers-errors: 8 of 20 requests failed (40.0% > 5.0%)"
    )
    assert weights.sets[-1] == {1: 100}
    assert deployer.failure_reason("customers", rollout) == end.reason
    # A check that arrives after the end changes nothing.
    assert deployer.advance("customers", rollout) is None


class LateAzureMonitor(AzureMonitorEndpointMetrics):
    """Azure Monitor as documented: a minute's point lands up to the latency after the
    minute ends (fact azure.monitor.platform_metrics_latency). ``minutes`` are the
    candidate's true counts per clock minute; ``landed_after`` how long each took."""

    def __init__(self, clock: Clock, landed_after: float) -> None:
        self.minutes: dict[datetime, tuple[int, int]] = {}
        self._clock, self._landed = clock, landed_after
        self.asked: list[datetime] = []

        def get(path: str, params: Mapping[str, str]) -> Mapping[str, Any]:
            self.asked.append(clock())
            landed = [
                (t, n, e)
                for t, (n, e) in sorted(self.minutes.items())
                if t + timedelta(minutes=1, seconds=self._landed) <= clock()
            ]
            # Metrics - List answers the metrics the query names, no others.
            named = params["metricnames"].split(",")
            answer = _minute_points(landed)
            return {"value": [m for m in answer["value"] if m["name"]["value"] in named]}

        super().__init__(lambda _d: "/subscriptions/s/onlineEndpoints/e", get)


def _minute_points(minutes: list[tuple[datetime, int, int]]) -> dict[str, Any]:
    def series(cls: str, values: list[tuple[datetime, int]]) -> dict[str, Any]:
        return {
            "metadatavalues": [{"name": {"value": "statusCodeClass"}, "value": cls}],
            "data": [
                {"timeStamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "average": float(v)}
                for t, v in values
                if v
            ],
        }

    return {
        "value": [
            {
                "name": {"value": "RequestsPerMinute"},
                "timeseries": [
                    series("2xx", [(t, n - e) for t, n, e in minutes]),
                    series("5xx", [(t, e) for t, _, e in minutes]),
                ],
            },
            {
                "name": {"value": "RequestLatency_P99"},
                "timeseries": [
                    {
                        "metadatavalues": [],
                        "data": [
                            {"timeStamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "average": 40.0}
                            for t, _, _ in minutes
                        ],
                    }
                ],
            },
        ]
    }


def _late_rig(landed_after: float) -> tuple[SteppedRolloutDeployer, LateAzureMonitor, Timer, Clock]:
    weights, timer, clock = Weights(), Timer(), Clock()
    metrics = LateAzureMonitor(clock, landed_after)
    deployer = SteppedRolloutDeployer(
        MemoryLineage(), weights, metrics, timer, alarm_prefix=PREFIX, clock=clock
    )
    first = deployer.start(plan(1, None)).deployment_id
    clock.now += timedelta(seconds=1)
    assert deployer.advance("customers", first) is not None
    timer.sent.clear()
    return deployer, metrics, timer, clock


def _run_checks(deployer: SteppedRolloutDeployer, timer: Timer, clock: Clock) -> Any:
    """Deliver each check when it is due, as the deploy queue does, until the end."""
    for _ in range(50):
        seconds, body = timer.sent.pop()
        clock.now += timedelta(seconds=seconds)
        check = json.loads(body)[CHECK_KEY]
        end = deployer.advance(check["dataset"], check["deployment_id"])
        if end is not None:
            return end
    raise AssertionError("the rollout never ended")


def test_a_failing_last_minute_that_lands_late_still_rolls_the_candidate_back() -> None:
    """Before: at the step's end the deployer judged the minutes that had landed and
    promoted the candidate while its failing last minute was still on its way."""
    latency = value("azure.monitor.platform_metrics_latency")["seconds"]
    assert fact("azure.monitor.platform_metrics_latency").source.endswith("data-ingestion-time")
    deployer, metrics, timer, clock = _late_rig(landed_after=latency)
    start = clock.now = T0 + timedelta(hours=1)
    rollout = deployer.start(plan()).deployment_id
    for minute in range(4):
        metrics.minutes[start + timedelta(minutes=minute)] = (30, 0)
    metrics.minutes[start + timedelta(minutes=4)] = (30, 12)  # it fails in its last minute
    end = _run_checks(deployer, timer, clock)
    assert (end.status, end.deployment_id) == ("RolledBack", rollout)
    assert "-errors: 12 of 30" in (end.reason or "")
    assert deployer.traffic("customers") == {"1": 1.0}
    # Judged once the step's last minute had landed: its end plus the latency.
    assert clock.now == start + timedelta(minutes=5, seconds=latency)


def test_a_healthy_canary_is_promoted_once_its_last_minute_has_landed() -> None:
    latency = value("azure.monitor.platform_metrics_latency")["seconds"]
    deployer, metrics, timer, clock = _late_rig(landed_after=latency)
    start = clock.now = T0 + timedelta(hours=1, seconds=20)  # not on a clock minute
    rollout = deployer.start(plan()).deployment_id
    for minute in range(6):
        metrics.minutes[T0 + timedelta(hours=1, minutes=minute)] = (30, 0)
    end = _run_checks(deployer, timer, clock)
    assert end.status == "Succeeded"
    assert end.deployment_id == rollout
    # The step ends at 11:05:20, inside the clock minute 11:05, which lands at 11:07.
    assert clock.now == T0 + timedelta(hours=1, minutes=6, seconds=latency)
    assert start < clock.now


def test_a_minute_that_never_lands_is_not_a_pass() -> None:
    """A gap in the candidate's minutes while it has traffic is not known, so it is waited
    for (bounded) and then refused: the candidate is not promoted on missing numbers."""
    latency = value("azure.monitor.platform_metrics_latency")["seconds"]
    deployer, metrics, timer, clock = _late_rig(landed_after=latency)
    start = clock.now = T0 + timedelta(hours=1)
    deployer.start(plan())
    for minute in (0, 1, 2, 4):  # minute 3 never arrives
        metrics.minutes[start + timedelta(minutes=minute)] = (30, 0)
    end = _run_checks(deployer, timer, clock)
    assert end.status == "RolledBack"
    assert "11:03" in (end.reason or "")
    waited = (clock.now - (start + timedelta(minutes=5))).total_seconds()
    assert latency < waited <= 7 * latency  # it waited, and not for ever


def test_a_linear_rollout_takes_each_step_of_the_spec() -> None:
    deployer, weights, _minutes, _timer, clock = rig()
    start = clock.now = T0 + timedelta(hours=1)
    rollout = deployer.start(plan(strategy="linear", step_percent=25, interval_minutes=2))
    for minute in range(1, 8):
        clock.now = start + timedelta(minutes=minute)
        deployer.advance("customers", rollout.deployment_id)
    shares = [w[2] for w in weights.sets]
    assert shares == [25, 50, 75, 100]


def test_a_step_longer_than_a_queue_message_can_wait_is_refused_before_anything_moves() -> None:
    limit = value("azure.storage.queue_visibility_max")["seconds"]
    assert fact("azure.storage.queue_visibility_max").source.endswith("put-message")
    assert check_delay_s(limit) == limit
    with pytest.raises(ConfigError):
        check_delay_s(limit + 1)
    deployer, weights, _m, _t, _c = rig()
    with pytest.raises(ConfigError):
        deployer.start(plan(interval_minutes=limit // 60 + 1))
    assert weights.sets == []


def test_the_check_is_sent_invisible_for_its_delay() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    class Queue:
        def send_message(self, body: str, **kw: Any) -> None:
            sent.append((body, kw))

    QueueCheckTimer(Queue()).after(300, "{}")
    assert sent == [("{}", {"visibility_timeout": 300})]


# -- Azure Monitor's numbers, judged by the same rule as the AWS alarms and the router ------


def _metrics_response(minutes: list[tuple[int, int, float]]) -> dict[str, Any]:
    """A Metrics - List answer for a deployment: RequestsPerMinute split by statusCodeClass
    and RequestLatency_P99, one point a minute, as Azure Monitor returns it."""

    def points(values: list[float | None]) -> list[dict[str, Any]]:
        return [
            {"timeStamp": f"2026-11-23T10:{i:02d}:00Z", **({} if v is None else {"average": v})}
            for i, v in enumerate(values)
        ]

    def series(cls: str, values: list[float | None]) -> dict[str, Any]:
        return {
            "metadatavalues": [{"name": {"value": "statusCodeClass"}, "value": cls}],
            "data": points(values),
        }

    return {
        "value": [
            {
                "name": {"value": "RequestsPerMinute"},
                "timeseries": [
                    series("2xx", [float(n - e) if n else None for n, e, _ in minutes]),
                    series("5xx", [float(e) if e else None for _, e, _ in minutes]),
                ],
            },
            {
                "name": {"value": "RequestLatency_P99"},
                "timeseries": [{"metadatavalues": [], "data": points([p for _, _, p in minutes])}],
            },
        ]
    }


@pytest.mark.parametrize(
    ("requests", "errors", "slow"),
    [(n, e, s) for n in (0, 19, 20, 100) for e in (0, 1, 5, 6, 40) for s in (0, 1, 2) if e <= n],
)
def test_azure_monitor_minutes_get_the_verdict_the_router_gives_on_the_same_counts(
    requests: int, errors: int, slow: int
) -> None:
    latencies = [3000.0] * min(slow, requests) + [50.0] * (requests - min(slow, requests))
    counted = PeriodCounts(requests, errors, latencies)  # what the router counts
    reported = endpoint_periods(_metrics_response([(requests, errors, counted.p99_ms)]))
    as_azure = reported[0] if reported else PeriodCounts()
    assert (as_azure.requests, as_azure.errors) == (requests, errors)
    assert RULE.verdict(as_azure) == RULE.verdict(counted)


def _answer_for(params: Mapping[str, str], minutes: list[tuple[int, int, float]]) -> dict[str, Any]:
    """What Metrics - List answers a query: only the metrics it names."""
    named = params["metricnames"].split(",")
    full = _metrics_response(minutes)
    return {"value": [m for m in full["value"] if m["name"]["value"] in named]}


def test_the_metrics_query_asks_for_the_candidates_own_minutes() -> None:
    metrics = fact("azure.serving.endpoint_metrics").value
    api = value("azure.monitor.metrics_list")
    resource = (
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/"
        "workspaces/w/onlineEndpoints/dhow-prod-customers"
    )
    calls: list[tuple[str, Mapping[str, str]]] = []

    def get(path: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        calls.append((path, params))
        return _answer_for(params, [(20, 8, 40.0)])

    state = RolloutState(
        deployment_id="r",
        stable=1,
        candidate=2,
        started_at=T0 + timedelta(seconds=30),
        status="InProgress",
    )
    source = AzureMonitorEndpointMetrics(lambda _d: resource, get)
    periods = source.periods("customers", state, T0 + timedelta(minutes=3, seconds=5))
    assert list(periods) == [T0]  # the minute's own timeStamp
    # Both answers count: 20 requests, 8 of them 5xx, the p99 from the latency query.
    assert (periods[T0].requests, periods[T0].errors) == (20, 8)
    assert periods[T0].p99_ms == 40.0
    assert RULE.verdict(periods[T0]) is not None
    by_metric = {params["metricnames"]: params for _path, params in calls}
    assert set(by_metric) == {metrics["requests"], metrics["p99"]}
    for path, params in calls:
        assert path == resource + api["path_suffix"]
        assert set(params) <= set(api["parameters"])
        assert params["interval"] == metrics["time_grain"]
        assert params["aggregation"] == metrics["aggregation"]
        # Whole clock minutes, from the rollout's start to the minute after now.
        assert params["timespan"] == "2026-11-23T10:00:00Z/2026-11-23T10:04:00Z"
    # The candidate deployment alone, its requests split by status class.
    d = deployment_name(2)
    assert by_metric[metrics["requests"]]["$filter"] == (
        f"deployment eq '{d}' and statusCodeClass eq '*'"
    )
    assert by_metric[metrics["p99"]]["$filter"] == f"deployment eq '{d}'"


def test_no_metrics_query_filters_on_a_dimension_one_of_its_metrics_lacks() -> None:
    """Metrics - List refuses such a filter (the api-version sent has no
    ValidateDimensions=false): RequestLatency_P99 has no statusCodeClass, so asking for it
    with the requests' split made every rollout check fail."""
    validated = value("azure.monitor.metrics_filter_dimensions_validated")
    dimensions = value("azure.serving.endpoint_metric_dimensions")
    assert validated["default"] is True
    from shared.adapters.azure_serving import METRICS_API_VERSION

    state = RolloutState(
        deployment_id="r", stable=1, candidate=2, started_at=T0, status="InProgress"
    )
    source = AzureMonitorEndpointMetrics(lambda _d: "/x", lambda _p, _q: {})
    sent = source.requests("customers", state, T0 + timedelta(minutes=5))
    assert sent
    named_metrics: set[str] = set()
    for _path, params in sent:
        if params["api-version"] in validated["without_parameter"]:
            assert validated["parameter"] not in params
        assert params["api-version"] == METRICS_API_VERSION
        filtered = set(re.findall(r"(\w+) eq '", params["$filter"]))
        assert "deployment" in filtered  # the candidate's own numbers, always
        for metric in params["metricnames"].split(","):
            named_metrics.add(metric)
            assert filtered <= set(dimensions[metric]), (metric, params["$filter"])
    assert named_metrics == {"RequestsPerMinute", "RequestLatency_P99"}


# -- the endpoint's requests, checked by azure-ai-ml's own entities -------------------------


class _Poller:
    def result(self) -> None:
        return None


class _Operations:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.endpoint = ManagedOnlineEndpoint(name="dhow-prod-customers", auth_mode="aad_token")

    def get(self, name: str) -> ManagedOnlineEndpoint:
        assert name == self.endpoint.name
        return self.endpoint

    def begin_create_or_update(self, entity: Any) -> _Poller:
        self.sent.append(entity)
        return _Poller()


class _MLClient:
    def __init__(self) -> None:
        self.online_endpoints = _Operations()
        self.online_deployments = _Operations()


def test_endpoint_and_deployment_names_follow_azure_mls_own_rule() -> None:
    rule = value("azure.serving.endpoint_name")
    for stage, dataset in [("prod", "customers"), ("a-very-long-stage-name", "churn_2026")]:
        name = endpoint_name(stage, dataset)
        validate_endpoint_or_deployment_name(name)  # raises when azure-ai-ml would refuse
        assert rule["min_length"] <= len(name) <= rule["max_length"]
    for version in (1, 10, 12345):
        validate_endpoint_or_deployment_name(deployment_name(version), is_deployment=True)


def test_the_traffic_update_is_the_endpoint_entity_with_shares_summing_to_100() -> None:
    ml = _MLClient()
    traffic = OnlineEndpointTraffic(
        ml,
        stage="prod",
        environment="azureml:dhow-train@latest",
        instance_type="Standard_DS3_v2",
        code_dir=".",
        scoring_script="shared/jobs/score.py",
        environment_variables={"DHOW_CLOUD": "azure"},
    )
    traffic.prepare(plan())
    deployment = ml.online_deployments.sent[0]
    assert deployment.name == deployment_name(2)
    assert deployment.endpoint_name == endpoint_name("prod", "customers")
    assert deployment.environment_variables["DHOW_SERVE_MODEL_VERSION"] == "2"
    rest = deployment._to_rest_object("uaenorth")  # azure-ai-ml builds the PUT body
    assert rest.location == "uaenorth"
    assert rest.properties.instance_type == "Standard_DS3_v2"
    traffic.set("customers", {1: 90, 2: 10}, RolloutState())
    sent = ml.online_endpoints.sent[-1]
    assert sent.traffic == {deployment_name(1): 90, deployment_name(2): 10}
    assert sum(sent.traffic.values()) == value("azure.serving.endpoint_traffic")["sum"]
    body = sent._to_rest_online_endpoint_traffic_update("uaenorth")
    assert body.properties.traffic == {"version-1": 90, "version-2": 10}
    with pytest.raises(ValueError, match="sums to 100"):
        traffic.set("customers", {1: 90, 2: 20}, RolloutState())


def test_flex_consumption_has_no_slots_so_the_canary_is_not_a_slot_swap() -> None:
    from pathlib import Path

    rule = value("azure.functions.flex_no_slots")
    assert rule["deployment_slots"] is False
    # The plan is the functions component's (infra/azure/functions.py, split out of stack.py).
    stack = (Path(__file__).resolve().parents[2] / "infra/azure/functions.py").read_text()
    assert f'"tier": "{rule["plan"]}"' in stack  # the plan the stack's app runs on
    assert "Slot" not in stack


# -- the local twin: the same deployer on the router's row and the router's counts ----------


def test_the_local_router_splits_and_counts_while_the_deployer_steps_and_judges(
    tmp_path: Any,
) -> None:
    from dhow_local.router import Router

    lineage = MemoryLineage()
    published: list[dict[str, Any]] = []
    router = Router(
        store=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        lineage=lineage,
        capture_container="capture",
        serve_prefix=PREFIX,
        publish_state_change=published.append,
    )
    clock = Clock()
    deployer = SteppedRolloutDeployer(
        lineage,
        RouterTraffic(lineage),
        RouterMetrics(lambda p: router.periods(p.rsplit("/", 1)[1])),
        Timer(),
        alarm_prefix=PREFIX,
        clock=clock,
    )
    deployer.start(plan(1, None))
    clock.now += timedelta(seconds=1)
    first, _ = deployer._load("customers")
    assert deployer.advance("customers", str(first.deployment_id)) is not None
    clock.now += timedelta(minutes=1)
    rollout = deployer.start(plan()).deployment_id
    state, _ = load_router_state(lineage, "customers")
    assert (state.stable, state.candidate, state.share, state.stepped_by) == (
        1,
        2,
        0.1,
        "deployer",
    )
    router._routes["customers"] = _route(router)
    router.tick("customers", now=state.started_at)  # picks up the row; steps nothing
    at = state.started_at
    assert at is not None
    for i in range(20):
        router.observe("customers", 2, 500 if i < 8 else 200, 30.0, at=at + timedelta(seconds=1))
    router.tick("customers", now=at + timedelta(minutes=30))
    assert load_router_state(lineage, "customers")[0].status == "InProgress"  # not the router's
    assert published == []
    end = deployer.advance("customers", rollout)
    assert end is not None
    assert end.status == "RolledBack"
    assert end.reason is not None
    assert "-errors: 8 of 20" in end.reason
    after, _ = load_router_state(lineage, "customers")
    assert (after.stable, after.candidate, after.status) == (1, None, "RolledBack")


def _route(router: Any) -> Any:
    from dhow_local.router import DatasetRoute

    class _Capture:
        def flush_if_due(self) -> None: ...

        def flush(self) -> None: ...

    return DatasetRoute(spec=None, capture=_Capture())  # type: ignore[arg-type]


AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
)


@pytest.mark.parametrize("backend", ["cloud", "local"])
def test_deploy_builds_the_stepped_rollout_on_azure_instead_of_refusing(backend: str) -> None:
    """Before: ``build_deployer`` raised ConfigError on Azure unless the router played the
    part, so the deploy function failed at cold start in a real Azure stack."""
    from dataclasses import replace

    from shared.settings import Settings
    from shared.wiring import Ports, build_deployer

    settings = replace(
        Settings(cloud="azure", kit="local-azure" if backend == "local" else None),
        azure_storage_connection_string=AZURITE,
        azureml_workspace=("sub", "group", "workspace"),
        azure_storage_account="dhowtestdata",
        azureml_serve_environment="azureml:dhow-serve:1",
        azureml_serving_instance_type="Standard_DS3_v2",
    )
    ports = Ports(store=None, bus=None, lineage=MemoryLineage())  # type: ignore[arg-type]
    assert isinstance(build_deployer(settings, ports), SteppedRolloutDeployer)


# -- a deployment that builds for longer than the deploy function may run ---------------------


class Building(Weights):
    """An endpoint whose candidate deployment is provisioned for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "Succeeded"

    def provisioning(self, dataset: str, version: int) -> str:
        return self.phase


def _building_rig() -> tuple[SteppedRolloutDeployer, Building, Timer, Clock]:
    traffic, timer, clock = Building(), Timer(), Clock()
    deployer = SteppedRolloutDeployer(
        MemoryLineage(), traffic, Minutes(), timer, alarm_prefix=PREFIX, clock=clock
    )
    first = deployer.start(plan(1, None)).deployment_id
    clock.now += timedelta(seconds=1)
    assert deployer.advance("customers", first) is not None
    traffic.sets.clear()
    timer.sent.clear()
    traffic.phase = "Creating"
    return deployer, traffic, timer, clock


def test_the_deployment_is_started_not_waited_for() -> None:
    """The deploy function runs 15 minutes at most; a first deployment builds its image
    for 10-20+: prepare sends the PUT and returns, it never waits on the poller."""

    class _NeverDone:
        def result(self) -> None:
            raise AssertionError("prepare waited for the deployment")

    ml = _MLClient()
    ml.online_deployments.begin_create_or_update = lambda entity: _NeverDone()  # type: ignore[method-assign,assignment,return-value]
    traffic = OnlineEndpointTraffic(
        ml,
        stage="prod",
        environment="azureml:dhow-serve:1",
        instance_type="Standard_DS3_v2",
        code_dir=".",
        scoring_script="shared/jobs/score.py",
        environment_variables={},
    )
    traffic.prepare(plan())


def test_a_building_candidate_gets_traffic_only_once_its_deployment_has_succeeded() -> None:
    rule = value("azure.ml.online_deployment_provisioning")
    assert "Creating" in rule["in_progress"]
    deployer, traffic, timer, clock = _building_rig()
    clock.now = T0 + timedelta(hours=1)
    rollout = deployer.start(plan()).deployment_id
    assert traffic.sets == []  # v1 keeps all traffic while v2 builds
    assert deployer.traffic("customers") == {"1": 1.0}
    assert timer.sent[-1][0] == 60
    for _ in range(15):  # 15 minutes of building: each check only looks
        clock.now += timedelta(minutes=1)
        assert deployer.advance("customers", rollout) is None
    assert traffic.sets == []
    traffic.phase = rule["succeeded"]
    clock.now += timedelta(minutes=1)
    ready_at = clock.now
    assert deployer.advance("customers", rollout) is None
    assert traffic.sets == [{1: 90, 2: 10}]
    # The schedule runs from when it serves: its first step lasts 5 minutes from then.
    clock.now = ready_at + timedelta(minutes=4)
    assert deployer.advance("customers", rollout) is None
    assert traffic.sets[-1] == {1: 90, 2: 10}
    clock.now = ready_at + timedelta(minutes=5)
    end = deployer.advance("customers", rollout)
    assert end is not None
    assert end.status == "Succeeded"


@pytest.mark.parametrize("phase", ["Failed", "Canceled"])
def test_a_deployment_that_fails_to_provision_fails_the_rollout(phase: str) -> None:
    deployer, traffic, _timer, clock = _building_rig()
    rollout = deployer.start(plan()).deployment_id
    traffic.phase = phase
    clock.now += timedelta(minutes=1)
    end = deployer.advance("customers", rollout)
    assert end is not None
    assert end.status == "RolledBack"
    assert end.reason is not None
    assert end.reason.startswith(
        f"deployment_not_ready: deployment version-2 of customers is {phase}"
    )
    assert deployer.traffic("customers") == {"1": 1.0}


def test_a_deployment_still_building_at_the_bound_fails_the_rollout() -> None:
    deployer, _traffic, timer, clock = _building_rig()
    started = clock.now
    rollout = deployer.start(plan()).deployment_id
    clock.now = started + timedelta(minutes=89)
    assert deployer.advance("customers", rollout) is None
    assert timer.sent[-1][0] == 60
    clock.now = started + timedelta(minutes=90)
    end = deployer.advance("customers", rollout)
    assert end is not None
    assert end.status == "RolledBack"
    assert end.reason is not None
    assert "is Creating after 90 min" in end.reason


def test_the_endpoint_reads_the_deployments_provisioning_state() -> None:
    from azure.ai.ml._restclient.arm_ml_service.models import DeploymentProvisioningState
    from azure.ai.ml.entities import ManagedOnlineDeployment

    CREATING = DeploymentProvisioningState.CREATING  # noqa: N806 - the SDK's enum member

    asked: list[tuple[str, str]] = []

    class _Deployments(_Operations):
        def get(self, name: str, endpoint_name: str) -> ManagedOnlineDeployment:  # type: ignore[override]
            asked.append((name, endpoint_name))
            # azure-ai-ml's entity as it reads ARM's answer (provisioningState).
            return ManagedOnlineDeployment(
                name=name, endpoint_name=endpoint_name, provisioning_state=CREATING
            )

    ml = _MLClient()
    ml.online_deployments = _Deployments()
    traffic = OnlineEndpointTraffic(
        ml,
        stage="prod",
        environment="azureml:dhow-serve:1",
        instance_type="Standard_DS3_v2",
        code_dir=".",
        scoring_script="shared/jobs/score.py",
        environment_variables={},
    )
    assert traffic.provisioning("customers", 2) == "Creating"
    assert asked == [(deployment_name(2), endpoint_name("prod", "customers"))]


def test_the_online_deployments_code_asset_holds_the_scoring_code_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """azure-ai-ml uploads the code folder whole (fact azure.ml.code_upload_ignore). The
    deploy function's folder used to be the app's root: in Azure wwwroot with the
    vendored .python_packages, here the checkout with .venv and the tests."""
    from dataclasses import replace
    from pathlib import Path

    import shared.adapters.azure_serving as serving
    from shared.cloud_facts import value
    from shared.settings import Settings
    from shared.wiring import Ports, build_deployer

    assert value("azure.ml.code_upload_ignore")
    built: list[OnlineEndpointTraffic] = []

    class Recorded(OnlineEndpointTraffic):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            built.append(self)

    monkeypatch.setattr(serving, "OnlineEndpointTraffic", Recorded)
    settings = replace(
        Settings(cloud="azure"),
        azure_storage_connection_string=AZURITE,
        azureml_workspace=("sub", "group", "workspace"),
        azure_storage_account="dhowtestdata",
        azureml_serve_environment="azureml:dhow-serve:1",
        azureml_serving_instance_type="Standard_DS3_v2",
    )
    build_deployer(settings, Ports(store=None, bus=None, lineage=MemoryLineage()))  # type: ignore[arg-type]
    (traffic,) = built
    code = traffic.deployment_entity(plan()).code_configuration
    root = Path(code.code)
    assert (root / code.scoring_script).is_file()
    # What the scoring script imports (shared.*) and nothing of the app or the laptop.
    assert sorted(p.name for p in root.iterdir()) == ["shared"]
    uploaded = {p.relative_to(root).parts[0] for p in root.rglob("*")}
    assert not {".python_packages", ".venv", "functions", "tests", "function_app.py"} & uploaded
