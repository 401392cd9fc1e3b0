"""atf-report as a real client: an `mlflow server` on loopback, checked over its REST API.

The store is filled through the server (so artifacts go through its proxy into a tmp
destination), the REST API is asked directly for the runs, metrics and artifacts the report
uses, and the atf-report command renders from the server's URL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from test_report_store import fill_store

from atf import keys
from reports.collect import collect
from reports.compute import compute_table
from reports.layouts import load_tables

BIN = Path(sys.executable).parent
# the console script when installed (pip install -e .), else the same entry point as a module
REPORT = [str(BIN / "atf-report")] if (BIN / "atf-report").exists() else [sys.executable, "-m", "reports.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
         "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        info = fill_store(url, tmp)
        yield url, info, tmp
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # the server and its workers: the group we started
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_rest_api_has_what_the_report_uses(server):
    url, info, tmp = server
    runs = collect(url)
    result = compute_table(load_tables()["I"], runs)
    used = set(result.run_ids)
    assert used == set(info["ids"]["wflw_base"] + info["ids"]["wflw_wa"])
    api = url + "/api/2.0/mlflow"
    found = _post(api + "/runs/search", {
        "experiment_ids": [info["experiment"]],
        "filter": f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_CELL}' AND tags.`{keys.TAG_TARGET}` = 'wflw'"})
    assert {r["info"]["run_id"] for r in found["runs"]} == used
    name = keys.test_metric("wflw", "largepose", keys.NME)
    for rid in used:
        run = _get(api + "/runs/get?" + urllib.parse.urlencode({"run_id": rid}))["run"]
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        cell = next(c for c in result.cells.values() if c.metric_name == name and c.ours
                    and rid in c.ours.run_ids)
        assert metrics[name] == pytest.approx(cell.ours.mean)
        listing = _get(api + "/artifacts/list?" + urllib.parse.urlencode(
            {"run_id": rid, "path": keys.ARTIFACT_CED_DIR}))
        assert keys.ced_artifact("wflw", "full") in {f["path"] for f in listing["files"]}
        body = urllib.request.urlopen(url + "/get-artifact?" + urllib.parse.urlencode(
            {"path": keys.ced_artifact("wflw", "full"), "run_uuid": rid}), timeout=30).read().decode()
        assert body.startswith("threshold,fraction")
    # artifacts went through the server's proxy into the tmp destination
    assert any((tmp / "artifacts").rglob(Path(keys.pred_artifact("wflw", "full")).name))


def test_atf_report_renders_from_the_server(server, tmp_path):
    url, _, _ = server
    out = tmp_path / "report"
    done = subprocess.run([*REPORT, "--mlflow-uri", url, "--out", str(out),
                           "--tables", "I,IV"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    iv = (out / "table_IV.md").read_text()
    assert f"| ATF<sub>3W</sub> | [3.55 ± 0.01]({url}/#/compare-runs?runs=" in iv   # linked to the server
    assert "| &emsp;*Δ vs baseline (%)* | +8.3* |" in iv
    assert (out / "figures" / "fig5_I_wflw_full.png").is_file()   # predictions fetched over HTTP
    assert url in (out / "index.md").read_text()


def test_unreachable_server_is_one_line(tmp_path):
    port = _free_port()
    done = subprocess.run([*REPORT, "--mlflow-uri", f"http://127.0.0.1:{port}",
                           "--out", str(tmp_path / "r"), "--tables", "VI"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "unreachable" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "| &emsp;*paper* | 1.57 | 1.99 |" in (tmp_path / "r" / "table_VI.md").read_text()
