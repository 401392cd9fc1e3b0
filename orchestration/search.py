"""Optuna search for a tuned cell, through Ray Tune's OptunaSearch.

Honest tuning: the search minimises keys.VAL_NME (the trainer's validation
split, carved from the target's training data; the final report of a trial
carries the best epoch's value). Test metrics never reach the searcher. The
chosen sample is the one with the lowest validation NME; its test metrics are
what the tables report (`choose`).

A search whose first samples all fail the same deterministic way (a data or config error, see
orchestration.trainable) stops there (`SameFailureStop`) instead of burning the other samples.

`CellSearch` puts every cell of a launch into one Tuner: the plain cells (one trial each) and every
tuned cell's Optuna samples. One Tuner means one set of workers for the whole launch, reused from
trial to trial (Ray start, the worker processes and their imports are paid once, not once per
search), and samples of several searches (and the plain cells' tail) run side by side instead of
one search after another leaving CPUs or GPUs idle.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from atf import keys
from orchestration.sweepfile import Param, Search
from orchestration.trainable import ERROR, ERROR_KIND, FAILED, FINAL

__all__ = ["domain", "search_space", "searcher", "choose", "SameFailureStop", "CellSearch", "CellStopper",
           "outcomes"]


def domain(p: Param) -> Any:
    if p.dist == "uniform":
        return tune.uniform(float(p.args[0]), float(p.args[1]))
    if p.dist == "loguniform":
        return tune.loguniform(float(p.args[0]), float(p.args[1]))
    if p.dist == "randint":
        return tune.randint(int(p.args[0]), int(p.args[1]) + 1)  # sweep files give inclusive bounds
    return tune.choice(list(p.args))


def search_space(search: Search) -> dict[str, Any]:
    return {p.path: domain(p) for p in search.space}


def searcher(search: Search) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch
    # the sweep prints its own progress; Optuna's "A new study created in memory" per search is noise
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=search.seed) if search.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=search.seed))
    return OptunaSearch(metric=keys.VAL_NME, mode="min", sampler=sampler)


def choose(results: list[Any]) -> Any | None:
    """The finished sample with the lowest final validation NME (ties: first)."""
    best, best_v = None, math.inf
    for r in results:
        m = r.metrics or {}
        if r.error is None and m.get(FINAL) == 1.0 and keys.VAL_NME in m:
            v = float(m[keys.VAL_NME])
            if v < best_v:
                best, best_v = r, v
    return best


class SameFailureStop:
    """A search's outcomes, sample by sample: `stop_all()` once its first `first` finished samples
    all failed deterministically with the same kind of error (the next would fail alike). Fed by
    `CellSearch` while the search runs, and replayed from the results afterwards (`outcomes`)."""

    def __init__(self, num_samples: int, first: int = 2) -> None:
        self.first = max(1, min(first, num_samples))
        self.outcomes: dict[str, str | None] = {}   # trial id -> error kind, None when it finished
        self.errors: dict[str, str] = {}            # trial id -> its one-line error

    def __call__(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self.outcomes:
            if result.get(FAILED) == 1.0:
                self.outcomes[trial_id] = str(result.get(ERROR_KIND, "error"))
                self.errors[trial_id] = str(result.get(ERROR, "failed"))
            elif result.get(FINAL) == 1.0:
                self.outcomes[trial_id] = None

    def stop_all(self) -> bool:
        head = list(self.outcomes.values())[:self.first]
        return len(head) == self.first and None not in head and len(set(head)) == 1

    def reason(self, results: list[Any]) -> str:
        """One line for the tuned cell's run when no sample finished."""
        errors = [str((r.metrics or {}).get(ERROR) or (r.error and str(r.error).strip().splitlines()[-1]) or "")
                  for r in results]
        errors = [e for e in errors if e]
        first = errors[0] if errors else "no sample reported"
        if self.stop_all():
            return f"search stopped: its first {self.first} samples failed alike ({first})"
        return f"no search sample finished ({len(errors)} failed): {first}"

    def kind(self, results: list[Any]) -> str:
        det = any((r.metrics or {}).get(FAILED) == 1.0 for r in results)
        return keys.FAILURE_DETERMINISTIC if det else keys.FAILURE_CRASH


def outcomes(results: list[Any], num_samples: int) -> SameFailureStop:
    """A search's SameFailureStop replayed from its samples' results, in the order they ended
    (after a fit, to say why a tuned cell has no chosen sample)."""
    stop = SameFailureStop(num_samples)
    for r in sorted(results, key=lambda r: float((r.metrics or {}).get("timestamp", 0.0))):
        m = r.metrics or {}
        stop(str(m.get("trial_id", id(r))), m)
    return stop


@dataclass
class _Tuned:
    payload: dict[str, Any]      # the tuned cell's trial payload (orchestration.trainable.payload)
    optuna: Any                  # its own OptunaSearch
    num_samples: int
    stop: SameFailureStop
    issued: int = 0


class CellSearch(Searcher):
    """The trials of one launch for one Tuner: each plain cell once, in order, then the tuned
    cells' samples, the searches taking turns. Each tuned cell keeps its own OptunaSearch (its own
    sampler and seed, so a cell's samples do not depend on what else the launch holds) and its own
    SameFailureStop; a stopped search gets no more samples and its running ones are stopped
    (`CellStopper`). Suggestions are {"cell": payload} or {"cell": payload, "search": sample}."""

    def __init__(self, plain: list[dict[str, Any]], tuned: list[tuple[dict[str, Any], Search]]) -> None:
        super().__init__(metric=None, mode=None)
        self.plain = list(plain)
        self.tuned: dict[str, _Tuned] = {}
        for payload, search in tuned:
            opt = searcher(search)
            opt.set_search_properties(keys.VAL_NME, "min", {"search": search_space(search)})
            self.tuned[payload["cell_id"]] = _Tuned(payload, opt, search.num_samples,
                                                    SameFailureStop(search.num_samples))
        self.owner: dict[str, str] = {}   # trial id -> its tuned cell
        self.turn = 0

    @property
    def total(self) -> int:
        """Trials this launch asks for at most (a stopped search asks for fewer)."""
        return len(self.plain) + sum(t.num_samples for t in self.tuned.values())

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # each search's metric, mode and space are set at construction

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.plain:
            return {"cell": self.plain.pop(0)}
        open_ = [t for t in self.tuned.values() if t.issued < t.num_samples and not t.stop.stop_all()]
        if not open_:
            return Searcher.FINISHED
        for k in range(len(open_)):
            t = open_[(self.turn + k) % len(open_)]
            sample = t.optuna.suggest(trial_id)
            if sample in (None, Searcher.FINISHED):
                continue
            self.turn = (self.turn + k + 1) % max(1, len(open_))
            t.issued += 1
            self.owner[trial_id] = t.payload["cell_id"]
            return {"cell": t.payload, "search": sample["search"]}
        return None

    def stopped(self, trial_id: str) -> bool:
        """The trial is a sample of a search that stopped (its first samples failed alike)."""
        t = self.tuned.get(self.owner.get(trial_id, ""))
        return t is not None and t.stop.stop_all()

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        t = self.tuned.get(self.owner.get(trial_id, ""))
        if t is not None:
            t.stop(trial_id, result)
            t.optuna.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        t = self.tuned.get(self.owner.get(trial_id, ""))
        if t is not None:
            if result:
                t.stop(trial_id, result)
            t.optuna.on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        """In place: `CellStopper` holds this very object (Tune restores both from one pickle)."""
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))  # noqa: S301 - Tune's own experiment state, as OptunaSearch


class CellStopper(Stopper):
    """Stops the running samples of a search `CellSearch` stopped; everything else runs on."""

    def __init__(self, plan: CellSearch) -> None:
        self.plan = plan

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.plan.stopped(trial_id)

    def stop_all(self) -> bool:
        return False
