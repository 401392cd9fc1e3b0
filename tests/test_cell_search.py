"""One Tune experiment per launch (orchestration.search.CellSearch), with real OptunaSearch: what it
suggests, in which order, when a search stops, and that its state survives Tune's save/restore."""

from __future__ import annotations

from atf import keys
from orchestration.search import CellSearch, CellStopper
from orchestration.sweepspec import Param, Search
from orchestration.trainable import ERROR, ERROR_KIND, FAILED, FINAL

SPACE = (Param("optim.lr", "loguniform", (1e-4, 1e-2)), Param("atdp.ratios[0]", "choice", (2, 3)))


def plan(n_a: int = 3, n_b: int = 2) -> CellSearch:
    return CellSearch([{"cell_id": "p1"}, {"cell_id": "p2"}],
                      [({"cell_id": "a"}, Search(SPACE, num_samples=n_a, seed=0)),
                       ({"cell_id": "b"}, Search(SPACE, num_samples=n_b, seed=1))])


def drain(p: CellSearch, start: int = 0) -> list[tuple[str, dict]]:
    out, i = [], start
    while (s := p.suggest(f"t{i}")) not in (None, CellSearch.FINISHED):
        out.append((f"t{i}", s))
        i += 1
    return out


def test_plain_cells_first_then_searches_take_turns_each_with_its_own_sampler():
    p = plan()
    assert p.total == 2 + 3 + 2
    got = drain(p)
    assert [s["cell"]["cell_id"] for _, s in got] == ["p1", "p2", "a", "b", "a", "b", "a"]
    assert all("search" not in s for _, s in got[:2])
    samples = [s["search"] for _, s in got[2:]]
    assert all(set(x) == {"optim.lr", "atdp.ratios[0]"} and 1e-4 <= x["optim.lr"] <= 1e-2 for x in samples)
    # a cell's samples depend on its own seed only, not on what else the launch holds
    alone = CellSearch([], [({"cell_id": "a"}, Search(SPACE, num_samples=3, seed=0))])
    assert [s["search"] for _, s in drain(alone)] == [samples[0], samples[2], samples[4]]
    assert p.suggest("t99") == CellSearch.FINISHED


def test_a_search_whose_first_samples_fail_alike_stops_and_the_rest_runs_on():
    p = plan(n_a=5, n_b=2)
    got = dict(drain(p))
    a_trials = [t for t, s in got.items() if s["cell"]["cell_id"] == "a"]
    assert len(a_trials) == 5 and not p.stopped(a_trials[0])
    fail = {FAILED: 1.0, ERROR: "dataset cofw train/full: no rows", ERROR_KIND: "DataError", FINAL: 0.0,
            keys.VAL_NME: float("inf"), "training_iteration": 1}
    for t in a_trials[:2]:
        p.on_trial_result(t, fail)
        p.on_trial_complete(t, fail)
    stopper = CellStopper(p)
    assert stopper(a_trials[2], {keys.EPOCH: 1.0}) and not stopper.stop_all()
    b_trial = next(t for t, s in got.items() if s["cell"]["cell_id"] == "b")
    assert not stopper(b_trial, {keys.EPOCH: 1.0}) and not stopper("t0", {keys.EPOCH: 1.0})


def test_state_survives_save_and_restore_in_place(tmp_path):
    p = plan()
    first = [(f"t{i}", p.suggest(f"t{i}")) for i in range(3)]
    assert [s["cell"]["cell_id"] for _, s in first] == ["p1", "p2", "a"]
    p.on_trial_complete(first[2][0], {keys.VAL_NME: 20.0, FINAL: 1.0, "training_iteration": 3})
    p.save(str(tmp_path / "s.pkl"))
    q = plan()
    stopper = CellStopper(q)
    q.restore(str(tmp_path / "s.pkl"))
    assert stopper.plan is q and q.plain == [] and q.tuned["a"].issued == 1
    assert [s["cell"]["cell_id"] for _, s in drain(q, start=10)] == ["b", "a", "b", "a"]
    assert q.tuned["a"].optuna._completed_trials == {"t2"}   # Optuna's study came back too



def test_searches_start_without_optunas_info_line():
    """The sweep prints its own progress: one 'A new study created in memory' per tuned cell is noise."""
    import logging

    import optuna
    optuna.logging.set_verbosity(optuna.logging.INFO)  # as a fresh process has it
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("optuna").addHandler(handler)
    try:
        drain(plan())
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert not [m for m in seen if "new study created" in m]
