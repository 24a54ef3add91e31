"""One rule names a validation job on every cloud (shared.job_names); the adapters pass
only their cloud's limits, from shared/cloud_facts."""

from __future__ import annotations

import re
from typing import Any
from unittest import mock

import pytest

from shared import job_names
from shared.adapters import aws, azure_ml
from shared.cloud_facts import value
from shared.errors import DhowError
from shared.events import ObjectRef
from shared.ports import ValidationJobRequest
from shared.reasons import Reason

REQ = ValidationJobRequest(
    dataset="Big_Customers.2024",
    sha256="ef56" * 16,
    spec_version="2+0a0b0c0d",
    source=ObjectRef(container="raw", key="datasets/x/a.csv"),
    staged=ObjectRef(container="staging", key="datasets/x/sha256=ef56/data.csv"),
    size_bytes=1,
    correlation_id="c-1",
    attempt=3,
)


@pytest.mark.parametrize(
    ("module", "call"),
    [
        (aws, lambda: aws.processing_job_name(REQ, "dhow-prod")),
        (azure_ml, lambda: azure_ml.azureml_job_name(REQ, "prod")),
    ],
)
def test_both_clouds_name_jobs_through_the_one_rule(module: object, call: Any) -> None:
    rule = job_names.validation_job_name
    with mock.patch.object(module, "validation_job_name", wraps=rule) as spy:
        result = call()
    assert spy.call_count == 1
    assert result == rule(REQ, *spy.call_args.args[1:], **spy.call_args.kwargs)


def test_each_cloud_passes_the_limit_its_fact_records() -> None:
    assert value("aws.sagemaker.processing_job_name")["max_length"] == aws.PROCESSING_JOB_NAME_MAX
    with mock.patch.object(
        azure_ml, "validation_job_name", wraps=job_names.validation_job_name
    ) as z:
        azure_ml.azureml_job_name(REQ, "prod")
    assert z.call_args.kwargs["max_length"] == value("azure.ml.job_name")["max_length"]


def test_the_limits_are_parameters() -> None:
    name = job_names.validation_job_name(
        REQ, "h-", max_length=40, not_name=re.compile(r"[^a-z0-9]+"), lower=True, too_long="x"
    )
    assert len(name) <= 40
    assert name.startswith("h-big-")
    assert name.endswith("-r3")
    with pytest.raises(DhowError) as e:
        job_names.validation_job_name(
            REQ, "h" * 40, max_length=40, not_name=re.compile("-"), lower=False, too_long="no room"
        )
    assert str(e.value).startswith("no room")
    assert e.value.reason is Reason.JOB_NAME_TOO_LONG
