"""A small real MLflow store for the report tests, and tests of reading it (reports.collect).

Runs are logged with MLflow's own client under the keys.* names, exactly as the sweep does;
other report tests import `fill_store` from here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from atf import keys
from atf.datasets import csv_name
from atf.readers import AnnotationSet, write_csv
from reports.collect import RunFilter, StoreError, collect, parse_tag_filters

SYNTH = "synthetic(scale=0.02,seed=0)"
WFLW_SUBSETS = ("full", "largepose", "expression", "illumination", "makeup", "occlusion", "blur")
TEST_SUBSETS_300W = ("full", "common", "challenge", "test")
IMAGES = ("img_0.png", "img_1.png")


def _tags(backbone: str, target: str, aux: str, scenario: str, seed: int, sweep: str, tables: str,
          role: str = keys.ROLE_CELL, status: str = "finished") -> dict[str, str]:
    atf_run = scenario != keys.SCENARIO_BASELINE
    tags = {keys.TAG_KIND: "trial", keys.TAG_ROLE: role, keys.TAG_STATUS: status, keys.TAG_SWEEP: sweep,
            keys.TAG_TABLES: tables, keys.TAG_BACKBONE: backbone, keys.TAG_TARGET: target,
            keys.TAG_AUX: aux, keys.TAG_LOSS: keys.LOSS_MB if atf_run else "",
            keys.TAG_PROPORTIONS: keys.PROPORTIONS_WD if atf_run else "", keys.TAG_SCENARIO: scenario,
            keys.TAG_SEED: str(seed), keys.TAG_DATA: SYNTH, keys.TAG_SELECTION: "val"}
    tags[keys.TAG_CELL] = hashlib.sha256(repr(sorted(tags.items())).encode()).hexdigest()[:12]
    return tags


def _landmarks(shift: float) -> np.ndarray:
    """[2, 98, 2] points on a circle inside a 64x64 image; `shift` moves a prediction off it."""
    angle = np.linspace(0, 2 * np.pi, 98, endpoint=False)
    ring = np.stack([32 + 20 * np.cos(angle), 32 + 20 * np.sin(angle)], axis=1)
    return np.stack([ring + shift, ring - shift]).astype(np.float32)


def _aset(points: np.ndarray) -> AnnotationSet:
    n = len(points)
    return AnnotationSet("wflw", "wflw98", "test", IMAGES, points, np.full((n, 2), 32, np.float32),
                         np.full(n, 0.3, np.float32), np.full((n, 4), np.nan, np.float32),
                         np.full(n, np.nan, np.float32))


def make_data_root(root: Path) -> Path:
    """WFLW test annotations + two images in the layout atf.datasets reads."""
    folder = root / "wflw"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in IMAGES:
        cv2.imwrite(str(folder / "images" / name), np.full((64, 64, 3), 128, np.uint8))
    write_csv(_aset(_landmarks(0.0)), folder / csv_name("wflw", "test", "full"))
    return root


def _log(client: MlflowClient, exp: str, tags: dict[str, str], metrics: dict[str, float],
         start: int, tmp: Path, artifacts: dict[str, Path] | None = None,
         params: dict[str, str] | None = None) -> str:
    run = client.create_run(exp, start_time=start, tags=tags)
    rid = run.info.run_id
    client.log_batch(rid, metrics=[Metric(name, value, start, 0) for name, value in metrics.items()],
                     params=[Param(k, v) for k, v in (params or {}).items()])
    for artifact, local in (artifacts or {}).items():
        folder = str(Path(artifact).parent)
        client.log_artifact(rid, str(local), artifact_path=None if folder == "." else folder)
    client.set_terminated(rid, "FINISHED")
    return rid


def _ced_file(tmp: Path, name: str, skill: float) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    t = np.linspace(0, keys.FAIL_THRESHOLD, 11)
    frac = np.clip(t / keys.FAIL_THRESHOLD * skill * 1.5, 0, 1)
    path = tmp / name
    path.write_text("threshold,fraction\n" + "".join(f"{a:.3f},{b:.4f}\n" for a, b in zip(t, frac)))
    return path


def _wflw_metrics(nme: list[float], fr: list[float], auc: list[float]) -> dict[str, float]:
    out = {}
    for i, subset in enumerate(WFLW_SUBSETS):
        out[keys.test_metric("wflw", subset, keys.NME)] = nme[i]
        out[keys.test_metric("wflw", subset, keys.FR)] = fr[i]
        out[keys.test_metric("wflw", subset, keys.AUC)] = auc[i]
    return out


def fill_store(uri: str, tmp: Path) -> dict[str, object]:
    """Log the test runs to `uri`; returns what the tests check against."""
    client = MlflowClient(tracking_uri=uri)
    # a server keeps its own (proxied) artifact store; a local store keeps them in tmp, not in cwd
    local = None if uri.startswith("http") else (tmp / "artifacts").as_uri()
    exp = client.create_experiment("atf-report-test", artifact_location=local)
    t0, ids = 1_700_000_000_000, {}

    def m300(values: list[float]) -> dict[str, float]:
        return {keys.test_metric("300w", s, keys.NME): v for s, v in zip(TEST_SUBSETS_300W, values)}

    iv = "IV"
    # an older attempt of the same cell and seed: the later run replaces it
    _log(client, exp, _tags("ocn", "300w", "", "baseline", 0, "table_iv", iv), m300([9.99] * 4), t0, tmp)
    ids["ocn_base"] = [
        _log(client, exp, _tags("ocn", "300w", "", "baseline", 0, "table_iv", iv),
             m300([3.90, 3.40, 5.90, 4.50]), t0 + 1, tmp),
        _log(client, exp, _tags("ocn", "300w", "", "baseline", 1, "table_iv", iv),
             m300([3.84, 3.38, 5.80, 4.54]), t0 + 2, tmp)]
    ids["ocn_3w"] = [
        _log(client, exp, _tags("ocn", "300w", "wflw", "atf", 0, "table_iv", "II,IV"),
             m300([3.56, 3.13, 5.33, 4.16]), t0 + 3, tmp),
        _log(client, exp, _tags("ocn", "300w", "wflw", "atf", 1, "table_iv", "II,IV"),
             m300([3.54, 3.11, 5.31, 4.14]), t0 + 4, tmp)]
    # lacks the private-test metric
    partial = m300([3.70, 3.25, 5.55, 0.0])
    partial.pop(keys.test_metric("300w", "test", keys.NME))
    ids["ocn_3c"] = [_log(client, exp, _tags("ocn", "300w", "cofw", "atf", 0, "table_iv", iv), partial,
                          t0 + 5, tmp)]
    ids["hrnet_base"] = [_log(client, exp, _tags("hrnet_w18", "300w", "", "baseline", 0, "table_iv", iv),
                              m300([3.30, 2.86, 5.14, 3.84]), t0 + 6, tmp)]
    # never reported: an Optuna sample and an unfinished run, with tempting values
    _log(client, exp, _tags("ocn", "300w", "aflw", "atf", 0, "table_iv", iv, role=keys.ROLE_SEARCH),
         m300([1.0] * 4), t0 + 7, tmp)
    _log(client, exp, _tags("ocn", "300w", "aflw", "atf", 0, "table_iv", iv, status="running"),
         m300([1.0] * 4), t0 + 8, tmp)

    data_root = make_data_root(tmp / "data")
    for key, aux, scenario, shift, skill, nme in (
            ("wflw_base", "", "baseline", 3.0, 0.5, 4.62), ("wflw_wa", "aflw", "atf", 1.0, 0.6, 4.51)):
        folder = tmp / key
        folder.mkdir(parents=True, exist_ok=True)
        artifacts = {keys.ced_artifact("wflw", s): _ced_file(folder / "ced", Path(keys.ced_artifact("wflw", s)).name,
                                                              skill) for s in WFLW_SUBSETS}
        pred = folder / "pred" / Path(keys.pred_artifact("wflw", "full")).name
        pred.parent.mkdir(parents=True, exist_ok=True)
        write_csv(_aset(_landmarks(shift)), pred)
        artifacts[keys.pred_artifact("wflw", "full")] = pred
        cfg = folder / keys.ARTIFACT_CONFIG
        cfg.write_text(yaml.safe_dump({"data": {"root": str(data_root)}}))
        artifacts[keys.ARTIFACT_CONFIG] = cfg
        metrics = _wflw_metrics([nme + 0.1 * i for i in range(7)], [3.0 - 0.2 * i for i in range(7)],
                                [0.55 + 0.01 * i for i in range(7)])
        ids[key] = [_log(client, exp, _tags("hrnet_w18", "wflw", aux, scenario, 0, "table_i", "I,III"),
                         metrics, t0 + 10 + len(ids), tmp, artifacts, {"data.root": str(data_root)})]
    return {"ids": ids, "data_root": data_root, "experiment": exp}


_SHARED: dict[str, tuple[str, dict]] = {}


def shared_store(tmp_path_factory) -> tuple[str, dict]:
    """One sqlite store per test session (filling it costs seconds); tests only read it."""
    if "store" not in _SHARED:
        tmp = tmp_path_factory.mktemp("store")
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        _SHARED["store"] = (uri, fill_store(uri, tmp))
    return _SHARED["store"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, dict]:
    return shared_store(tmp_path_factory)


def test_collect_reads_only_finished_cell_runs(store):
    uri, info = store
    got = collect(uri)
    reported = {r for ids in info["ids"].values() for r in ids}
    # search samples, running runs are excluded server-side; the stale attempt is still read
    assert reported <= set(got.runs["run_id"])
    assert len(got.runs) == len(reported) + 1
    assert not (got.metrics["value"] == 1.0).any()
    row = got.metrics[(got.metrics["run_id"] == info["ids"]["ocn_base"][1])
                      & (got.metrics["subset"] == "challenge")]
    assert row["value"].tolist() == [5.80]
    assert (got.runs[keys.TAG_DATA] == SYNTH).all()


def test_collect_filters_by_sweep_and_tag(store):
    uri, info = store
    by_sweep = collect(uri, RunFilter(sweep="table_i"))
    assert set(by_sweep.runs["run_id"]) == set(info["ids"]["wflw_base"] + info["ids"]["wflw_wa"])
    by_tag = collect(uri, RunFilter(tags=parse_tag_filters(["backbone=hrnet_w18", "target=300w"])))
    assert set(by_tag.runs["run_id"]) == set(info["ids"]["hrnet_base"])
    assert collect(uri, RunFilter(tags=parse_tag_filters(["atf.data=real"]))).empty


def test_bad_tag_filter_and_missing_store(tmp_path):
    with pytest.raises(ValueError, match="--tag 'colour=red'"):
        parse_tag_filters(["colour=red"])
    missing = tmp_path / "nope.db"
    with pytest.raises(StoreError, match="does not exist"):
        collect(f"sqlite:///{missing}")
    assert not missing.exists()  # reading must not create an empty store
    with pytest.raises(StoreError, match="unreachable"):
        collect("http://127.0.0.1:9")  # discard port: nothing listens
