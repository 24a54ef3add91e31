"""One definition of "the candidate is failing": the cloud's alarms and the local router's
verdict agree on the same counts, and what the alarms count is well-formed EMF.

The alarm side is judged the way CloudWatch judges it, from the request the code sends:
the metric math expression of the one query with ReturnData, evaluated on the period's
statistics, compared with the alarm's threshold by its comparison operator. The request
itself is checked against botocore's own model of PutMetricAlarm.
"""

from __future__ import annotations

import ast
import itertools
import json
import operator
from collections.abc import Callable, Mapping
from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters

from shared.canary import (
    DIMENSIONS,
    NAMESPACE,
    CanaryRule,
    EmfRequestMetrics,
    PeriodCounts,
    alarm_names,
    emf_line,
    emf_record,
)
from shared.cloud_facts import fact, value

RULE = CanaryRule(min_requests=20, max_error_rate=0.05, max_p99_ms=2000)
FN = "dhow-prod-serve-customers"
_CW = botocore.session.get_session().get_service_model("cloudwatch")

_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.GtE: operator.ge,
    ast.Gt: operator.gt,
    ast.LtE: operator.le,
    ast.Lt: operator.lt,
}
_THRESHOLD: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


def _metric_math(expression: str, series: Mapping[str, float]) -> float:
    """CloudWatch's metric math for the functions the alarms use: IF, comparisons, the four
    operations, metric ids and numbers. IF evaluates only the branch it takes (a period
    with no errors/requests never divides by zero in CloudWatch either)."""
    functions = set(value("aws.cloudwatch.alarm_metric_math")["functions"])

    def ev(node: ast.expr) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return series[node.id]
        if isinstance(node, ast.BinOp):
            ops = {ast.Div: operator.truediv, ast.Mult: operator.mul}
            ops |= {ast.Add: operator.add, ast.Sub: operator.sub}
            return float(ops[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return float(_COMPARE[type(node.ops[0])](ev(node.left), ev(node.comparators[0])))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id in functions, f"{node.func.id} is not a function we rely on"
            cond, yes, no = node.args
            return ev(yes) if ev(cond) else ev(no)
        raise AssertionError(f"not metric math the alarms may use: {ast.dump(node)}")

    return ev(ast.parse(expression, mode="eval").body)


def _stat(counts: PeriodCounts, metric: str, stat: str) -> float:
    if metric == "Requests" and stat == "Sum":
        return float(counts.requests)
    if metric == "Errors5xx" and stat == "Sum":
        return float(counts.errors)
    if metric == "LatencyMs" and stat == "p99":
        return counts.p99_ms
    raise AssertionError(f"no statistic {stat} of {metric} in the test")


def _alarm_fires(alarm: Mapping[str, Any], counts: PeriodCounts) -> bool:
    if counts.requests == 0:  # no EMF records, no data point: TreatMissingData decides
        return alarm["TreatMissingData"] == "breaching"
    series = {
        q["Id"]: _stat(counts, q["MetricStat"]["Metric"]["MetricName"], q["MetricStat"]["Stat"])
        for q in alarm["Metrics"]
        if "MetricStat" in q
    }
    (watched,) = [q for q in alarm["Metrics"] if q["ReturnData"]]
    result = _metric_math(watched["Expression"], series)
    return _THRESHOLD[alarm["ComparisonOperator"]](result, alarm["Threshold"])


def _counts(requests: int, errors: int, slow: int) -> PeriodCounts:
    latencies = [3000.0] * slow + [50.0] * (requests - slow)
    return PeriodCounts(requests, errors, latencies)


CASES = [
    (n, e, s)
    for n, e, s in itertools.product((0, 1, 19, 20, 21, 100, 1000), (0, 1, 2, 5, 6, 40), (0, 1, 2))
    if e <= n and s <= n
]


@pytest.mark.parametrize(("requests", "errors", "slow"), CASES)
def test_the_alarms_and_the_router_agree_on_the_same_counts(
    requests: int, errors: int, slow: int
) -> None:
    counts = _counts(requests, errors, slow)
    verdict = RULE.verdict(counts)
    errors_alarm, latency_alarm = RULE.alarms(FN, "8")
    fired = {
        "errors": _alarm_fires(errors_alarm, counts),
        "p99-latency": _alarm_fires(latency_alarm, counts),
    }
    assert (verdict is not None) == any(fired.values()), (verdict, fired)
    if verdict is not None:  # the router names the first alarm that fires
        first = next(name for name, on in fired.items() if on)
        assert verdict.startswith(f"{first}:")


def test_a_candidate_failing_40_percent_of_its_share_fails_where_the_alias_would_pass() -> None:
    # The old alarm counted the alias: 8 failures in 200 answers is 4%, under 5%.
    alias = PeriodCounts(200, 8, [50.0] * 200)
    assert alias.errors / alias.requests < RULE.max_error_rate
    candidate = PeriodCounts(20, 8, [50.0] * 20)
    assert RULE.verdict(candidate) == "errors: 8 of 20 requests failed (40.0% > 5.0%)"
    assert _alarm_fires(RULE.alarms(FN, "8")[0], candidate)


def test_alarm_requests_are_what_put_metric_alarm_accepts_and_judge_one_version() -> None:
    rule = fact("aws.cloudwatch.alarm_metric_math")
    op = _CW.operation_model("PutMetricAlarm")
    alarms = RULE.alarms(FN, "8")
    assert [a["AlarmName"] for a in alarms] == list(alarm_names(FN))
    for alarm in alarms:
        request = {**alarm, "AlarmActions": ["arn:aws:sns:me-central-1:123456789012:alerts"]}
        validate_parameters(request, op.input_shape)  # raises on any shape error
        watched = [q for q in alarm["Metrics"] if q["ReturnData"]]
        assert len(watched) == rule.value["return_data_true"]
        assert not {"MetricName", "Namespace", "Dimensions", "Period", "Statistic"} & set(alarm)
        for q in alarm["Metrics"]:
            if "MetricStat" in q:
                stat = q["MetricStat"]
                assert stat["Metric"]["Namespace"] == NAMESPACE
                assert stat["Metric"]["Dimensions"] == [
                    {"Name": "FunctionName", "Value": FN},
                    {"Name": "Version", "Value": "8"},
                ]
                assert stat["Period"] % 60 == 0  # EMF metrics are standard resolution


def test_the_emf_record_follows_the_specification() -> None:
    spec = value("aws.cloudwatch.emf_document")
    record = json.loads(emf_line(emf_record(FN, "8", 503, 12.5, now_ms=1795428900000)))
    meta = record[spec["root"]]
    assert isinstance(meta["Timestamp"], int)
    assert meta["Timestamp"] == 1795428900000  # milliseconds since the epoch
    units = set(_CW.shape_for("StandardUnit").enum)
    for directive in meta["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert 1 <= len(directive["Metrics"]) <= spec["max_metrics"]
        for dims in directive["Dimensions"]:
            assert 1 <= len(dims) <= spec["max_dimensions_per_set"]
            assert all(isinstance(record[d], str) for d in dims)
        for m in directive["Metrics"]:
            assert set(m) <= {"Name", "Unit", "StorageResolution"}
            assert m["Unit"] in units  # botocore's own list of CloudWatch units
            assert isinstance(record[m["Name"]], int | float)
    assert tuple(meta["CloudWatchMetrics"][0]["Dimensions"][0]) == DIMENSIONS
    assert (record["FunctionName"], record["Version"], record["Errors5xx"]) == (FN, "8", 1)
    assert len(emf_line(record).encode()) <= spec["max_bytes"]


def test_emf_is_written_only_on_lambda_and_names_the_running_version() -> None:
    names = value("aws.lambda.version_env")
    assert EmfRequestMetrics.from_env({}) is None  # locally: the router judges in-process
    lines: list[str] = []
    on_lambda = EmfRequestMetrics.from_env({names["name"]: FN, names["version"]: "8"})
    assert on_lambda is not None
    EmfRequestMetrics(on_lambda.function, on_lambda.version, lines.append)(500, 3.0)
    (record,) = [json.loads(line) for line in lines]
    assert (record["Version"], record["Errors5xx"], record["Requests"]) == ("8", 1, 1)


def test_emf_goes_to_stdout_as_the_whole_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert value("aws.cloudwatch.emf_lambda_stdout") == "stdout"
    names = value("aws.lambda.version_env")
    metrics = EmfRequestMetrics.from_env({names["name"]: FN, names["version"]: "3"})
    assert metrics is not None
    metrics(200, 1.0)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out)["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
