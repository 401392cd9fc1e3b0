"""Fit SynthFace's per-scheme annotation conventions to the real mean shapes.

Why a module of its own: the fit samples faces through the presets (`presets.sample_shapes`),
which themselves build on the geometry; kept in geometry it made geometry and presets import each
other. Only `tools/calibrate_synth.py` runs it; its output is `atf/synth/calibration.json`.
"""

from __future__ import annotations

import numpy as np

from atf.synth import presets, stats
from atf.synth.geometry import SchemeDef, initial_scheme, template_from_mean

__all__ = ["fit_calibration"]


def fit_calibration(real: dict, n: int = 3000, iters: int = 5, seed: int = 0) -> dict:
    """Fit t and offsets per scheme so that the synthetic Procrustes mean matches the real one.

    Fixed-point iteration: sample faces from the scheme's preset, compare the Procrustes mean with
    the real mean, move the offsets by the difference. Converges in a few steps (printed).
    """
    template = template_from_mean(np.asarray(real["wflw98"]["mean"]))
    out = {}
    for scheme in stats.SCHEMES:
        mean = np.asarray(real[scheme]["mean"])
        sd = initial_scheme(scheme, mean, template)
        preset = presets.preset_for_scheme(scheme)
        for it in range(iters):
            shapes = presets.sample_shapes(preset, sd, n, seed=seed + it, template=template)
            synth = stats.procrustes_mean(shapes, scheme)
            delta = mean - stats.align_to(synth[None], mean)[0]
            sd = SchemeDef(scheme, sd.curves, sd.t, sd.bias + delta)
            print(f"  {scheme} iter {it}: mean error {np.linalg.norm(delta, axis=1).mean():.4f} IOD")
        out[scheme] = {"t": np.round(sd.t, 4).tolist(), "bias": np.round(sd.bias, 4).tolist()}
    return {"schemes": out}
