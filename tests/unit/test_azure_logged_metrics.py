"""Drift metrics on Azure reach Application Insights: what the Python worker forwards of
a log record (its formatted message) holds the whole point."""

from __future__ import annotations

import json
import logging

import pytest

from shared.adapters.azure import LoggedMetrics
from shared.cloud_facts import value
from shared.ports import MetricPoint


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _forwarded(record: logging.LogRecord) -> dict[str, object]:
    """What the worker's on_logging sends the host of a record, field by field (fact
    azure.functions.python_worker_log_fields): only these, the message formatted."""
    fields = value("azure.functions.python_worker_log_fields")["forwarded"]
    known = {
        "level": record.levelname,
        "message": logging.Formatter().format(record),
        "category": record.name,
        "log_category": "User",
        "invocation_id": None,
    }
    assert set(fields) == set(known)
    return {f: known[f] for f in fields}


@pytest.mark.parametrize("name", ["drift_share", "psi 100% of bins"])
def test_each_point_reaches_the_host_whole_in_the_message(name: str) -> None:
    """Before, the point was in ``extra=`` and the message only 'metric ns/name = v':
    the worker drops extra, so customDimensions.metric never existed and the point's
    dimensions (the dataset, the feature) were lost."""
    logger = logging.getLogger("dhow.metrics.test")
    records = _Records()
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        point = MetricPoint(
            name=name, value=0.25, unit="Percent", dimensions={"dataset": "customers"}
        )
        LoggedMetrics(logger).put("Dhow/Drift", [point])
    finally:
        logger.removeHandler(records)
    (record,) = records.records
    sent = _forwarded(record)
    message = str(sent["message"])
    assert message.startswith(LoggedMetrics.PREFIX)
    assert json.loads(message[len(LoggedMetrics.PREFIX) :]) == {
        "namespace": "Dhow/Drift",
        "name": name,
        "value": 0.25,
        "unit": "Percent",
        "dimensions": {"dataset": "customers"},
    }
