"""Sweep files: the public entry. `load_sweep` = read (sweepread) -> expand (expand) -> Sweep.

A sweep file is a base RunConfig plus experiments; each experiment crosses a
grid (and optional variants) with the seeds, and may carry an Optuna search.
Everything is checked before anything runs, and every error is one line naming
the file and the key path. This module is pure (no Ray, MLflow or Optuna), so
the report can import it to list which sweep file and cell fill a table cell.

    name: demo                       # default: the file stem
    include: base.yaml               # optional RunConfig YAML(s), relative to this file
    base: {model: {width_mult: 0.25}}  # RunConfig keys (nested or dotted)
    tables: [III]                    # default tables for every experiment
    seeds: [0]                       # or `repeats: 3` (seeds base.seed .. base.seed+2)
    resources: {cpu: 1, gpu: 0.25}   # per trial; fractional GPUs share one card
    max_failures: 2                  # retries of a crashed trial (from its checkpoint)
    max_concurrent: 0                # 0 = as many as resources allow
    experiments:
      - name: atf
        tables: [III, VII]
        set: {scenario: atf}         # overrides for every cell of this experiment
        grid: {aux: [[300w], [cofw]]}  # cartesian product over config keys
        variants: [{model.backbone: ocn}, {model.backbone: hrnet_w18, optim.lr: 1.0e-4}]
        # a variant may `include` RunConfig YAML(s) (a backbone's protocol block, sweeps/base/):
        # merged after `base` and BEFORE `set`, so an experiment's own keys win over the block
        # variants: [{include: base/protocol_ocn.yaml}, {include: base/protocol_hrnet_atf.yaml}]
        search:                      # optional: each cell becomes one tuned cell
          num_samples: 8
          sampler: tpe               # tpe | random
          metric: val/nme            # only keys.VAL_NME: tuning never sees a test metric
          seed: 0
          space: {optim.lr: {loguniform: [1.0e-4, 1.0e-2]}, atdp.ratios[0]: {choice: [2, 3]}}

Without `experiments`, top-level `set`/`grid`/`variants`/`search` form one.
String values may use `${VAR}` or `${VAR:-default}` (environment).

    synth: {scale: 0.02, seed: 0}    # optional: data.root is SynthFace, generated when absent
                                     # (implied for the default root data/synth)

Profiles (`load_sweep(..., profile="smoke")`, `atf-sweep FILE --profile smoke`) are data too:
`sweeps/profiles/<name>.yaml` holds `set` (config keys applied to every cell after the sweep
file and before --set), and optionally `resources`, `max_failures`, `max_concurrent`, `synth`
and `search: {num_samples: N}` (a cap). A profile changes the resolved configs, so its cells
hash apart from the real ones and are never reused as them; the sweep is named `<name>-<profile>`.
"""


from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestration.cells import cell_tags
from orchestration.expand import expand, synth_for, synth_provenance
from orchestration.sweepread import PROFILE_DIR, load_profile, read_sweep, resolve_paths
from orchestration.sweepspec import (
    DEFAULT_SYNTH,
    Cell,
    Param,
    Profile,
    Resources,
    Search,
    Sweep,
    SweepError,
    SynthSpec,
)

__all__ = [
    "SweepError", "Param", "Search", "Resources", "Cell", "Sweep", "load_sweep", "cell_tags",
    "resolve_paths",
    "Profile", "SynthSpec", "load_profile", "PROFILE_DIR", "DEFAULT_SYNTH", "synth_for", "synth_provenance",
]


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None,
               profile: str | Path | Profile | None = None) -> Sweep:
    """Parse, validate and expand a sweep file; `profile` (see the module docstring) applies to
    every cell after the file, `overrides` (dotted keys) last."""
    path = Path(path)
    if profile is not None and not isinstance(profile, Profile):
        profile = load_profile(profile, path.parent)
    doc = read_sweep(path)
    cells = expand(doc, profile, overrides)
    if profile is None:
        return Sweep(name=doc.name, path=path, description=doc.description, resources=doc.resources,
                     max_failures=doc.max_failures, max_concurrent=doc.max_concurrent, cells_=tuple(cells),
                     synth=doc.synth)
    return Sweep(name=f"{doc.name}-{profile.name}", path=path, description=doc.description,
                 resources=profile.resources or doc.resources,
                 max_failures=doc.max_failures if profile.max_failures is None else profile.max_failures,
                 max_concurrent=doc.max_concurrent if profile.max_concurrent is None else profile.max_concurrent,
                 cells_=tuple(cells), synth=profile.synth or doc.synth, profile=profile)
