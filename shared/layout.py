"""Where each object of a dataset lives: one function or property per key.

Ingest, validate, the managed validation job, serve's capture and the drift check all
read and write keys of the same few shapes; each shape is built here only, so a reader
never has to take a key apart again to find its neighbour (the drift check once found the
reference sample by cutting the curated key at its last ``/``).

A dataset version is its bytes: ``datasets/<dataset>/sha256=<hash>/`` is its folder in
each of the staging, curated and quarantine containers (the prefix is the topology's
``DATASETS_PREFIX``, which the raw bucket's event rule filters on too):

======================================  =========  ==========================================
key                                     container  written by
======================================  =========  ==========================================
``datasets/<d>/<file>``                 raw        the uploader (``upload_key``)
``<version>/data.<fmt>``                staging    ingest's content-addressed copy
``validation-jobs/<d>/sha256=<h>/       staging    a managed validation job's result
result.json``
``<version>/data.parquet``              curated    validate: the curated Parquet
``<version>/reference.parquet``         curated    validate: the drift reference sample
``<version>/profile.json``              curated    validate: the column profile
``<version>/data.<fmt>``                quarantine validate: the rejected file
``<version>/data.<fmt>.report.json``    quarantine validate: why it was rejected
``datasets/<d>/YYYY/MM/DD/HH/<f>.jsonl``capture    serve's inference capture
``datasets/<d>/endpoint/...``           capture    a SageMaker endpoint's data capture
``drift/<d>/<check id>/report.html``    reports    the drift check (and ``summary.json``)
``specs/<d>/<spec_version>.yaml``       models     validate: the spec it accepted a version by
======================================  =========  ==========================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from shared.constants import DATASET_NAME_PATTERN
from shared.topology import DATASETS_PREFIX

# Below the staging container's datasets/, so that a managed validation job may be let
# write only here (infra/aws/iam.py grants it, this prefix and "*").
VALIDATION_JOBS_PREFIX = "validation-jobs/"
DRIFT_REPORTS_PREFIX = "drift/"
# In the models container: a training job's folder, models/<dataset>/<job>/, as SageMaker
# lays it out below a job's S3OutputPath (the stack's output_s3_uri ends in models/).
MODELS_PREFIX = "models/"
PINNED_SPECS_PREFIX = "specs/"
# The folder of a dataset's capture prefix that a SageMaker endpoint's data capture
# writes to (a serve function's hours, YYYY/, never start with a letter).
ENDPOINT_CAPTURE_DIR = "endpoint"
# How many hex digits of the sha256 name a version to a person (the CLI, the audit).
SHORT_SHA = 12

_NAME = DATASET_NAME_PATTERN.removeprefix("^").removesuffix("$")
_VERSION_KEY = re.compile(
    rf"^{DATASETS_PREFIX}(?P<dataset>{_NAME})/sha256=(?P<sha>[0-9a-f]{{64}})/(?P<file>[^/]+)$"
)
_STAGED_FILE = re.compile(r"^data\.[a-z]+$")


@dataclass(frozen=True)
class DatasetVersion:
    """One version of a dataset: its name and the sha256 of its bytes.

    Printed as ``<dataset>@<first 12 hex digits>``; parsed back from any key of its
    folder by ``from_key``. Its properties are the keys of what the pipeline writes of it.
    """

    dataset: str
    sha256: str

    @property
    def version(self) -> str:
        """The short name of the version (what ingest records as ``version``)."""
        return self.sha256[:SHORT_SHA]

    def __str__(self) -> str:
        return f"{self.dataset}@{self.version}"

    @classmethod
    def from_key(cls, key: str) -> DatasetVersion | None:
        """The version whose folder ``key`` is a file of (staged, curated or quarantined),
        or None for any other key."""
        m = _VERSION_KEY.match(key)
        return cls(m.group("dataset"), m.group("sha")) if m else None

    @classmethod
    def from_staged_key(cls, key: str) -> DatasetVersion | None:
        """The version of a content-addressed staged key (``.../data.<fmt>``), else None."""
        m = _VERSION_KEY.match(key)
        if m is None or not _STAGED_FILE.match(m.group("file")):
            return None
        return cls(m.group("dataset"), m.group("sha"))

    @property
    def folder(self) -> str:
        """``datasets/<dataset>/sha256=<hash>``, the same in each container."""
        return f"{DATASETS_PREFIX}{self.dataset}/sha256={self.sha256}"

    def staged_key(self, fmt: str) -> str:
        """Ingest's server-side copy of the upload, in staging."""
        return f"{self.folder}/data.{fmt}"

    @property
    def curated_key(self) -> str:
        """The validated rows as Parquet, in curated (what training reads)."""
        return f"{self.folder}/data.parquet"

    @property
    def reference_key(self) -> str:
        """The drift reference sample, beside the curated data."""
        return f"{self.folder}/reference.parquet"

    @property
    def profile_key(self) -> str:
        """The column profile of the validated rows, beside the curated data."""
        return f"{self.folder}/profile.json"

    def quarantined_key(self, file_name: str) -> str:
        """The rejected file, under its staged name, in quarantine."""
        return f"{self.folder}/{file_name}"

    def quarantine_report_key(self, file_name: str) -> str:
        """Why the file was rejected, beside it in quarantine."""
        return f"{self.quarantined_key(file_name)}.report.json"

    @property
    def job_result_key(self) -> str:
        """Where a managed validation job leaves its result, in staging."""
        return f"{VALIDATION_JOBS_PREFIX}{self.dataset}/sha256={self.sha256}/result.json"


def model_job_prefix(dataset: str, job_name: str) -> str:
    """A training job's folder in the models container."""
    return f"{MODELS_PREFIX}{dataset}/{job_name}/"


def model_output_prefix(dataset: str, job_name: str) -> str:
    """Where a training job's ``model.tar.gz`` is written (SageMaker's ``output/``)."""
    return f"{model_job_prefix(dataset, job_name)}output/"


def upload_key(dataset: str, file_name: str) -> str:
    """Where an upload of ``file_name`` starts the pipeline, in the raw container."""
    return f"{DATASETS_PREFIX}{dataset}/{file_name}"


def capture_prefix(dataset: str) -> str:
    """Where every capture of ``dataset`` lives, whichever way it is served."""
    return f"{DATASETS_PREFIX}{dataset}/"


def hour_prefix(folder: str, hour: datetime) -> str:
    """The captures of one hour below a capture folder (``capture_prefix`` or an
    endpoint's ``endpoint_variant_prefix``): both file objects by the hour written."""
    return f"{folder}{hour:%Y/%m/%d/%H}/"


def capture_key(dataset: str, stamp: datetime, nonce: str) -> str:
    """One batch of the serve function's captured rows, written at ``stamp``."""
    return f"{hour_prefix(capture_prefix(dataset), stamp)}{stamp:%Y%m%dT%H%M%S%f}-{nonce}.jsonl"


def endpoint_capture_prefix(dataset: str) -> str:
    """The key prefix a SageMaker endpoint's ``DestinationS3Uri`` names: SageMaker adds
    ``/<endpoint>/<variant>/YYYY/MM/DD/HH/`` below it."""
    return f"{capture_prefix(dataset)}{ENDPOINT_CAPTURE_DIR}"


def endpoint_variant_prefix(dataset: str, endpoint: str, variant: str) -> str:
    """The folder of one endpoint variant's data capture, above its hours."""
    return f"{endpoint_capture_prefix(dataset)}/{endpoint}/{variant}/"


def drift_check_prefix(dataset: str, check_id: str) -> str:
    """The folder of one drift check's report and summary, in reports."""
    return f"{DRIFT_REPORTS_PREFIX}{dataset}/{check_id}"


def drift_report_key(dataset: str, check_id: str) -> str:
    """The check's HTML report (only when it reached a verdict)."""
    return f"{drift_check_prefix(dataset, check_id)}/report.html"


def drift_summary_key(dataset: str, check_id: str) -> str:
    """The check's JSON summary."""
    return f"{drift_check_prefix(dataset, check_id)}/summary.json"


def pinned_spec_key(dataset: str, spec_version: str) -> str:
    """Where validate keeps the exact spec of ``spec_version`` (shared.specs.SpecCatalog)."""
    return f"{PINNED_SPECS_PREFIX}{dataset}/{spec_version}.yaml"
