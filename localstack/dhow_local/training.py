"""The local training backend: SageMaker's contract on this machine.

``launch`` records the job (a marker object under the models bucket, so a
duplicate request finds it) and starts ``python -m dhow_local.training_job``
as its own process, as SageMaker would start a container: the caller returns
at once, and the job later publishes a "SageMaker Training Job State Change"
event to the default bus, exactly as SageMaker does, so register sees in
LocalStack the event it will see in the cloud.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping

from shared.adapters.sagemaker_training import training_job_name
from shared.events import ObjectRef
from shared.layout import model_job_prefix
from shared.ports import LaunchedTraining, ObjectStore, TrainingJobRequest, TrainingLauncher


def job_marker(models_container: str, dataset: str, job_name: str) -> ObjectRef:
    return ObjectRef(
        container=models_container, key=f"{model_job_prefix(dataset, job_name)}job.json"
    )


class LocalTrainingLauncher(TrainingLauncher):
    """The local kits' launcher: each job a process of its own on this machine."""

    def __init__(
        self,
        store: ObjectStore,
        models_container: str,
        name_prefix: str,
        env: Mapping[str, str],
        *,
        detach: bool = True,
    ) -> None:
        # The job rebuilds the launcher's settings from these variables.
        self._env = {**os.environ, **env}
        self._store = store
        self._models = models_container
        self._prefix = name_prefix
        self._detach = detach

    def launch(self, request: TrainingJobRequest) -> LaunchedTraining:
        name = training_job_name(request, self._prefix)
        marker = job_marker(self._models, request.dataset, name)
        if self._store.exists(marker):
            return LaunchedTraining(job_name=name, instance_type=None, created=False)
        body = request.model_dump_json()
        self._store.put_bytes(marker, body.encode(), {"job_name": name})
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write(body)
        argv = [
            sys.executable,
            "-m",
            "dhow_local.training_job",
            "--request",
            f.name,
            "--job-name",
            name,
        ]
        if self._detach:
            subprocess.Popen(
                argv,
                env=self._env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        else:
            subprocess.run(argv, env=self._env, check=False, capture_output=True)
        return LaunchedTraining(job_name=name, instance_type="local", created=True)
