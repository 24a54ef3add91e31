"""`python -m shared.jobs.validate`: the validate service inside a managed job.

SageMaker Processing copies the staged object to ``--input``; the same service
the function runs then validates it there, with no size limit, and writes,
moves and announces exactly as the function would.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from shared.events import DatasetIngested, ObjectRef
from shared.services.ingest import format_of
from shared.settings import Settings
from shared.wiring import build_ports, build_validate_service


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.jobs.validate", description=__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--sha256", required=True)
    p.add_argument("--staged", required=True, help="s3://bucket/key or container/key")
    p.add_argument("--source", required=True, help="the raw upload, for lineage")
    p.add_argument("--size-bytes", type=int, required=True)
    p.add_argument("--correlation-id", required=True)
    p.add_argument("--input", type=Path, required=True, help="local copy (file or directory)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    staged = ObjectRef.from_uri(args.staged)
    fmt = format_of(staged.key)
    if fmt is None:
        p.error(f"unsupported staged key {staged.key!r}")
    local = args.input
    if local.is_dir():
        local = next(f for f in sorted(local.rglob("*")) if f.is_file())
    settings = Settings.from_env()
    ports = build_ports(settings)
    # The job is the handed-off work: it must not hand off again.
    settings_inline = replace(settings, validate_inline_max_bytes=2**62)
    service = build_validate_service(settings_inline, ports)
    event = DatasetIngested(
        dataset=args.dataset,
        correlation_id=args.correlation_id,
        sha256=args.sha256,
        size_bytes=args.size_bytes,
        format=fmt,
        source=ObjectRef.from_uri(args.source),
        staged=staged,
    )
    outcome = service.handle(event, local_copy=local)
    logging.info("validation finished: %s", outcome.status)
    return 0 if outcome.status in ("validated", "rejected", "duplicate") else 1


if __name__ == "__main__":
    sys.exit(main())
