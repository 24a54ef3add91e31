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
from shared.reasons import Reason

ARTIFACT_SHA256 = "artifact_sha256"  # the lineage key the registry keeps the hash under
ARCHIVE_NAME = "model.tar.gz"
# A model folder holds a handful of files (model, card, metrics, holdout): these caps
# leave room for large models and refuse a decompression bomb after its first header.
MAX_MEMBERS = 1000
MAX_UNPACKED_BYTES = 4 * 1024**3


class ArtifactIntegrityError(DhowError):
    """A model artifact's bytes are not the ones that were approved."""

    reason = Reason.ARTIFACT_HASH_MISMATCH


class ArtifactUnsafe(DhowError):
    """A model archive that unpacking would let out of its folder or past its bounds."""

    reason = Reason.ARTIFACT_UNSAFE


def _unpack(archive: Path, into: Path) -> None:
    """Unpack member by member, judging each header before its bytes are written, so a
    bomb stops at the member that crosses a cap instead of filling the disk first."""
    hint = "rebuild the model archive from the trainer's output folder: regular files only"
    members = unpacked = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            members += 1
            unpacked += member.size
            name = Path(member.name)
            if members > MAX_MEMBERS:
                raise ArtifactUnsafe(f"{archive.name} has over {MAX_MEMBERS} members", hint=hint)
            if unpacked > MAX_UNPACKED_BYTES:
                raise ArtifactUnsafe(
                    f"{archive.name} unpacks to over {MAX_UNPACKED_BYTES:,} bytes", hint=hint
                )
            if member.issym() or member.islnk():
                raise ArtifactUnsafe(f"{member.name!r} is a link", hint=hint)
            if (into / name).resolve() == archive.resolve():
                # It would overwrite the archive being read, mid-read.
                raise ArtifactUnsafe(f"a member is named {ARCHIVE_NAME}", hint=hint)
            # The data filter refuses absolute paths, "..", devices and odd modes.
            try:
                tar.extract(member, into, filter="data")
            except tarfile.FilterError as exc:
                raise ArtifactUnsafe(f"{member.name!r}: {exc}", hint=hint) from exc


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
    archive = into / ARCHIVE_NAME
    store.download(ref, archive)
    actual = sha256_file(archive)
    if expected_sha256 and actual != expected_sha256:
        raise ArtifactIntegrityError(
            f"{ref.uri} has sha256 {actual[:12]}…, the registry recorded {expected_sha256[:12]}…",
            hint="the artifact changed after it was approved; retrain, or roll back to a version "
            "whose artifact is intact (`dhow deploy rollback`)",
        )
    _unpack(archive, into)
    return into, actual
