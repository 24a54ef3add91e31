"""Every reason code Dhow records or prints, each with its category and its one hint.

A reason code is what lineage rows, ``DatasetRejected`` events, quarantine reports and
``--json`` errors carry as ``reason``: the string values below are stored and compared,
so a value never changes once released. A member is a ``str`` (``StrEnum``): it is
written, printed and compared as its value.

The category says who can make the failure go away, and so what Dhow does with it (as
pandera maps each ``SchemaErrorReason`` to an ``ErrorCategory``):

- ``bad_data``: the uploader (or the person at the CLI) must fix what they sent; trying
  again with the same input fails the same way, so it is recorded and answered;
- ``configuration``: the platform engineer must fix a setting, a spec, a quota or the
  stack; also answered, not retried, since nothing changes until someone acts;
- ``platform``: transient or internal (a race, an outage, a lost message); raised, so the
  trigger redelivers it and a failure that persists ends in the dead-letter queue.

To add a reason: one member here, with its category and hint (``tests/unit/test_reasons.py``
holds that every member has both, and that no reason code is written anywhere else).
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCategory(StrEnum):
    """Who must act on a failure, which decides retry or record-and-answer."""

    BAD_DATA = "bad_data"
    CONFIGURATION = "configuration"
    PLATFORM = "platform"


_BAD = ReasonCategory.BAD_DATA
_CONFIG = ReasonCategory.CONFIGURATION
_PLATFORM = ReasonCategory.PLATFORM

# "upload again" is the way to a new attempt: ingest announces a new upload of the same
# bytes with an id of its own (shared.services.ingest, _revalidation).
_JOB_RETRY = "The staged file is kept: upload the file again to retry (a new job)"


class Reason(StrEnum):
    """A reason code: its value (stored, printed), its ``category`` and its ``hint``."""

    category: ReasonCategory
    hint: str

    def __new__(cls, value: str, category: ReasonCategory, hint: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.category = category
        member.hint = hint
        return member

    @property
    def retried(self) -> bool:
        """Whether a failure for this reason is raised for its trigger to redeliver."""
        return self.category is ReasonCategory.PLATFORM

    # --- ingest: the uploaded object (shared.services.ingest) --------------------------
    KEY_OUTSIDE_PREFIX = (
        "key_outside_prefix",
        _BAD,
        # shared.topology.DATASETS_PREFIX (a test holds the two equal).
        "upload under datasets/<dataset>/<file>, with no '..' or empty path segments",
    )
    INVALID_DATASET_NAME = (
        "invalid_dataset_name",
        _BAD,
        "dataset names are 1-63 lowercase letters, digits, '-' or '_'",
    )
    INVALID_KEY = (
        "invalid_key",
        _BAD,
        "dataset names are 1-63 lowercase letters, digits, '-' or '_'; file names "
        "letters, digits and . _ = + -",
    )
    EMPTY_OBJECT = ("empty_object", _BAD, "the file has no bytes; upload it again")
    OBJECT_TOO_LARGE = (
        "object_too_large",
        _BAD,
        "split the file, or raise DHOW_MAX_UPLOAD_BYTES for this stack",
    )
    UNSUPPORTED_FORMAT = (
        "unsupported_format",
        _BAD,
        "upload .csv, .parquet or .jsonl (.ndjson) files",
    )
    FORMAT_MISMATCH = (
        "format_mismatch",
        _BAD,
        "the bytes do not match the file's extension; re-export the file",
    )
    IDENTIFIER_INVALID = (
        "identifier_invalid",
        _BAD,
        "use letters, digits, '.', '_' or '-' only, within the length the message gives",
    )

    # --- validation: the file against its spec (shared.validation) ---------------------
    SCHEMA_CHECKS_FAILED = (
        "schema_checks_failed",
        _BAD,
        "fix the rows listed in the report, or change the spec if the data is right",
    )
    MISSING_COLUMNS = (
        "missing_columns",
        _BAD,
        "add the missing columns, or remove them from the spec",
    )
    UNEXPECTED_COLUMNS = (
        "unexpected_columns",
        _BAD,
        "drop the extra columns, or add them to the spec",
    )
    DUPLICATE_COLUMNS = ("duplicate_columns", _BAD, "give every column a distinct name")
    TOO_MANY_COLUMNS = (
        "too_many_columns",
        _BAD,
        # shared.validation.MAX_COLUMNS and MAX_HEADER_BYTES (a test holds them equal).
        "a dataset file has at most 10,000 columns and a CSV header line of at most "
        "1024 KiB; drop the columns the spec does not name",
    )
    RAGGED_ROWS = (
        "ragged_rows",
        _BAD,
        "every CSV row must have as many fields as the header",
    )
    WRONG_ENCODING = ("wrong_encoding", _BAD, "save the file as UTF-8")
    EXPANSION_TOO_LARGE = (
        "expansion_too_large",
        _BAD,
        "the file expands far beyond its size when decoded (a row group, a batch or a "
        "compression ratio over the limits); write it with smaller row groups and ordinary "
        "compression",
    )
    UNREADABLE_FILE = (
        "unreadable_file",
        _BAD,
        "the file is damaged or not in its declared format; export it again",
    )
    NO_ROWS = ("no_rows", _BAD, "the file has a header but no data rows")

    # --- validation's managed job (shared.services.validate) ---------------------------
    VALIDATION_JOB_FAILED = (
        "validation_job_failed",
        _PLATFORM,
        f"the managed validation job failed; its logs say why. {_JOB_RETRY}",
    )
    VALIDATION_JOB_STOPPED = (
        "validation_job_stopped",
        _PLATFORM,
        "the managed validation job was stopped (by hand or at its maximum runtime) before "
        f"it finished. {_JOB_RETRY}",
    )
    VALIDATION_JOB_NO_RESULT = (
        "validation_job_no_result",
        _PLATFORM,
        "the managed validation job ended without leaving its result; its logs say why. "
        f"{_JOB_RETRY}",
    )
    STAGED_COPY_MISSING = (
        "staged_copy_missing",
        _PLATFORM,
        "the staged copy went away before the job read it; upload the file again",
    )

    # --- training, registry, gate ------------------------------------------------------
    NOTHING_TO_TRAIN = (
        "nothing_to_train",
        _BAD,
        "upload a file of the dataset: training needs a validated version",
    )
    NO_NEW_DATA = (
        "no_new_data",
        _BAD,
        "upload new data to retrain: a retrain on the champion's data learns the same model",
    )
    SAME_DATA_AS_CHAMPION = (
        "same_data_as_champion",
        _BAD,
        "the model learnt from the champion's data with the same spec and trainer; upload "
        "new data to train a different model",
    )
    GPU_QUOTA_ZERO = (
        "gpu_quota_zero",
        _CONFIG,
        "raise a GPU instance quota in Service Quotas, or list another instance type in the "
        "spec's training.instance_types",
    )
    TOO_MANY_TRAINING_INPUTS = (
        "too_many_training_inputs",
        _CONFIG,
        "ask the spec's training.learn_from for fewer uploads (last: N, or a later since)",
    )
    JOB_NAME_TOO_LONG = ("job_name_too_long", _CONFIG, "use a shorter stage name")
    MODEL_METADATA_TOO_LARGE = (
        "model_metadata_too_large",
        _CONFIG,
        "the model's lineage is over the registry's metadata limit; shorten what the spec "
        "and the stage name put in it",
    )
    REGISTRY_CONTENTION = (
        "registry_contention",
        _PLATFORM,
        "other registrations kept winning the race for the next version; this one is retried",
    )
    UNKNOWN_MODEL_VERSION = (
        "unknown_model_version",
        _CONFIG,
        "list the dataset's versions with `dhow models DATASET` and name one of them",
    )
    INVALID_VERSION = (
        "invalid_version",
        _CONFIG,
        "give a model version number, as `dhow models DATASET` lists them",
    )
    ARTIFACT_HASH_MISMATCH = (
        "artifact_hash_mismatch",
        _CONFIG,
        "the model artifact is not the one that was registered; retrain, or restore it",
    )
    ARTIFACT_UNSAFE = (
        "artifact_unsafe",
        _CONFIG,
        "the model archive holds a path outside its folder or a link; retrain it",
    )

    # --- deploy and serve --------------------------------------------------------------
    DEPLOYMENT_REFUSED = (
        "deployment_refused",
        _CONFIG,
        "the serving platform refused the deployment; its message says which setting",
    )
    DEPLOYMENT_NOT_READY = (
        "deployment_not_ready",
        _PLATFORM,
        "the new deployment is not serving yet; the rollout checks it again",
    )
    NOTHING_TO_ROLL_BACK_TO = (
        "nothing_to_roll_back_to",
        _CONFIG,
        "no other approved version is there to serve; approve or deploy one first",
    )
    MODEL_NOT_SERVABLE = (
        "model_not_servable",
        _CONFIG,
        "the model artifact cannot be loaded for serving; retrain or roll back",
    )
    PREDICTION_FAILED = (
        "prediction_failed",
        _PLATFORM,
        "the model failed on this request; the function's log has the traceback",
    )
    BODY_TOO_LARGE = ("body_too_large", _BAD, "send fewer rows per request")
    REQUEST_INVALID = (
        "request_invalid",
        _BAD,
        "send the columns the spec names, with values of their kinds",
    )
    NOT_FOUND = ("not_found", _BAD, "use /datasets/<dataset>/predict")
    NOTHING_DEPLOYED = (
        "nothing_deployed",
        _CONFIG,
        "upload data: an approved model is deployed by itself",
    )
    NO_SERVE_URL = (
        "no_serve_url",
        _CONFIG,
        "pass --url, or deploy the dataset's serve function first",
    )
    BAD_SERVE_URL = ("bad_serve_url", _CONFIG, "pass an https URL of the serve API")

    # --- drift -------------------------------------------------------------------------
    NO_REFERENCE = (
        "no_reference",
        _CONFIG,
        "retrain the champion (`dhow train DATASET`): newer versions record their data",
    )
    EMPTY_COLUMN = (
        "empty_column",
        _BAD,
        "the window has no values in this column; send requests that carry it",
    )
    DRIFT_COLUMNS_MISSING = (
        "drift_columns_missing",
        _CONFIG,
        "name only the spec's feature columns in drift.columns",
    )
    UNKNOWN_STATTEST = (
        "unknown_stattest",
        _CONFIG,
        "name a statistical test of the drift registry in the spec",
    )
    DRIFT_POLICY_CONTENDED = (
        "drift_policy_contended",
        _PLATFORM,
        "another check is acting on this dataset; this one is retried",
    )

    # --- specs, settings, the stack ----------------------------------------------------
    CONFIG_INVALID = ("config_invalid", _CONFIG, "fix the setting the message names")
    REGION_NOT_ALLOWED = (
        "region_not_allowed",
        _CONFIG,
        "use me-central-1 on AWS, uaenorth or uaecentral on Azure",
    )
    UNKNOWN_DATASET = (
        "unknown_dataset",
        _CONFIG,
        "create the dataset's spec first: `dhow dataset init NAME --from FILE`",
    )
    SPEC_INVALID = ("spec_invalid", _CONFIG, "fix the spec where the message says")
    # Redelivery finds the same catalog: someone must validate again or restore the spec.
    SPEC_VERSION_UNKNOWN = (
        "spec_version_unknown",
        _CONFIG,
        "validate the data again under the current spec, or restore the spec of that version",
    )
    SPEC_EXISTS = ("spec_exists", _CONFIG, "pass --force to overwrite the spec")
    STACK_CONTRACT_VIOLATED = (
        "stack_contract_violated",
        _CONFIG,
        "the stack and the function disagree on a setting; deploy the stack again",
    )
    CLOUD_FACT_INVALID = (
        "cloud_fact_invalid",
        _CONFIG,
        "fix the entry in shared/cloud_facts/*.yaml the message names",
    )
    STATE_UNREADABLE = (
        "state_unreadable",
        _CONFIG,
        "write the state with `pulumi stack export --file state.json` for the stack",
    )
    STACK_CONFIG_INVALID = (
        "stack_config_invalid",
        _CONFIG,
        "fix the stack file (infra/stacks/Pulumi.<stack>.yaml) the message names",
    )
    EVENT_UNPARSEABLE = (
        "event_unparseable",
        _CONFIG,
        "check the event rule that feeds the function's queue",
    )
    S3_REGION_REDIRECT_REFUSED = (
        "s3_region_redirect_refused",
        _CONFIG,
        "the bucket is outside the pinned region; use the stack's own buckets",
    )
    STORAGE_ACCESS_DENIED = (
        "storage_access_denied",
        _CONFIG,
        "the function's role may not do this; deploy the stack again, or check its policy",
    )
    NO_CREDENTIALS = (
        "no_credentials",
        _CONFIG,
        "sign in to the cloud (aws sso login, az login) and try again",
    )
    AUDIT_TOO_LARGE = (
        "audit_too_large",
        _CONFIG,
        "narrow the audit with --since, --until or --kind",
    )

    # --- the platform itself -----------------------------------------------------------
    DHOW_ERROR = ("dhow_error", _PLATFORM, "see the message; try again")
    WORK_IN_PROGRESS = (
        "work_in_progress",
        _PLATFORM,
        "another delivery is doing this work right now; it is retried",
    )
    DEPLOYMENT_IN_PROGRESS = (
        "deployment_in_progress",
        _PLATFORM,
        "a deployment is running; this one starts when it ends",
    )
    OBJECT_MISSING = (
        "object_missing",
        _PLATFORM,
        "the object went away; upload it again if it is still wanted",
    )
    OBJECT_CHANGED = (
        "object_changed",
        _PLATFORM,
        "the object was overwritten while it was read; its new upload is answered on its own",
    )
    LINEAGE_ENTRY_FINISHED = (
        "lineage_entry_finished",
        _PLATFORM,
        "a finished lineage entry is never written over; write a new one",
    )
    LINEAGE_KIND_UNKNOWN = (
        "lineage_kind_unknown",
        _PLATFORM,
        "the row was written by another version of Dhow; read it with that version",
    )
    EVENT_PUBLISH_FAILED = (
        "event_publish_failed",
        _PLATFORM,
        "the event bus refused the event; the delivery is retried",
    )
    BLOB_COPY_FAILED = ("blob_copy_failed", _PLATFORM, "the copy is retried")
    BLOB_COPY_TIMEOUT = ("blob_copy_timeout", _PLATFORM, "the copy is retried")
    PLATFORM_ERROR = ("platform_error", _PLATFORM, "is the stack up? try `dhow local status`")
    PORT_IN_USE = (
        "port_in_use",
        _PLATFORM,
        "stop what holds the port (`dhow local down`), or free it",
    )
    PROCESS_NOT_READY = (
        "process_not_ready",
        _PLATFORM,
        "the emulator did not come up; its log says why",
    )
    STRAY_PROCESS = (
        "stray_process",
        _PLATFORM,
        "stop the earlier platform's process (`dhow local down`)",
    )


_BY_VALUE: dict[str, Reason] = {member.value: member for member in Reason}


def reason_of(value: str) -> Reason:
    """The member whose value a stored reason string is; ``KeyError`` for any other."""
    return _BY_VALUE[value]


def category_of(reason: str) -> ReasonCategory:
    """The category of any reason string: a code no member has (a test's, an older row's)
    counts as ``platform``, as an unknown failure does, so it is retried, never dropped."""
    member = _BY_VALUE.get(reason)
    return member.category if member is not None else ReasonCategory.PLATFORM


def is_retried(reason: str) -> bool:
    """The one retry decision: raise for redelivery (platform), or record the failure and
    answer it (bad data, configuration), since a retry would fail the same way."""
    return category_of(reason) is ReasonCategory.PLATFORM
