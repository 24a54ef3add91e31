"""``model.tar.gz``: the model folder as SageMaker packs it, which register opens."""

from __future__ import annotations

import tarfile
from pathlib import Path

MODEL_ARCHIVE = "model.tar.gz"


def write_model_archive(model_dir: Path, archive: Path) -> Path:
    """Pack the files of ``model_dir`` at the archive's top level (as SageMaker does)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(model_dir.iterdir()):
            tar.add(f, arcname=f.name)
    return archive
