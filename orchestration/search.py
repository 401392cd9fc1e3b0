"""Optuna search for a tuned cell, through Ray Tune's OptunaSearch.

Honest tuning: the search minimises keys.VAL_NME (the trainer's validation
split, carved from the target's training data; the final report of a trial
carries the best epoch's value). Test metrics never reach the searcher. The
chosen sample is the one with the lowest validation NME; its test metrics are
what the tables report (`choose`).

A search whose first samples all fail the same deterministic way (a data or config error, see
orchestration.trainable) stops there (`SameFailureStop`) instead of burning the other samples.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune
from ray.tune.stopper import Stopper

from atf import keys
from orchestration.sweepfile import Param, Search
from orchestration.trainable import ERROR, ERROR_KIND, FAILED, FINAL

__all__ = ["domain", "search_space", "searcher", "choose", "SameFailureStop"]


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


class SameFailureStop(Stopper):
    """Stops the whole search once its first `first` finished samples all failed deterministically
    with the same kind of error: the next samples would fail alike."""

    def __init__(self, num_samples: int, first: int = 2) -> None:
        self.first = max(1, min(first, num_samples))
        self.outcomes: dict[str, str | None] = {}   # trial id -> error kind, None when it finished
        self.errors: dict[str, str] = {}            # trial id -> its one-line error

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if trial_id not in self.outcomes:
            if result.get(FAILED) == 1.0:
                self.outcomes[trial_id] = str(result.get(ERROR_KIND, "error"))
                self.errors[trial_id] = str(result.get(ERROR, "failed"))
            elif result.get(FINAL) == 1.0:
                self.outcomes[trial_id] = None
        return False

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
