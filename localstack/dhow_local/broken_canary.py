"""`python -m dhow_local.broken_canary DATASET SAMPLE`: the demo's rollback, played live.

It registers a copy of DATASET's champion whose model card asks for a column no request
has (as a model trained on a renamed column would: every prediction it makes fails),
announces it as register does (``ModelApproved`` on the pipeline's bus), and sends the
SAMPLE's rows through the local router, one request each, while the rollout is in
progress: ``CONCURRENCY`` at a time, as a service's clients would, so that the candidate
gets its share (at least ``min_requests``) within the canary's local minute. The demo's
router answers a request in ~10 ms in its own process but ~40-75 ms over HTTP on a
shared two-core machine (the client, the router, Azurite and the runner's pollers take
turns on the CPU); one request at a time, 10% of a 5 s minute was fewer than 20.
Nothing else is played: the deploy function starts the canary, and the
platform's own judge rolls it back (on AWS the router, as CodeDeploy's alarms; on Azure
the deploy function's ``SteppedRolloutDeployer`` reading the router's counts, as it
reads Azure Monitor in the cloud). It prints what the requests saw.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx

from dhow_local.platform import ROUTER_URL
from shared.artifacts import ARTIFACT_SHA256
from shared.events import ModelApproved, ObjectRef
from shared.layout import model_output_prefix

MISSING_COLUMN = "churn_score_v2"
# Requests in flight at once: bounded, and only ever to the local router (127.0.0.1).
CONCURRENCY = 8


def broken_archive(archive: bytes) -> bytes:
    """The same model.tar.gz with one feature more in its card: no request has it."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for member in src.getmembers():
            f = src.extractfile(member)
            body = f.read() if f is not None else b""
            if member.name == "model.json":
                card = json.loads(body)
                card["features"].append(MISSING_COLUMN)
                body = json.dumps(card).encode()
            member.size = len(body)
            dst.addfile(member, io.BytesIO(body) if f is not None else None)
    return out.getvalue()


def _status(client: httpx.Client, dataset: str) -> dict[str, Any]:
    route: dict[str, Any] = client.get(f"{ROUTER_URL}/_router/status").json().get(dataset, {})
    return route


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m dhow_local.broken_canary DATASET SAMPLE", file=sys.stderr)
        return 2
    dataset, sample = argv[1], Path(argv[2])
    from dhow_cli.app import resolve_settings
    from dhow_cli.datasets import read_sample

    from shared.specs import load_spec
    from shared.topology import build_topology
    from shared.wiring import build_model_registry, build_ports

    settings = resolve_settings()
    ports = build_ports(settings)
    registry = build_model_registry(settings, ports)
    champion = registry.champion(dataset)
    if champion is None:
        print(f"{dataset} has no champion to copy", file=sys.stderr)
        return 1
    good = b"".join(ports.store.iter_chunks(ObjectRef.from_uri(champion.artifact)))
    broken = broken_archive(good)
    ref = ObjectRef(
        container=build_topology(settings.stage).bucket("models").name,
        key=f"{model_output_prefix(dataset, f'broken-{uuid.uuid4().hex[:6]}')}model.tar.gz",
    )
    ports.store.put_bytes(ref, broken)
    # The registry's own artifact form: s3:// URLs on AWS, container/key on Azure.
    artifact = f"s3://{ref.uri}" if champion.artifact.startswith("s3://") else ref.uri
    version = registry.register(
        dataset,
        artifact=artifact,
        image=champion.image,
        metrics=champion.metrics,
        lineage={**champion.lineage, ARTIFACT_SHA256: hashlib.sha256(broken).hexdigest()},
        status="Approved",
        reason=f"demo: a card that asks for {MISSING_COLUMN}, which no request has",
    )
    spec = load_spec(dataset, settings.specs_dir)
    frame = read_sample(sample).drop(columns=[spec.target], errors="ignore")
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    predict = f"{ROUTER_URL}/datasets/{dataset}/predict"
    with httpx.Client(timeout=30) as client:
        # The stable version's first request loads its model (seconds): done before the
        # canary starts, so that its one minute (5 s here) goes to judging.
        for row in rows[:5]:
            client.post(predict, json=row)
    ports.bus.publish(
        ModelApproved(
            dataset=dataset,
            correlation_id=f"demo-broken-{uuid.uuid4().hex[:6]}",
            model_version=str(version.version),
            job_name="demo-broken-canary",
            metrics=champion.metrics,
        )
    )
    print(
        f"registered v{version.version}: v{champion.version}'s model with a card asking "
        f"for {MISSING_COLUMN} (every prediction fails); ModelApproved sent"
    )
    if urlsplit(ROUTER_URL).hostname != "127.0.0.1":
        print(f"refusing to send the demo's load to {ROUTER_URL}", file=sys.stderr)
        return 2
    by_version: dict[str, dict[str, int]] = {}

    def send(client: httpx.Client, i: int) -> tuple[str, str]:
        r = client.post(predict, json=rows[i % len(rows)])
        return r.headers.get("x-dhow-routed-version", "?"), str(r.status_code)

    with (
        httpx.Client(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)) as client,
        ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="demo-client") as pool,
    ):
        deadline = time.monotonic() + 60
        while _status(client, dataset).get("candidate") != version.version:
            if time.monotonic() > deadline:
                print("the rollout did not start in 60 s", file=sys.stderr)
                return 1
            time.sleep(0.05)
        t0, sent = time.monotonic(), 0
        # Row after row of the sample, one request each, while the canary is judged.
        # Always CONCURRENCY in flight (no batch waits for its slowest request).
        flying: deque[Future[tuple[str, str]]] = deque()
        in_progress = True
        while flying or (in_progress and sent < 4000):
            while in_progress and len(flying) < CONCURRENCY and sent < 4000:
                flying.append(pool.submit(send, client, sent))
                sent += 1
            routed, code = flying.popleft().result()
            seen = by_version.setdefault(routed, {})
            seen[code] = seen.get(code, 0) + 1
            if in_progress and sent % (4 * CONCURRENCY) == 0:
                in_progress = _status(client, dataset).get("status") == "InProgress"
        seconds = time.monotonic() - t0
        final = _status(client, dataset)
    print(f"{sent} requests in {seconds:.1f} s while v{version.version} was the canary:")
    for v, codes in sorted(by_version.items()):
        print(f"  v{v}: " + ", ".join(f"{n} x HTTP {c}" for c, n in sorted(codes.items())))
    print(f"router: {final.get('status')}, {final.get('reason') or ''}".rstrip(", "))
    return 0 if final.get("status") == "RolledBack" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
