"""What a function's package is made of: our code (an archive of the files
``layers.catalogue.code_files`` names, the same bytes for the same sources) and its
dependency layer (``make layers``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi

from infra.config import REPO_ROOT, StackConfig
from layers.catalogue import FUNCTION_LAYERS, code_files


def code_archive(root: Path = REPO_ROOT) -> pulumi.AssetArchive:
    """The function code, file by file: no caches, no tests, nothing outside the package."""
    return pulumi.AssetArchive(
        {str(p.relative_to(root)): pulumi.FileAsset(str(p)) for p in code_files(root)}
    )


def source_digest(root: Path = REPO_ROOT, extra: tuple[str, ...] = ()) -> str:
    """A digest of the code and ``extra`` files: the jobs image's tag, so a new image is
    pushed exactly when what goes into it changes."""
    h = hashlib.sha256()
    for p in [*code_files(root), *(root / e for e in extra)]:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def layer_path(cfg: StackConfig, function_logical: str) -> Path:
    return cfg.layers_dir / f"{FUNCTION_LAYERS[function_logical]}-{cfg.arch}.zip"


def layer_archive(cfg: StackConfig, function_logical: str) -> pulumi.FileArchive:
    """The dependency layer ``make layers`` built for this function and architecture."""
    return pulumi.FileArchive(str(layer_path(cfg, function_logical)))


def missing_layers(cfg: StackConfig) -> list[Path]:
    """Layers the AWS stack needs that ``make layers`` has not built (checked by
    ``__main__`` before anything is created)."""
    zips = {layer_path(cfg, fn.logical) for fn in cfg.topology.functions if fn.package == "zip"}
    return sorted(p for p in zips if not p.exists())
