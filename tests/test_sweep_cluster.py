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
    # token auth on both sides (Ray >= 2.52 can enforce it; the head and this client share ~/.ray)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token"}
    log = open(tmp_path_factory.mktemp("head") / "head.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--disable-usage-stats"],
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
  data: {{root: {root}, max_train: 16, max_test: 8, cache_images: true}}
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
    try:
        urllib.request.urlopen(f"{ray_head['dashboard']}/api/version", timeout=60)
    except urllib.error.HTTPError:
        pass  # it answers (401 without the token): the Jobs API is up
    except OSError as e:  # no dashboard on this install: the Jobs API is unavailable
        pytest.skip(f"Ray dashboard not reachable: {e}")
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
