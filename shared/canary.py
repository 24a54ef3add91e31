"""When a canary is failing: one definition for the cloud's rollback alarms and the
local router.

A candidate is judged on **its own requests**, one period at a time (a minute in the
cloud, a schedule minute locally): over at least ``min_requests`` of them, a share of
5xx answers above ``max_error_rate``, or a p99 latency above ``max_p99_ms``, fails it.
Fewer requests than that say nothing either way.

Why not AWS/Lambda ``Errors``: it counts function errors only, and the serve function
never has one for a failing model (mangum answers an exception with a 500, the app
answers 503 itself). Why not the alias as a whole: a candidate that fails 40% of its
10% share reads as 4% there. So the serve app writes one Embedded Metric Format record
per ``/predict`` request (requests, 5xx, latency) with the Lambda version as a
dimension, and the alarms are metric math over the candidate version's records. The
deploy function points them at the version it is about to shift to
(``LambdaCodeDeployDeployer``), before CodeDeploy starts.

``CanaryRule.verdict`` is what the local router applies; ``CanaryRule.alarms`` renders
the same numbers as the PutMetricAlarm requests of the two alarms.

A request's latency is the app's answer **without the model's load**. At the
``min_requests`` floor the nearest-rank p99 is the slowest request, so a cold start's
download and load, counted there, would roll a healthy model back. The serve app
(``shared.serve_app``) times each ``/predict`` itself and leaves out the time spent
loading the model (or waiting for another request to load it); the same app, and so the
same clock, runs on Lambda (which loads on the first request: its init phase is limited,
fact ``aws.lambda.init_phase_limit_s``) and in the local router, which observes what the
app measures. On Azure the endpoint's own ``RequestLatency_P99`` is judged, which the app
cannot correct, so the scoring script loads the model in ``init()``, before any request
(``shared.jobs.score_online``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.cloud_facts import value
from shared.constants import LAMBDA_FUNCTION_NAME, LAMBDA_FUNCTION_VERSION

NAMESPACE = "Dhow/Serving"
# Only predictions are judged: a health probe says nothing about the model.
JUDGED_PATH = "/predict"
PERIOD_S = 60  # standard resolution: EMF metrics are stored per minute
REQUESTS, ERRORS, LATENCY = "Requests", "Errors5xx", "LatencyMs"
DIMENSIONS = ("FunctionName", "Version")


def alarm_names(function: str) -> tuple[str, str]:
    """The candidate's rollback alarms (the deployment group watches them)."""
    return f"{function}-errors", f"{function}-p99-latency"


def p99(latencies_ms: Sequence[float]) -> float:
    """The 99th percentile by nearest rank (0 for no requests)."""
    if not latencies_ms:
        return 0.0
    ordered = sorted(latencies_ms)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class PeriodCounts:
    """The candidate's requests in one period."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, status: int, latency_ms: float) -> None:
        self.requests += 1
        self.errors += int(status >= 500)
        self.latencies_ms.append(latency_ms)

    @property
    def p99_ms(self) -> float:
        return p99(self.latencies_ms)


@dataclass(frozen=True)
class CanaryRule:
    """The thresholds of a dataset's rollout (the spec's ``serving`` section)."""

    min_requests: int
    max_error_rate: float
    max_p99_ms: float
    period_s: int = PERIOD_S

    def error_expression(self) -> str:
        # Below min_requests the share is 0: too few requests to judge.
        return f"IF(requests >= {self.min_requests}, errors / requests, 0)"

    def latency_expression(self) -> str:
        return f"IF(requests >= {self.min_requests}, latency, 0)"

    def verdict(self, counts: PeriodCounts) -> str | None:
        """Why the candidate is failing in this period, or None."""
        n = counts.requests
        if n < self.min_requests:
            return None
        rate = counts.errors / n
        if rate > self.max_error_rate:
            return (
                f"errors: {counts.errors} of {n} requests failed "
                f"({rate:.1%} > {self.max_error_rate:.1%})"
            )
        if counts.p99_ms > self.max_p99_ms:
            return (
                f"p99-latency: p99 {counts.p99_ms:.0f} ms over {n} requests "
                f"> {self.max_p99_ms:g} ms"
            )
        return None

    def alarms(self, function: str, version: str) -> list[dict[str, Any]]:
        """The PutMetricAlarm requests of ``function``'s two alarms, judging ``version``
        (without AlarmActions: the stack owns where an alarm notifies)."""
        dims = [{"Name": "FunctionName", "Value": function}, {"Name": "Version", "Value": version}]

        def metric(qid: str, name: str, stat: str) -> dict[str, Any]:
            return {
                "Id": qid,
                "MetricStat": {
                    "Metric": {"Namespace": NAMESPACE, "MetricName": name, "Dimensions": dims},
                    "Period": self.period_s,
                    "Stat": stat,
                },
                "ReturnData": False,
            }

        errors_name, latency_name = alarm_names(function)
        common = {
            "ComparisonOperator": "GreaterThanThreshold",
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            # No candidate requests in a period is no evidence against it.
            "TreatMissingData": "notBreaching",
        }
        return [
            {
                "AlarmName": errors_name,
                "AlarmDescription": (
                    f"{function} version {version} answers 5xx to more than "
                    f"{self.max_error_rate:.0%} of its own requests (over at least "
                    f"{self.min_requests} a minute): CodeDeploy rolls the deployment back"
                ),
                "Threshold": self.max_error_rate,
                "Metrics": [
                    {
                        "Id": "rate",
                        "Expression": self.error_expression(),
                        "Label": "5xx share",
                        "ReturnData": True,
                    },
                    metric("requests", REQUESTS, "Sum"),
                    metric("errors", ERRORS, "Sum"),
                ],
                **common,
            },
            {
                "AlarmName": latency_name,
                "AlarmDescription": (
                    f"{function} version {version} p99 above {self.max_p99_ms:g} ms over at "
                    f"least {self.min_requests} requests a minute: CodeDeploy rolls back"
                ),
                "Threshold": float(self.max_p99_ms),
                "Metrics": [
                    {
                        "Id": "p99",
                        "Expression": self.latency_expression(),
                        "Label": "p99 latency (ms)",
                        "ReturnData": True,
                    },
                    metric("requests", REQUESTS, "Sum"),
                    metric("latency", LATENCY, "p99"),
                ],
                **common,
            },
        ]


def emf_record(
    function: str, version: str, status: int, latency_ms: float, now_ms: int | None = None
) -> dict[str, Any]:
    """One request as an Embedded Metric Format document: what the alarms count."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if now_ms is None else now_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(DIMENSIONS)],
                    "Metrics": [
                        {"Name": REQUESTS, "Unit": "Count"},
                        {"Name": ERRORS, "Unit": "Count"},
                        {"Name": LATENCY, "Unit": "Milliseconds"},
                    ],
                }
            ],
        },
        "FunctionName": function,
        "Version": version,
        REQUESTS: 1,
        ERRORS: int(status >= 500),
        LATENCY: round(latency_ms, 3),
        "status": status,
    }


def emf_line(record: Mapping[str, Any]) -> str:
    """The record as one log line (compact: one JSON object, nothing around it)."""
    return json.dumps(record, separators=(",", ":"))


class EmfRequestMetrics:
    """Writes each judged request of the serve app as an EMF line on standard output,
    where Lambda's log agent takes it as it is (see ``emf_record``)."""

    def __init__(self, function: str, version: str, write: Callable[[str], None]) -> None:
        self.function, self.version, self._write = function, version, write

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EmfRequestMetrics | None:
        """On Lambda (which names the function and the version running), else None.

        These two are Lambda's own, not settings of the stack: they are read here, at
        the edge of the serve app, rather than by ``Settings``."""
        function = environ.get(LAMBDA_FUNCTION_NAME)
        version = environ.get(LAMBDA_FUNCTION_VERSION)
        if not function or not version:
            return None
        return cls(function, version, stdout_line)

    def __call__(self, status: int, latency_ms: float) -> None:
        self._write(emf_line(emf_record(self.function, self.version, status, latency_ms)))


def stdout_line(line: str) -> None:
    """Write one EMF document where Lambda's log agent takes it whole."""
    # print, not logging: with the JSON log format a logging call would nest the
    # document in the runtime's own record, and CloudWatch would extract nothing.
    print(line, flush=True)


# -- Azure: an Azure ML managed online endpoint's own metrics ---------------------------
#
# On Azure the candidate is a deployment of the dataset's online endpoint, and Azure
# Monitor keeps its requests per deployment at a one-minute grain: ``RequestsPerMinute``
# (split by ``statusCodeClass``) and ``RequestLatency_P99`` (facts
# azure.serving.endpoint_metrics and azure.monitor.metrics_list). The deploy function
# asks for those numbers (``shared.adapters.azure_serving``) and judges each minute with
# ``CanaryRule.verdict``, the same rule the AWS alarms and the local router apply.

ENDPOINT_REQUESTS = "RequestsPerMinute"
ENDPOINT_P99 = "RequestLatency_P99"


@dataclass
class ReportedPeriod(PeriodCounts):
    """One period as a metrics service reports it: counts and a p99 it computed itself
    (no single latencies to rank)."""

    reported_p99_ms: float = 0.0

    @property
    def p99_ms(self) -> float:
        return self.reported_p99_ms


def endpoint_metrics_queries(deployment: str, start: str, end: str) -> list[dict[str, str]]:
    """The query parameters of Azure Monitor's Metrics - List for one deployment of an
    online endpoint at PT1M: one query per metric, requests split by status class
    (``'*'``), and the latency, which has no status dimension, on its own.

    Metrics - List refuses a ``$filter`` naming a dimension one of its metrics lacks
    (fact azure.monitor.metrics_filter_dimensions_validated), and RequestLatency_P99 has
    ``deployment`` only (fact azure.serving.endpoint_metric_dimensions): each query's
    filter keeps the conditions its metric has a dimension for."""
    dimensions: dict[str, list[str]] = value("azure.serving.endpoint_metric_dimensions")
    conditions = {"deployment": deployment, "statusCodeClass": "*"}
    return [
        {
            "metricnames": metric,
            "timespan": f"{start}/{end}",
            "interval": "PT1M",
            "aggregation": "Average",
            "$filter": " and ".join(
                f"{dim} eq '{want}'"
                for dim, want in conditions.items()
                if dim in dimensions[metric]
            ),
        }
        for metric in (ENDPOINT_REQUESTS, ENDPOINT_P99)
    ]


def endpoint_periods(response: Mapping[str, Any]) -> list[ReportedPeriod]:
    """The Metrics - List response as one ``ReportedPeriod`` a minute, oldest first."""
    minutes = endpoint_minutes(response)
    return [minutes[k] for k in sorted(minutes)]


def endpoint_minutes(response: Mapping[str, Any]) -> dict[str, ReportedPeriod]:
    """The Metrics - List response by the ``timeStamp`` of each minute that has a point.

    ``RequestsPerMinute`` at PT1M is that minute's count (its documented aggregation is
    Average: one sample a minute); the series of status class ``5xx`` are the errors."""
    minutes: dict[str, ReportedPeriod] = {}
    for metric in response.get("value", []):
        name = metric.get("name", {}).get("value")
        for series in metric.get("timeseries", []):
            labels = {
                m.get("name", {}).get("value"): m.get("value")
                for m in series.get("metadatavalues", [])
            }
            for point in series.get("data", []):
                value = point.get("average")
                if value is None:
                    continue
                period = minutes.setdefault(point["timeStamp"], ReportedPeriod())
                if name == ENDPOINT_REQUESTS:
                    n = round(float(value))
                    period.requests += n
                    if str(labels.get("statusCodeClass", "")).lower() == "5xx":
                        period.errors += n
                elif name == ENDPOINT_P99:
                    period.reported_p99_ms = max(period.reported_p99_ms, float(value))
    return minutes


def rollout_schedule(strategy: str, percent: int, minutes: int) -> list[tuple[float, float]]:
    """The candidate's share over time, as CodeDeploy's canary and linear configs step it."""
    share = percent / 100
    if strategy == "canary":
        return [(0.0, share), (float(minutes), 1.0)]
    if strategy == "linear":
        steps, out = int(1 / share + 0.999), []
        for i in range(steps):
            out.append((float(i * minutes), min(1.0, round(share * (i + 1), 6))))
        return out
    return [(0.0, 1.0)]
