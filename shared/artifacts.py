"""Model artifacts: ``model.tar.gz`` fetched, checked against its recorded SHA-256, unpacked.

Register records the hash of the artifact it gated; serve refuses to load any
other bytes under that version's name. A model swapped in the bucket after its
approval is therefore never served.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from shared.errors import DhowError
from shared.events import ObjectRef
from shared.ports import ObjectStore

ARTIFACT_SHA256 = "artifact_sha256"  # the lineage key the registry keeps the hash under


class ArtifactIntegrityError(DhowError):
    """A model artifact's bytes are not the ones that were approved."""

    reason = "artifact_hash_mismatch"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_model(
    store: ObjectStore, ref: ObjectRef, into: Path, expected_sha256: str | None = None
) -> tuple[Path, str]:
    """Download and unpack ``ref`` into ``into``; returns the folder and the archive's hash.

    With ``expected_sha256``, bytes that hash otherwise raise before anything is unpacked.
    """
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "model.tar.gz"
    store.download(ref, archive)
    actual = sha256_file(archive)
    if expected_sha256 and actual != expected_sha256:
        raise ArtifactIntegrityError(
            f"{ref.uri} has sha256 {actual[:12]}…, the registry recorded {expected_sha256[:12]}…",
            hint="the artifact changed after it was approved; retrain, or roll back to a version "
            "whose artifact is intact (`dhow deploy rollback`)",
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")  # no paths outside `into`, no devices
    return into, actual
