"""`dhow local up --cloud azure`: Azurite from npm, with the topology created in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from dhow_local.platform import AZURITE_CONNECTION_STRING, azurite_up

from shared.topology import build_topology
from shared.wiring import azure_table_name

ROOT = Path(__file__).resolve().parents[2]


def dhow(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    # A router port of its own: the session's AWS platform may hold the default one.
    env = {
        **os.environ,
        "DHOW_LOCAL_HOME": str(home),
        "DHOW_STAGE": "aztest",
        "DHOW_ROUTER_PORT": "4572",
    }
    return subprocess.run(
        [sys.executable, "-m", "dhow_cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_local_up_azure_creates_the_topology_and_down_stops_it(tmp_path: Path) -> None:
    already = azurite_up()  # a developer's own Azurite may be running
    up = dhow("local", "up", "--cloud", "azure", "--json", home=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    result = json.loads(up.stdout)
    assert result["region"] == "uaenorth"
    topo = build_topology("aztest")
    # Closed before `down`: Azurite waits for open keep-alive connections on SIGTERM.
    with BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING) as blobs:
        containers = {c.name for c in blobs.list_containers()}
    with QueueServiceClient.from_connection_string(AZURITE_CONNECTION_STRING) as qs:
        queues = {q.name for q in qs.list_queues()}
    with TableServiceClient.from_connection_string(AZURITE_CONNECTION_STRING) as ts:
        tables = {t.name for t in ts.list_tables()}
    assert {b.name for b in topo.buckets} <= containers
    for q in topo.queues:
        assert {q.name, f"{q.name}-poison"} <= queues
    assert azure_table_name(topo.table("lineage").name) in tables
    status = dhow("local", "status", "--json", home=tmp_path)
    assert json.loads(status.stdout)["ready"] is True
    again = dhow("local", "up", "--cloud", "azure", "--json", home=tmp_path)  # idempotent
    assert again.returncode == 0, again.stderr
    down = dhow("local", "down", "--json", home=tmp_path)
    assert down.returncode == 0
    stopped = json.loads(down.stdout)["stopped"]
    assert stopped["runner"] == "stopped"
    assert stopped["router"] == "stopped"
    if not already:
        assert stopped["azurite"] == "stopped"
        assert not azurite_up()
