"""SynthFace: a synthetic four-dataset face-landmark benchmark (the project's embedded default data).

One 3D face model, sampled by the WFLW-98, 300W-68, COFW-29 and AFLW-19 schemes, rendered with
OpenCV and written in the real datasets' CSV layout. See `generate` and `atf-data synth`.
"""

from atf.synth.generate import generate

__all__ = ["generate"]
