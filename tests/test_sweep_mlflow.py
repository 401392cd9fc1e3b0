"""MLflow layout helpers against a real SQLite store, including several writer processes at once."""

from __future__ import annotations

import subprocess
import sys

from atf import keys
from atf.config import RunConfig
from orchestration.mlflow_log import TrackingStore, flat_params

WRITER = """
import sys
from atf import keys
from atf.config import RunConfig
from orchestration.mlflow_log import TrackingStore
store = TrackingStore(sys.argv[1], "atf")
parent = store.parent("w" + sys.argv[2], "x.yaml")
for i in range(int(sys.argv[3])):
    tags = {keys.TAG_CELL: f"{sys.argv[2]}-{i}", keys.TAG_TABLES: "I"}
    run = store.open_run(parent_id=parent, sweep_name="w", tags=tags, role=keys.ROLE_CELL,
                         trial_id=str(i), cfg=RunConfig(), name=str(i))
    for step in (1, 2):
        store.log_metrics(run, {keys.TRAIN_LOSS: 1.0 / step}, step)
    store.finish(run, {keys.test_metric("wflw", "full", keys.NME): float(i)}, None, 0)
"""


def test_concurrent_sweeps_lose_no_runs(tmp_path):
    """Three processes write to one fresh SQLite store at once (creation races and locks included)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    n = 12
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(w), str(n)], stderr=subprocess.PIPE,
                              text=True) for w in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    done = TrackingStore(uri, "atf").finished_cells()
    assert sorted(done) == sorted(f"{w}-{i}" for w in range(3) for i in range(n))
    assert all(r.data.metrics[keys.TRAIN_LOSS] == 0.5 for r in done.values())


def test_open_run_continues_unfinished_and_params_are_flat(tmp_path):
    store = TrackingStore(f"sqlite:///{tmp_path / 'm.db'}", "atf")
    parent = store.parent("s", "s.yaml")
    cfg = RunConfig(scenario="atf", aux=("300w",))
    tags = {keys.TAG_CELL: "abc", keys.TAG_TABLES: "III"}
    first = store.open_run(parent_id=parent, sweep_name="s", tags=tags, role=keys.ROLE_CELL, trial_id="t1",
                           cfg=cfg, name="abc")
    again = store.open_run(parent_id=parent, sweep_name="s", tags=tags, role=keys.ROLE_CELL, trial_id="t2",
                           cfg=cfg, name="abc")
    assert again == first  # a retried / resumed trial continues its own run
    run = store.client.get_run(first)
    assert run.data.tags[keys.TAG_TRIAL] == "t2" and run.data.params == flat_params(cfg)
    assert run.data.params["aux"] == '["300w"]' and run.data.params["optim.lr"] == "0.001"
    store.finish(first, {}, None, 0)
    store.add_tables(store.finished_cells()["abc"], ["VII", "I"])
    assert store.client.get_run(first).data.tags[keys.TAG_TABLES] == "I,III,VII"
    third = store.open_run(parent_id=parent, sweep_name="s", tags=tags, role=keys.ROLE_CELL, trial_id="t3",
                           cfg=cfg, name="abc")
    assert third != first  # finished runs are never reopened


def test_tracking_uri_env_and_the_runs_table_url(tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI is honoured by atf-sweep and atf-report; the experiment opens on MLflow 3's
    training-runs view (not its GenAI pages) and the printed URL names that view."""
    from atf.cli.common import default_mlflow_uri  # what atf-sweep and atf-report use
    from orchestration.mlflow_log import runs_url, ui_command
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_mlflow_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert default_mlflow_uri(tmp_path) == uri
    store = TrackingStore(uri, "atf")
    exp = store.client.get_experiment(store.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = "runs?workflowType=machine_learning"
    assert runs_url(uri, store.experiment_id) == f"http://127.0.0.1:5000/#/experiments/{store.experiment_id}/{view}"
    assert runs_url("http://head:5000/", "7") == f"http://head:5000/#/experiments/7/{view}"
    assert ui_command(uri) == f"mlflow ui --backend-store-uri {uri} --port 5000"
    assert ui_command("http://head:5000") is None


def test_both_nme_protocols_reach_mlflow_but_never_from_a_search_sample():
    """OCN cells run `eval.protocol: both`: the OCN-code metrics (test_ocn/*) are logged beside test/*."""
    from orchestration.tune_logging import final_to_log
    bench, ocn = keys.test_metric("wflw", "full", keys.NME), keys.test_metric("wflw", "full", keys.NME,
                                                                             keys.PROTOCOL_OCN)
    final = {bench: 4.5, ocn: 4.1, "val/nme": 5.0, "train/loss": 0.3}
    assert final_to_log(final, keys.ROLE_CELL) == {bench: 4.5, ocn: 4.1, "val/nme": 5.0}
    assert final_to_log(final, keys.ROLE_SEARCH) == {"val/nme": 5.0}


def test_callback_writes_in_order_off_the_event_loop_and_drain_reports_failures(tmp_path):
    """The MLflow callback's writes run on its writer thread in the order they were queued; drain()
    waits for them and raises the first that failed (later writes still go out); a callback with
    queued work still pickles (Tune saves callbacks with the experiment)."""
    import pickle
    import threading

    import pytest

    from orchestration.tune_logging import MlflowCallback
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = TrackingStore(uri, "atf")
    parent = store.parent("s", "x.yaml")
    cb = MlflowCallback(uri, "atf", parent, "s", store=store)
    seen: list[tuple[int, str]] = []
    gate = threading.Event()
    cb._submit(lambda: gate.wait(10))            # the writer is busy: the next calls only queue
    for i in range(5):
        cb._submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert seen == []                            # nothing ran on the caller's thread
    assert pickle.loads(pickle.dumps(cb)).runs == {}
    gate.set()
    cb.drain()
    assert [i for i, _ in seen] == list(range(5)) and {n for _, n in seen} == {"atf-mlflow-writer"}

    def broken() -> None:
        raise RuntimeError("store went away")
    cb._submit(broken)
    cb._submit(lambda: seen.append((5, "after")))
    with pytest.raises(RuntimeError, match="store went away"):
        cb.drain()
    assert seen[-1] == (5, "after")
    cb.drain()                                   # the error was reported once
    sync = MlflowCallback(uri, "atf", parent, "s", store=store, background=False)
    sync._submit(lambda: seen.append((6, threading.current_thread().name)))
    assert seen[-1] == (6, threading.current_thread().name)


def test_epoch_metrics_go_out_in_batches_and_drain_flushes_them(tmp_path):
    """A run's first epoch is logged at once, later ones wait (flush_every) and go out together; the
    end of the run (or drain) sends what waits, each epoch under its own step, each step once."""
    from orchestration.trainable import STEP
    from orchestration.tune_logging import MlflowCallback
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = TrackingStore(uri, "atf")
    parent = store.parent("s", "x.yaml")
    run = store.open_run(parent_id=parent, sweep_name="s", tags={keys.TAG_CELL: "c1", keys.TAG_TABLES: "I"},
                         role=keys.ROLE_CELL, trial_id="t1", cfg=RunConfig(), name="c1")
    cb = MlflowCallback(uri, "atf", parent, "s", store=store, flush_every=3600)
    cb.runs["t1"] = run
    history = lambda: [m.step for m in store.client.get_metric_history(run, keys.TRAIN_LOSS)]  # noqa: E731
    for step in (1, 2, 3, 3):     # the repeated 3: a retried trial reporting an epoch again
        cb._submit(cb._result, "t1", {}, {keys.TRAIN_LOSS: 1.0 / step, STEP: float(step)})
    cb._queue.join()
    assert history() == [1]                       # the first epoch at once, the rest waiting
    cb.drain()
    assert history() == [1, 2, 3]
    assert [m.value for m in store.client.get_metric_history(run, keys.TRAIN_LOSS)] == [1.0, 0.5, 1 / 3]


def test_a_planted_link_in_a_result_bundle_is_not_uploaded(tmp_path, capsys):
    """The bundle sits on shared storage until the driver uploads it: Tune's copy follows links, so
    a link to a private file of the driver's user would become an artifact everyone can read."""
    from ray.tune import Checkpoint

    from orchestration.tune_logging import record_result
    store = TrackingStore(f"sqlite:///{tmp_path / 'm.db'}", "atf")
    parent = store.parent("s", "s.yaml")
    run = store.open_run(parent_id=parent, sweep_name="s", tags={keys.TAG_CELL: "abc"}, role=keys.ROLE_CELL,
                         trial_id="t1", cfg=RunConfig(), name="abc")
    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    bundle = tmp_path / "storage" / "checkpoint_000003"
    (bundle / "model").mkdir(parents=True)
    (bundle / "result.json").write_text('{"metrics": {}}')
    (bundle / "model" / "x.pt").symlink_to(secret)
    (bundle / "keys").symlink_to(secret.parent, target_is_directory=True)
    record_result(store, run, {"test/wflw/full/nme": 4.0}, Checkpoint.from_directory(str(bundle)), keys.ROLE_CELL)
    names = {a.path for a in store.client.list_artifacts(run)} | {
        a.path for a in store.client.list_artifacts(run, "model")}
    assert "result.json" in names and "model/x.pt" not in names and "keys" not in names, names
    assert store.status(run) == "finished"
    err = capsys.readouterr().err
    assert "left out 2 symbolic link(s)" in err and "model/x.pt" in err
