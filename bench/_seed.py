"""Seed an MLflow SQLite store with many finished runs, fast (for bench_store and bench_report).

Runs are written through MLflow's own SQLAlchemy models in one transaction per few thousand
runs (the client's create_run + log_batch costs ~50 ms a run on SQLite: 10,000 runs would take
minutes). Each run looks like a finished table cell of a sweep: the keys.CELL_TAGS tags, ~100
flattened config params, the test metrics, and optionally its CED CSVs and predictions as
artifacts under the experiment's artifact root, where MLflow's file artifact store keeps them.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import numpy as np

from atf import keys

WFLW_SUBSETS = ("full", "largepose", "expression", "illumination", "makeup", "occlusion", "blur")
# Table I's four reported rows: (backbone, scenario, aux)
ROWS = (("ocn", keys.SCENARIO_BASELINE, ""), ("ocn", keys.SCENARIO_ATF, "aflw"),
        ("hrnet_w18", keys.SCENARIO_BASELINE, ""), ("hrnet_w18", keys.SCENARIO_ATF, "aflw"))
N_PARAMS = 100


def run_tags(i: int, sweep: str = "seeded") -> dict[str, str]:
    backbone, scenario, aux = ROWS[i % len(ROWS)]
    atf_run = scenario != keys.SCENARIO_BASELINE
    tags = {keys.TAG_KIND: "trial", keys.TAG_ROLE: keys.ROLE_CELL, keys.TAG_STATUS: "finished",
            keys.TAG_SWEEP: sweep, keys.TAG_TABLES: "I", keys.TAG_BACKBONE: backbone, keys.TAG_TARGET: "wflw",
            keys.TAG_AUX: aux, keys.TAG_LOSS: keys.LOSS_MB if atf_run else "",
            keys.TAG_PROPORTIONS: keys.PROPORTIONS_WD if atf_run else "", keys.TAG_SCENARIO: scenario,
            keys.TAG_SEED: str(i // len(ROWS)), keys.TAG_DATA: "synthetic(seeded)", keys.TAG_SELECTION: "val",
            keys.TAG_TRIAL: f"seed_{i:05d}"}
    tags[keys.TAG_CELL] = hashlib.sha256(f"seeded-{i}".encode()).hexdigest()[:12]
    return tags


def _metrics(i: int) -> dict[str, float]:
    rng = np.random.default_rng(i)
    out = {}
    for s in WFLW_SUBSETS:
        nme = float(4.5 + rng.random())
        out[keys.test_metric("wflw", s, keys.NME)] = nme
        out[keys.test_metric("wflw", s, keys.FR)] = nme
        out[keys.test_metric("wflw", s, keys.AUC)] = 0.5
    out[keys.VAL_NME] = float(rng.random())
    return out


def _ced_text(i: int) -> str:
    t = np.linspace(0, 0.5, 26)
    frac = np.clip(t * (8 + i % 5), 0, 1)
    return "threshold,fraction\n" + "".join(f"{a:.3f},{b:.4f}\n" for a, b in zip(t, frac))


def seed_store(db: Path, n: int, artifacts: bool = False, experiment: str = "atf", chunk: int = 2000) -> str:
    """Create `db` (a fresh SQLite store) holding `n` finished cell runs; returns its URI."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    from orchestration.mlflow_log import TrackingStore
    uri = f"sqlite:///{db.resolve()}"
    store = TrackingStore(uri, experiment)
    sql = store.client._tracking_client.store
    exp = store.client.get_experiment(store.experiment_id)
    root = Path(exp.artifact_location.removeprefix("file://"))
    t0 = 1_700_000_000_000
    ced_names = [keys.ced_artifact("wflw", s) for s in WFLW_SUBSETS]
    for start in range(0, n, chunk):
        rows: dict[object, list[dict[str, object]]] = {m: [] for m in (SqlRun, SqlTag, SqlParam, SqlMetric,
                                                                      SqlLatestMetric)}
        for i in range(start, min(n, start + chunk)):
            rid = uuid.UUID(int=i + 1).hex
            rows[SqlRun].append(dict(
                run_uuid=rid, name=f"seeded-{i}", source_type="LOCAL", source_name="", entry_point_name="",
                user_id="bench", status="FINISHED", start_time=t0 + i, end_time=t0 + i + 1, source_version="",
                lifecycle_stage="active", artifact_uri=f"{exp.artifact_location}/{rid}/artifacts",
                experiment_id=int(store.experiment_id)))
            rows[SqlTag] += [dict(key=k, value=v, run_uuid=rid) for k, v in run_tags(i).items()]
            rows[SqlParam] += [dict(key=f"cfg.p{j:03d}", value=str(j), run_uuid=rid) for j in range(N_PARAMS)]
            for k, v in _metrics(i).items():
                m = dict(key=k, value=v, timestamp=t0 + i, step=0, is_nan=False, run_uuid=rid)
                rows[SqlMetric].append(m)
                rows[SqlLatestMetric].append(m)
            if artifacts:
                folder = root / rid / "artifacts"
                for name in ced_names:
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_text(_ced_text(i))
                pred = folder / keys.pred_artifact("wflw", "full")
                pred.parent.mkdir(parents=True, exist_ok=True)
                pred.write_text("image,x0,y0\nimg_0.png,1,1\n")
        with sql.ManagedSessionMaker() as session:
            for model, values in rows.items():  # SQLAlchemy core inserts: no ORM objects per row
                session.execute(model.__table__.insert(), values)
    return uri


def cached_store(cache: Path, n: int, artifacts: bool = False) -> Path:
    """A seeded store of `n` runs under `cache` (built once, reused by later runs of the bench)."""
    name = f"store-{n}{'-art' if artifacts else ''}"
    db = cache / name / "mlflow.db"
    if not (cache / name / "done").is_file():
        shutil.rmtree(cache / name, ignore_errors=True)
        db.parent.mkdir(parents=True)
        seed_store(db, n, artifacts)
        (cache / name / "done").write_text(str(n))
    return db


def copy_store(db: Path, dest: Path) -> Path:
    """A private copy of a seeded store (its database and artifacts), so a bench run never alters the cache."""
    import sqlite3
    shutil.copytree(db.parent, dest, dirs_exist_ok=True)
    with sqlite3.connect(dest / db.name) as con:  # new artifacts go to the copy, not the cache
        con.execute("UPDATE experiments SET artifact_location = ?", ((dest / "mlruns").resolve().as_uri(),))
    return dest / db.name


def synth_root(data: str | None, cache: Path, scale: float = 0.01) -> Path:
    """SynthFace data for a bench: `data` when it holds it, else generated once under `cache`."""
    if data and (Path(data) / "synthface.json").is_file():
        return Path(data).resolve()
    from atf.synth import generate
    root = cache / f"synth-{scale}"
    generate(root, scale=scale, seed=0, workers=1, skip_existing=True)
    return root.resolve()


TINY_SWEEP = """
name: {name}
base:
  data: {{root: {root}, max_train: {max_train}, max_test: 16}}
  model: {{width_mult: 0.25, input_size: 48}}
  optim: {{epochs: {epochs}, batch_size: 16}}
  seed: {seed0}
resources: {{cpu: 1}}
max_concurrent: {concurrent}
max_failures: 1
tables: [I]
set: {{scenario: baseline}}
repeats: {trials}
"""


def tiny_sweep(path: Path, root: Path, trials: int, epochs: int, max_train: int, concurrent: int,
               seed0: int = 0, name: str = "bench") -> Path:
    """A sweep file of `trials` tiny OCN baselines (seeds seed0..), as the issue's figures used."""
    path.write_text(TINY_SWEEP.format(name=name, root=root, max_train=max_train, epochs=epochs,
                                      concurrent=concurrent, trials=trials, seed0=seed0))
    return path
