"""The one contract between the stacks and the runtime: which setting each function is
given in the cloud, under which environment variable, read into which ``Settings`` field.

The Pulumi program gathers the values it knows (``env`` in infra/aws/stack.py,
``offered`` in infra/azure/stack.py, keyed by the names in shared/constants.py) and hands
each function exactly its own share, built here by ``environment``; on Azure, where one
Function App holds every function, the app's settings are the union of its functions'
shares (``shared_environment``). A value the stack offers that no function is declared to read,
or a declared setting the stack does not offer, stops the program with
``StackContractError`` before anything is created: a setting cannot drift out of the
stack, nor into it unread. tests/infra/test_stack_contract.py builds every function's
``Settings`` from exactly the environment its mocked stack gives it (on Azure, in
tests/infra/test_azure_connected_path.py, from the app's settings).

To add a setting: its constant in shared/constants.py, its field in ``Settings.from_env``,
one ``Setting`` line below naming the functions that read it, and its value in the
stack's ``env``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from shared import constants as c
from shared.errors import DhowError
from shared.reasons import Reason

Cloud = Literal["aws", "azure"]

# Function logical names (shared/topology.py), for the settings only some of them read.
ALL = frozenset(
    {"ingest", "validate", "train_launch", "register", "deploy", "serve", "drift_check"}
)
_SAGEMAKER_JOBS = frozenset({"validate", "train_launch", "deploy"})
_AZUREML_JOBS = frozenset({"validate", "train_launch"})
# The workspace also holds the online endpoints deploy's rollout steps.
_AZUREML_WORKSPACE = _AZUREML_JOBS | {"deploy"}
_BOTH: frozenset[Cloud] = frozenset({"aws", "azure"})
_AZURE: frozenset[Cloud] = frozenset({"azure"})


class StackContractError(DhowError):
    """The stack offers or omits a setting against the stack/runtime contract."""

    reason = Reason.STACK_CONTRACT_VIOLATED


@dataclass(frozen=True)
class Setting:
    """One environment variable the stack writes and ``Settings.from_env`` reads."""

    env: str  # the name, from shared/constants.py
    field: str  # the Settings attribute it becomes
    functions: frozenset[str]  # logical names of the functions that read it
    clouds: frozenset[Cloud] = frozenset({"aws"})


CONTRACT: tuple[Setting, ...] = (
    Setting(c.CLOUD, "cloud", ALL, _BOTH),
    Setting(c.STAGE, "stage", ALL, _BOTH),
    # Every function's ports include the S3 store, whose calls name the stack's account as
    # the buckets' expected owner (shared/adapters/aws.py aws_client).
    Setting(c.AWS_ACCOUNT_ID, "aws_account_id", ALL),
    # train-launch starts the SageMaker training job (the kit, DHOW_KIT or the cloud's,
    # picks the launcher and the deployer: no setting names a backend).
    Setting(c.TRAINING_IMAGE_URI, "training_image_uri", frozenset({"train_launch"})),
    # validate hands large files to a SageMaker Processing job.
    Setting(c.PROCESSING_IMAGE_URI, "processing_image_uri", frozenset({"validate"})),
    # Every SageMaker job or endpoint runs as the stack's role, in its VPC, with its key.
    Setting(c.SAGEMAKER_ROLE_ARN, "sagemaker_role_arn", _SAGEMAKER_JOBS),
    Setting(c.KMS_KEY_ID, "kms_key_id", _SAGEMAKER_JOBS),
    Setting(c.PRIVATE_SUBNETS, "private_subnets", _SAGEMAKER_JOBS),
    Setting(c.SECURITY_GROUPS, "security_groups", _SAGEMAKER_JOBS),
    # deploy moves traffic (CodeDeploy) or builds a SageMaker endpoint.
    Setting(c.INFERENCE_IMAGE_URI, "inference_image_uri", frozenset({"deploy"})),
    # Each serve function serves one dataset (infra/aws/functions.py adds it per spec).
    Setting(c.SERVE_DATASET, "serve_dataset", frozenset({"serve"})),
    # drift-check alerts through SNS.
    Setting(c.ALERTS_TOPIC_ARN, "alerts_topic_arn", frozenset({"drift_check"})),
    # Azure: every function builds its ports (shared/wiring.py build_ports) from the data
    # account, the pipeline topic, and the location azure_clients checks against the
    # UAE allow-list.
    Setting(c.AZURE_LOCATION, "azure_location", ALL, _AZURE),
    Setting(c.AZURE_STORAGE_ACCOUNT, "azure_storage_account", ALL, _AZURE),
    Setting(c.AZURE_EVENTGRID_ENDPOINT, "azure_eventgrid_endpoint", ALL, _AZURE),
    # The workspace the Azure ML jobs run in: validate's hand-off, train-launch's job.
    # Settings.from_env reads the three names into one field, azureml_workspace.
    Setting(c.AZUREML_SUBSCRIPTION_ID, "azureml_workspace", _AZUREML_WORKSPACE, _AZURE),
    Setting(c.AZUREML_RESOURCE_GROUP, "azureml_workspace", _AZUREML_WORKSPACE, _AZURE),
    Setting(c.AZUREML_WORKSPACE, "azureml_workspace", _AZUREML_WORKSPACE, _AZURE),
    # validate hands large files to an Azure ML command job on the CPU cluster.
    Setting(c.AZUREML_COMPUTE, "azureml_compute", frozenset({"validate"}), _AZURE),
    Setting(c.AZUREML_ENVIRONMENT, "azureml_environment", frozenset({"validate"}), _AZURE),
    Setting(
        c.AZUREML_STAGING_DATASTORE, "azureml_staging_datastore", frozenset({"validate"}), _AZURE
    ),
    # train-launch starts the training job on the GPU cluster, curated in, models out.
    Setting(c.AZUREML_GPU_COMPUTE, "azureml_gpu_compute", frozenset({"train_launch"}), _AZURE),
    Setting(
        c.AZUREML_TRAIN_ENVIRONMENT,
        "azureml_train_environment",
        frozenset({"train_launch"}),
        _AZURE,
    ),
    Setting(
        c.AZUREML_CURATED_DATASTORE,
        "azureml_curated_datastore",
        frozenset({"train_launch"}),
        _AZURE,
    ),
    Setting(
        c.AZUREML_MODELS_DATASTORE, "azureml_models_datastore", frozenset({"train_launch"}), _AZURE
    ),
    # deploy creates each version's online deployment in this environment, on this size.
    Setting(
        c.AZUREML_SERVE_ENVIRONMENT, "azureml_serve_environment", frozenset({"deploy"}), _AZURE
    ),
    Setting(
        c.AZUREML_SERVING_INSTANCE_TYPE,
        "azureml_serving_instance_type",
        frozenset({"deploy"}),
        _AZURE,
    ),
)


def settings_for(cloud: Cloud, function: str) -> tuple[Setting, ...]:
    """The settings ``function`` (a logical name) is given on ``cloud``."""
    return tuple(s for s in CONTRACT if cloud in s.clouds and function in s.functions)


def environment[V](
    cloud: Cloud, function: str, offered: Mapping[str, V], *, per_function: tuple[str, ...] = ()
) -> dict[str, V]:
    """``function``'s environment on ``cloud``: exactly its contract settings, taken from
    the values the stack ``offered`` (by env var name).

    ``per_function`` names settings the caller adds itself for each deployed copy (the
    serve function's dataset); they are left out here and not required in ``offered``.
    """
    declared = {s.env for s in CONTRACT if cloud in s.clouds}
    unread = sorted(set(offered) - declared)
    if unread:
        raise StackContractError(
            f"the {cloud} stack sets {', '.join(unread)}, which no function is declared to read",
            hint="add a Setting for it to shared/stack_contract.py CONTRACT (and read it in "
            "Settings.from_env), or stop setting it",
        )
    wanted = [s.env for s in settings_for(cloud, function) if s.env not in per_function]
    missing = [name for name in wanted if name not in offered]
    if missing:
        raise StackContractError(
            f"{function} reads {', '.join(missing)} on {cloud}, and the stack does not set it",
            hint="give the stack's env a value for it, or drop it from the function's "
            "Setting in shared/stack_contract.py",
        )
    return {name: offered[name] for name in wanted}


def shared_environment[V](
    cloud: Cloud, functions: Iterable[str], offered: Mapping[str, V]
) -> dict[str, V]:
    """One environment for several functions that share it (the Azure Function App has
    one set of app settings for all its functions): the union of each one's
    ``environment``, with the same refusals."""
    out: dict[str, V] = {}
    for function in functions:
        out.update(environment(cloud, function, offered))
    return out
