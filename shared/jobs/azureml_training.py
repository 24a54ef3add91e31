"""`python -m shared.jobs.azureml_training`: the command of Dhow's Azure ML training job.

Azure ML mounts the curated file as ``--train`` (once per version a run learns from)
and the job's output folder (on the models datastore, ``models/<dataset>/<job>/output/``)
as ``--output``. The trainer runs
with SageMaker's variables, exactly as in SageMaker and the local backend; then the
model folder is packed into ``<output>/model.tar.gz``, the path the launcher's
``dhow:artifact`` tag names, where register opens it. A failed trainer leaves its
``failure`` file in the output folder and the job fails with the trainer's exit code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from shared.jobs.model_archive import MODEL_ARCHIVE, write_model_archive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.jobs.azureml_training")
    p.add_argument(
        "--train",
        type=Path,
        action="append",
        required=True,
        help="a curated file (or folder); once per version the run learns from, oldest first",
    )
    p.add_argument("--output", type=Path, required=True, help="the job's output folder")
    p.add_argument("--entrypoint", default="shared.trainer", help="the trainer module")
    args = p.parse_args(argv)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dhow-model-") as tmp:
        model = Path(tmp) / "model"
        env = {
            **os.environ,
            # SageMaker's variables for its channels train, train_1, ... (shared.trainer).
            **{
                "SM_CHANNEL_TRAIN" + (f"_{i}" if i else ""): str(path)
                for i, path in enumerate(args.train)
            },
            "SM_MODEL_DIR": str(model),
            "SM_OUTPUT_DATA_DIR": str(output / "data"),
            "SM_OUTPUT_DIR": str(output),
        }
        code = subprocess.run([sys.executable, "-m", args.entrypoint], env=env, check=False)
        if code.returncode != 0:
            return code.returncode
        write_model_archive(model, output / MODEL_ARCHIVE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
