"""What a sweep file becomes: the frozen records `load_sweep` returns (no parsing, no I/O here).

A `Sweep` holds its `Cell`s; each cell is one run a table reports (or, with a `Search`, the run an
Optuna search picks). `orchestration.sweepread` builds the records from YAML and
`orchestration.expand` makes the cells; the runner, preflight and report only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atf import keys
from atf.config import ConfigError, RunConfig

__all__ = ["SweepError", "Param", "Search", "Resources", "SynthSpec", "DEFAULT_SYNTH", "Profile", "Cell",
           "Sweep", "SAMPLERS", "DISTRIBUTIONS"]

SAMPLERS = ("tpe", "random")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


class SweepError(ConfigError):
    """A bad sweep file; the message names the file and the key path."""


@dataclass(frozen=True)
class Param:
    """One searched value: `path` may index a tuple field ("atdp.ratios[0]")."""
    path: str
    dist: str                       # one of DISTRIBUTIONS
    args: tuple[Any, ...]           # (low, high) or the choices

    def bounds(self) -> tuple[Any, ...]:
        """Values that span the range, for validating a config at its edges."""
        return self.args if self.dist == "choice" else (self.args[0], self.args[1])


@dataclass(frozen=True)
class Search:
    space: tuple[Param, ...]
    num_samples: int = 8
    sampler: str = "tpe"
    metric: str = keys.VAL_NME      # minimised; the only metric tuning may see
    mode: str = "min"
    seed: int = 0

    def spec(self) -> dict[str, Any]:
        """Canonical mapping (part of a tuned cell's id)."""
        return {"space": {p.path: [p.dist, list(p.args)] for p in self.space},
                "num_samples": self.num_samples, "sampler": self.sampler, "metric": self.metric,
                "mode": self.mode, "seed": self.seed}


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0                # CPUs per trial (also the trial's torch threads)
    gpu: float = 0.0                # GPUs per trial; < 1 lets trials share one card

    def as_tune(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class SynthSpec:
    """How the SynthFace data at a sweep's data root is made (`atf-data synth` arguments)."""
    scale: float = 0.02
    seed: int = 0


DEFAULT_SYNTH = SynthSpec()         # the embedded default: data/synth at scale 0.02, seed 0 (demo.yaml)


@dataclass(frozen=True)
class Profile:
    """Overrides applied after a sweep file (e.g. `smoke`: every cell, shrunk)."""
    name: str
    path: Path
    set: dict[str, Any]
    resources: Resources | None = None
    max_failures: int | None = None
    max_concurrent: int | None = None
    max_samples: int | None = None  # cap on every search's num_samples
    synth: SynthSpec | None = None
    max_seeds: int | None = None    # cap: each experiment runs its first max_seeds seeds


@dataclass(frozen=True)
class Cell:
    """One run a table reports (or, with `search`, the run chosen by a search)."""
    cell_id: str
    config: RunConfig               # resolved config (the search's starting point when tuned)
    seed: int
    tables: tuple[str, ...]
    tags: dict[str, str]            # keys.CELL_TAGS -> value (plus keys.TAG_PROFILE under a profile)
    experiment: str                 # experiment name in the sweep file
    search: Search | None = None
    label: str = ""                 # readable run name: experiment, grid point, variant, seed ("atf-3W hrnet_w18 s0")

    def summary(self) -> dict[str, str]:
        """Key config values for a one-line listing."""
        t = self.tags
        return {"cell": self.cell_id, "tables": t[keys.TAG_TABLES], "experiment": self.experiment,
                "scenario": t[keys.TAG_SCENARIO], "backbone": t[keys.TAG_BACKBONE],
                "target": t[keys.TAG_TARGET], "aux": t[keys.TAG_AUX] or "-",
                "loss": t[keys.TAG_LOSS] or "-", "prop": t[keys.TAG_PROPORTIONS] or "-",
                "seed": t[keys.TAG_SEED],
                "search": f"{self.search.sampler}x{self.search.num_samples}" if self.search else "-"}


@dataclass(frozen=True)
class Sweep:
    name: str
    path: Path
    description: str
    resources: Resources
    max_failures: int
    max_concurrent: int
    cells_: tuple[Cell, ...] = field(repr=False)
    synth: SynthSpec | None = None  # data.root is SynthFace made this way (generated when absent)
    profile: Profile | None = None

    def cells(self) -> list[Cell]:
        return list(self.cells_)

    def cell(self, cid: str) -> Cell:
        for c in self.cells_:
            if c.cell_id == cid:
                return c
        raise KeyError(f"{self.path}: no cell {cid!r}")
