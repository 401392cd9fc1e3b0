"""Optuna search for a tuned cell, through Ray Tune's OptunaSearch.

Honest tuning: the search minimises keys.VAL_NME (the trainer's validation
split, carved from the target's training data; the final report of a trial
carries the best epoch's value). Test metrics never reach the searcher. The
chosen sample is the one with the lowest validation NME; its test metrics are
what the tables report (`choose`).
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from atf import keys
from orchestration.sweepfile import Param, Search
from orchestration.trainable import FINAL

__all__ = ["domain", "search_space", "searcher", "choose"]


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
