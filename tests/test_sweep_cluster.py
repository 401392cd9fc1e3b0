"""Against a real Ray cluster started with `ray start --head` on loopback: `--address` and `submit`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from atf import keys
from orchestration.mlflow_log import TrackingStore
from orchestration.sweepfile import load_sweep

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head --block` in its own session; the whole group is killed afterwards."""
    port, dash = free_port(), free_port()
    # every agent port free-picked too: their fixed defaults (e.g. 52365) collide with any other head
    agents = [f"--{k}={free_port()}" for k in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                "metrics-export-port", "runtime-env-agent-port")]
    # token auth on both sides (Ray >= 2.52 can enforce it; the head and this client share ~/.ray)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token"}
    log = open(tmp_path_factory.mktemp("head") / "head.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--disable-usage-stats", *agents],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_port(port, 90), "ray head did not come up"
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "env": env, "port": dash}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def one_cell(tmp_path: Path, root: Path, name: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
name: {name}
base:
  data: {{root: {root}, max_train: 16, max_test: 8}}
  model: {{width_mult: 0.25, input_size: 48}}
  optim: {{epochs: 1, batch_size: 8}}
tables: [I]
set: {{scenario: baseline}}
""")
    return p


def finished(db: Path) -> dict:
    return TrackingStore(f"sqlite:///{db}", "atf").finished_cells()


def test_address_joins_existing_cluster(tmp_path, synth_root, ray_head):
    p = one_cell(tmp_path, synth_root, "joined")
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", str(p), "--address", ray_head["gcs"]],
                         cwd=tmp_path, env=ray_head["env"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Started a local Ray instance" not in out.stderr  # it joined, it did not start its own
    cid = load_sweep(p).cells()[0].cell_id
    run = finished(tmp_path / "mlflow.db")[cid]
    assert keys.test_metric("wflw", "full", keys.NME) in run.data.metrics


def test_submit_through_jobs_api(tmp_path, synth_root, ray_head):
    deadline = time.time() + 90  # the dashboard starts after the GCS port opens: poll, don't try once
    while True:
        try:
            urllib.request.urlopen(f"{ray_head['dashboard']}/api/version", timeout=10)
            break
        except urllib.error.HTTPError:
            break  # it answers (401 without the token): the Jobs API is up
        except OSError as e:  # still starting, or no dashboard on this install
            if time.time() > deadline:
                pytest.skip(f"Ray dashboard not reachable: {e}")
            time.sleep(1.0)
    root = Path(__file__).resolve().parents[1]
    jobdir = root / "sweeps" / ".test-jobs"
    jobdir.mkdir(exist_ok=True)
    p = one_cell(jobdir, synth_root, f"submitted{os.getpid()}")
    try:
        out = subprocess.run([sys.executable, "-m", "orchestration.cli", "submit", str(p),
                              "--address", ray_head["dashboard"], "--python", sys.executable],
                             cwd=tmp_path, env=ray_head["env"], capture_output=True, text=True, timeout=400)
    finally:
        p.unlink()
        if not any(jobdir.iterdir()):
            jobdir.rmdir()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SUCCEEDED" in out.stdout
    cid = load_sweep(one_cell(tmp_path, synth_root, "x")).cells()[0].cell_id
    assert cid in finished(tmp_path / "mlflow.db")  # base-dir = the submitter's cwd: the store is here


# -- a second node and GPUs that do not exist, on loopback -------------------------------------------

PROBE = '''
"""Trainer wrapper (SweepOptions.trainer): records where a trial ran, waits for its peers, trains."""
import json, os, time
from pathlib import Path
import ray
from atf.device import pick_device
from atf.train import train as real_train

def train(cfg, out_dir, on_epoch=None, resume=None):
    probe = Path(os.environ["ATF_PROBE_DIR"])
    me = f"{os.getpid()}-{time.time_ns()}"
    (probe / f"{me}.start").write_text("")
    want, deadline = int(os.environ["ATF_PROBE_BARRIER"]), time.time() + 120
    while len(list(probe.glob("*.start"))) < want and time.time() < deadline:
        time.sleep(0.2)   # the barrier: passes only if `want` trials run at the same time
    rec = {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
           "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "peers": len(list(probe.glob("*.start"))),
           "device": pick_device(cfg.device).type}
    result = real_train(cfg, out_dir, on_epoch=on_epoch, resume=resume)
    (probe / f"{me}.json").write_text(json.dumps(rec))
    return result
'''


PROBE_TRAINER = "placement_probe:train"  # SweepOptions.trainer: the wrapper above, importable by the workers


def probe_env(tmp_path: Path, monkeypatch, barrier: int) -> Path:
    """Workers inherit the environment of the Ray started after this (they import the probe)."""
    (tmp_path / "placement_probe.py").write_text(PROBE)
    probes = tmp_path / "probes"
    probes.mkdir()
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("ATF_PROBE_DIR", str(probes))
    monkeypatch.setenv("ATF_PROBE_BARRIER", str(barrier))
    return probes


def cells_file(tmp_path: Path, root: Path, resources: str, n: int) -> Path:
    p = tmp_path / "multi.yaml"
    p.write_text(f"""
name: multi
base:
  data: {{root: {root}, max_train: 12, max_test: 4}}
  model: {{width_mult: 0.25, input_size: 32}}
  optim: {{epochs: 1, batch_size: 8}}
resources: {resources}
max_failures: 0
tables: [I]
seeds: {list(range(n))}
set: {{scenario: baseline}}
""")
    return p


def test_trials_spread_over_two_nodes_with_shared_storage(tmp_path, synth_root, monkeypatch):
    """Head and a second node on this machine, each with one logical CPU and its own resource label:
    two trials run at once, one per node; checkpoints and results land in the shared storage path;
    one MLflow run per cell."""
    import json

    import ray
    from ray.cluster_utils import Cluster

    from orchestration.runner import SweepOptions, run_sweep

    probes = probe_env(tmp_path, monkeypatch, barrier=2)
    monkeypatch.chdir(tmp_path)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"node_head": 1}, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={"node_second": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        labels = {n["NodeID"]: next(k for k in n["Resources"] if k.startswith("node_"))
                  for n in ray.nodes() if n["Alive"]}
        assert sorted(labels.values()) == ["node_head", "node_second"]
        sweep = load_sweep(cells_file(tmp_path, synth_root, "{cpu: 1}", 4))
        shared = tmp_path / "shared"
        summary = run_sweep(sweep, SweepOptions(storage=str(shared), progress=False, trainer=PROBE_TRAINER,
                                                checkpoint_period=0))
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert summary.ok and summary.finished == 4, summary.line()
    recs = [json.loads(p.read_text()) for p in probes.glob("*.json")]
    assert len(recs) == 4
    assert {labels[r["node"]] for r in recs} == {"node_head", "node_second"}   # both nodes trained
    assert all(r["peers"] >= 2 for r in recs)            # and at the same time (the barrier passed)
    # per-epoch checkpoints and every trial's result bundle in the shared storage path
    assert len(list(shared.rglob("atf_files.json"))) + len(list(shared.rglob("result.json"))) >= 4
    assert len({p.parent.parent for p in shared.rglob("result.json")}) == 4
    runs = TrackingStore(f"sqlite:///{tmp_path / 'mlflow.db'}", "atf").cell_runs()
    assert sorted(runs) == sorted(c.cell_id for c in sweep.cells())
    assert all(len(v) == 1 and v[0].data.tags[keys.TAG_STATUS] == "finished" for v in runs.values())


def test_half_gpu_trials_run_four_at_a_time_on_two_declared_gpus(tmp_path, synth_root, monkeypatch):
    """Two GPUs declared that do not exist: `gpu: 0.5` trials run four at once, each with the
    CUDA_VISIBLE_DEVICES of its own GPU (two per card); the trainer, finding no CUDA, uses the CPU."""
    import json

    import ray

    from orchestration.runner import SweepOptions, run_sweep

    probes = probe_env(tmp_path, monkeypatch, barrier=4)
    monkeypatch.chdir(tmp_path)
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        sweep = load_sweep(cells_file(tmp_path, synth_root, "{cpu: 0.5, gpu: 0.5}", 4))
        summary = run_sweep(sweep, SweepOptions(storage=str(tmp_path / "tune"), progress=False,
                                                trainer=PROBE_TRAINER))
    finally:
        ray.shutdown()
    assert summary.ok and summary.finished == 4, summary.line()
    recs = [json.loads(p.read_text()) for p in probes.glob("*.json")]
    assert len(recs) == 4 and all(r["peers"] == 4 for r in recs)   # four at a time
    assert all(len(r["gpu_ids"]) == 1 and r["cuda"] == r["gpu_ids"][0] for r in recs)
    assert sorted(r["cuda"] for r in recs) == ["0", "0", "1", "1"]   # two trials per card
    assert {r["device"] for r in recs} == {"cpu"}                     # no CUDA here: CPU fallback
