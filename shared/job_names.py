"""A validation job's name, one rule for every cloud.

``<head><dataset>-<sha12>-<tag>[-r<attempt>]``: deterministic, so a redelivery finds the
job it started; the head carries the stage, so no other stage's job is adopted (and the
run's end is routed by it). The tag hashes dataset and spec version, so a name stays
unique when the dataset is cut to fit; the head is never cut (IAM, the end-of-job rule
and the routing match it). A retry (attempt 2 on) ends ``-r<attempt>``: the first
attempt's name would find the job that failed.

Only the limits differ between clouds, and each cloud's adapter passes its own (from
shared/cloud_facts): the longest name, which characters a name may hold, and whether a
name is lower case.
"""

from __future__ import annotations

import hashlib
import re

from shared.errors import DhowError
from shared.ports import ValidationJobRequest, validation_attempt_suffix
from shared.reasons import Reason


def validation_job_name(
    request: ValidationJobRequest,
    head: str,
    *,
    max_length: int,
    not_name: re.Pattern[str],
    lower: bool,
    too_long: str,
) -> str:
    """``head`` + the request's dataset cut to fit ``max_length`` + its digests.

    ``not_name`` matches the runs of characters a name may not hold (each becomes one
    hyphen); ``lower`` lower-cases the dataset first; ``too_long`` is the error's message
    when the head leaves no room for the dataset."""
    tag = hashlib.sha256(f"{request.dataset}\n{request.spec_version}".encode()).hexdigest()[:8]
    tail = f"-{request.sha256[:12]}-{tag}" + validation_attempt_suffix(request.attempt)
    room = max_length - len(head) - len(tail)
    dataset = request.dataset.lower() if lower else request.dataset
    dataset = not_name.sub("-", dataset)[: max(room, 0)].strip("-")
    if not dataset:
        raise DhowError(
            too_long,
            hint="use a shorter stage name",
            reason=Reason.JOB_NAME_TOO_LONG,
        )
    return f"{head}{dataset}{tail}"
