"""Crop and augmentation as ONE 2x3 affine per sample, plus the inverse back to original pixels.

Why one affine: crop, scale, shift, rotation and flip compose into a single matrix, so the image is
resampled once (fast, no compounded blur) and the same matrix maps the landmarks exactly. Its
inverse maps predictions back to the original photo, where NME is computed.

Coordinate conventions (used by data.py, heatmaps.py, predict.py):
- pixel coordinates follow OpenCV's `warpAffine`: the centre of pixel (i, j) is at (x=j, y=i);
  annotation CSV coordinates are read in the same convention;
- the crop square of side `side` centred on `c` maps onto the whole S x S input: its left edge
  (c_x - side/2) lands on the input's left edge (x = -0.5), its right edge on x = S - 0.5;
- crop units: u = (x_input + 0.5) / S, so 0 and 1 are the input's outer edges; models predict u;
- a horizontal mirror is x -> S - 1 - x in input pixels, i.e. u -> 1 - u, exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from atf.config import AugmentConfig

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "AugmentParams", "load_image", "crop_box", "sample_params", "build_affine",
    "OCN_TEST_ENLARGE", "ocn_test_affine",
    "invert_affine", "compose_affine", "warp", "transform_points", "flip_points", "color_jitter", "normalize",
    "crop_to_input_px", "input_px_to_crop", "to_original",
]

# ImageNet statistics of RGB images scaled to [0, 1]: what the backbones' conventions expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

GRAYSCALE_PROB = 0.05  # our former fixed chance of a grayscale sample; now augment.grayscale (default 0)


@dataclass(frozen=True)
class AugmentParams:
    """The random draw of one sample; identity() is what evaluation uses."""
    scale: float = 1.0        # crop side multiplier (>1 zooms out)
    shift_x: float = 0.0      # crop centre shift, fraction of the crop side
    shift_y: float = 0.0
    rotation: float = 0.0     # degrees, counter-clockwise in the image
    flip: bool = False
    brightness: float = 1.0   # multiplicative factors (1 = unchanged)
    contrast: float = 1.0
    saturation: float = 1.0
    grayscale: bool = False

    @staticmethod
    def identity() -> AugmentParams:
        return AugmentParams()


def load_image(path: Path) -> np.ndarray | None:
    """Decode an image as RGB uint8 [H, W, 3]; None when missing or unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def crop_box(
    mode: Literal["center_scale", "box"],
    center: np.ndarray | None,
    scale: float | None,
    box: np.ndarray | None,
    margin: float,
) -> tuple[float, float, float]:
    """(cx, cy, side) of the square crop: HRNet `scale*200*margin` or box `max(w, h)*margin`.

    Raises ValueError when the fields the mode needs are missing (NaN); callers add file and row.
    """
    if mode == "center_scale":
        if center is None or scale is None or not np.all(np.isfinite(center)) or not np.isfinite(scale):
            raise ValueError("crop 'center_scale' needs center_w, center_h and scale")
        return float(center[0]), float(center[1]), float(scale) * 200.0 * margin
    if mode == "box":
        if box is None or not np.all(np.isfinite(box)):
            raise ValueError("crop 'box' needs left, top, right, bottom")
        left, top, right, bottom = (float(v) for v in box)
        side = max(right - left, bottom - top) * margin
        return (left + right) / 2.0, (top + bottom) / 2.0, side
    raise ValueError(f"unknown crop mode {mode!r}; expected 'center_scale' or 'box'")


OCN_TEST_ENLARGE = 1.12  # public OCN code: its test crop is the joined box enlarged 1.12x


def ocn_test_affine(box: np.ndarray, landmarks: np.ndarray, size: int,
                    enlarge: float = OCN_TEST_ENLARGE) -> np.ndarray:
    """The public OCN code's test crop as a 2x3 affine (original pixels -> input pixels).

    The min/max box of the detector box (`left, top, right, bottom`; NaN = none) joined with the
    ground-truth landmarks [K, 2], enlarged `enlarge` x about its centre, resized to S x S
    ANISOTROPICALLY (x and y scale differ). It uses the ground truth, so it is not a benchmark
    protocol; `eval.protocol: ocn` measures in it only to compare with the paper's OCN numbers.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size == 4 and np.all(np.isfinite(b)):
        pts = np.concatenate([pts, b.reshape(2, 2)])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, extent = (lo + hi) / 2.0, (hi - lo) * enlarge
    if not np.all(extent > 0):
        raise ValueError("OCN test crop: the joined box has zero width or height")
    k = size / extent
    m = np.array([[k[0], 0.0, 0.0], [0.0, k[1], 0.0]], dtype=np.float64)
    m[:, 2] = (size / 2.0 - 0.5) - k * centre
    return m


def sample_params(aug: AugmentConfig | None, rng: np.random.Generator) -> AugmentParams:
    """Draw one sample's augmentation. The number of draws is fixed, so streams stay aligned."""
    u = rng.random(13)  # all draws up front: same seed -> same numbers whatever is enabled
    if aug is None or not aug.enabled:
        return AugmentParams.identity()
    # random crop (PFLD-style): the crop box jitters in size and position by up to `random_crop`
    rc = aug.random_crop
    crop_scale = 1.0 + rc * (u[0] - 0.5)           # side x [1 - rc/2, 1 + rc/2]
    crop_dx, crop_dy = rc * (u[1] - 0.5), rc * (u[2] - 0.5)
    scale = (1.0 + aug.scale * (2.0 * u[3] - 1.0)) * crop_scale
    shift_x = aug.translate * (2.0 * u[4] - 1.0) + crop_dx
    shift_y = aug.translate * (2.0 * u[5] - 1.0) + crop_dy
    rotation = aug.rotation * (2.0 * u[7] - 1.0) if u[6] < aug.rotation_prob else 0.0
    flip = bool(u[8] < aug.flip)
    c = aug.color
    factors = 1.0 + c * (2.0 * u[10:13] - 1.0)
    grayscale = bool(u[9] < aug.grayscale)
    return AugmentParams(
        scale=float(scale), shift_x=float(shift_x), shift_y=float(shift_y), rotation=float(rotation),
        flip=flip, brightness=float(factors[0]), contrast=float(factors[1]),
        saturation=float(factors[2]), grayscale=grayscale,
    )


def build_affine(cx: float, cy: float, side: float, size: int, params: AugmentParams) -> np.ndarray:
    """2x3 float64 matrix: original pixels -> input pixels of an S x S crop (S = `size`)."""
    if not side > 0:
        raise ValueError(f"crop side must be positive, got {side}")
    side = side * params.scale
    cx = cx + params.shift_x * side
    cy = cy + params.shift_y * side
    k = size / side
    a = math.radians(params.rotation)
    cos, sin = math.cos(a) * k, math.sin(a) * k
    # x_in = k R (x - c) + (S/2 - 0.5); R rotates counter-clockwise as seen in the image (y down)
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=np.float64)
    m[:, 2] = (size / 2.0 - 0.5) - m[:, :2] @ np.array([cx, cy])
    if params.flip:
        m[0] = -m[0]
        m[0, 2] += size - 1.0
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (float64)."""
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def compose_affine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine `a` after `b`: x -> a(b(x)) (float64)."""
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = a[:, :2] @ b[:, :2]
    out[:, 2] = a[:, :2] @ b[:, 2] + a[:, 2]
    return out


def _source_box(inv: np.ndarray, size: int, pad: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the source pixels an S x S output reads through the output -> source
    affine `inv`, `pad` source px around its pixels' extent, clipped to the image."""
    corners = transform_points(np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5],
                                         [size - 0.5, size - 0.5]]), inv)
    h, w = shape[:2]
    x0, y0 = (max(0, int(math.floor(v - pad))) for v in corners.min(axis=0))
    x1 = min(w, int(math.ceil(corners[:, 0].max() + pad)))
    y1 = min(h, int(math.ceil(corners[:, 1].max() + pad)))
    return x0, y0, x1, y1


def _prefilter(image: np.ndarray, m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-downscale the region the crop reads when the warp shrinks by more than 2x.

    Bilinear warping samples only 4 source pixels per output pixel, so a large face (a 1000 px
    WFLW face into a 112 px crop) aliases. Like the HRNet crop-then-resize, we average first:
    the needed region is shrunk with INTER_AREA to twice the output resolution, and the affine is
    re-based onto the small image (points keep the original `m`, so nothing else changes).
    """
    k = math.sqrt(abs(float(np.linalg.det(m[:, :2]))))   # output px per source px
    if k >= 0.5:
        return image, m
    x0, y0, x1, y1 = _source_box(invert_affine(m), size, 2.0 / k, image.shape[:2])
    if x1 - x0 < 2 or y1 - y0 < 2:          # the crop lies outside the image: nothing to average
        return image, m
    roi = image[y0:y1, x0:x1]
    dw, dh = max(1, round((x1 - x0) * 2 * k)), max(1, round((y1 - y0) * 2 * k))
    small = cv2.resize(roi, (dw, dh), interpolation=cv2.INTER_AREA)
    fx, fy = dw / (x1 - x0), dh / (y1 - y0)
    # small-image pixel centre x_s <- original x = (x_s + 0.5) / fx - 0.5 + x0 (same for y)
    a = np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5 + x0], [0.0, 1.0 / fy, 0.5 / fy - 0.5 + y0]])
    m2 = np.empty((2, 3), dtype=np.float64)
    m2[:, :2] = m[:, :2] @ a[:, :2]
    m2[:, 2] = m[:, :2] @ a[:, 2] + m[:, 2]
    return small, m2


_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def warp(image: np.ndarray, m: np.ndarray, size: int, border: Literal["constant", "replicate"] = "constant",
         antialias: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """Resample `image` into the S x S crop (bilinear; area-prefiltered when shrinking > 2x).

    Default border: constant black, as the HRNet crop pads. An S x S image under the identity (a
    crop cache's exact view) is copied, not resampled. `out`: an [S, S, C] array to write into (a
    slot of a batch in shared memory), returned.
    """
    if image.shape[:2] == (size, size) and np.abs(np.asarray(m) - _IDENTITY).max() < 1e-9:
        if out is None:
            return np.array(image)
        np.copyto(out, image)
        return out
    mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
    src, mm = _prefilter(image, np.asarray(m, dtype=np.float64), size) if antialias else (image, m)
    src, inv = _read_region(src, np.asarray(mm, dtype=np.float64), size)
    return cv2.warpAffine(src, inv, (size, size), dst=out, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=mode, borderValue=0)


def _read_region(image: np.ndarray, m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the part of `image` the S x S warp reads, copied contiguous; the output -> part affine).

    A rotated warp reads its source along slanted lines, which from a large source (a 1024 px
    photo, a crop cache's 589 px HRNet face) misses the CPU caches; copying the region first reads
    it row by row, and the warp then runs from cache (bench/bench_warp.py measures both). Exact: the inverse map
    only loses whole pixels from its translation (x - n is exact in float64), and the region keeps
    a 2 px margin around the pixels the bilinear taps reach, so borders fall where they did
    (bit-identical to warping the whole image, tested). A region of more than half the image is
    not worth its copy and the image is warped as it is. `inv` is OpenCV's own inverse, the one
    warpAffine would compute.
    """
    inv = cv2.invertAffineTransform(m)
    x0, y0, x1, y1 = _source_box(inv, size, 2.5, image.shape[:2])
    if x1 - x0 < 2 or y1 - y0 < 2 or 2 * (x1 - x0) * (y1 - y0) > image.shape[0] * image.shape[1]:
        return image, inv
    inv[0, 2] -= x0
    inv[1, 2] -= y0
    return np.ascontiguousarray(image[y0:y1, x0:x1]), inv


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to points [..., 2] (float64 maths, dtype preserved as float32/64)."""
    p = np.asarray(points, dtype=np.float64)
    out = p @ m[:, :2].T + m[:, 2]
    return out.astype(np.result_type(points, np.float32))


def flip_points(points: np.ndarray, flip_perm: np.ndarray | list[int]) -> np.ndarray:
    """Relabel mirrored points: new point i is the mirror image of old point flip_perm[i]."""
    return np.asarray(points)[..., np.asarray(flip_perm), :]


def color_jitter(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Brightness, contrast, saturation (and rare grayscale) on an RGB float32 image in [0, 1].

    Applied in that order (torchvision's definitions: contrast blends with the mean gray level,
    saturation with the pixel's gray value). All three are linear in the image and in its gray
    image, so they fuse into one pass: out = s*a*img + (1-s)*a*gray + d, a = b*c, d = (1-c)*b*mean.
    """
    if (params.brightness, params.contrast, params.saturation, params.grayscale) == (1.0, 1.0, 1.0, False):
        return image
    img = np.ascontiguousarray(image, dtype=np.float32)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    b, c, s = params.brightness, params.contrast, params.saturation
    a = b * c
    d = (1.0 - c) * b * float(gray.mean())
    if params.grayscale:   # the gray of the jittered image, in all three channels
        out = np.repeat(a * gray + d, 3, axis=2)
    else:
        out = (s * a) * img + ((1.0 - s) * a) * gray + d
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def normalize(image_rgb01: np.ndarray) -> np.ndarray:
    """HWC RGB [0, 1] -> CHW float32 normalised with the ImageNet mean and std."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(((image_rgb01 - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def crop_to_input_px(u: np.ndarray | torch.Tensor, size: int) -> np.ndarray | torch.Tensor:
    """Crop units (0..1, outer edges) -> input pixel coordinates (pixel centres at integers)."""
    return u * size - 0.5


def input_px_to_crop(x: np.ndarray | torch.Tensor, size: int) -> np.ndarray | torch.Tensor:
    """Input pixel coordinates -> crop units."""
    return (x + 0.5) / size


def to_original(points: np.ndarray | torch.Tensor, inverse: np.ndarray | torch.Tensor, input_size: int
                ) -> np.ndarray | torch.Tensor:
    """Map predictions in crop units [N, K, 2] back to original pixels.

    `inverse` [N, 2, 3] is the inverse of the sample's affine (input pixels -> original pixels), as
    the Dataset returns it. Numpy in, numpy out (float64 maths); torch in, torch out (float64 maths,
    result in the points' dtype).
    """
    if isinstance(points, torch.Tensor):
        inv = torch.as_tensor(inverse, device=points.device, dtype=torch.float64)
        x = crop_to_input_px(points.to(torch.float64), input_size)
        out = torch.einsum("nkj,nij->nki", x, inv[:, :, :2]) + inv[:, None, :, 2]
        return out.to(points.dtype)
    inv = np.asarray(inverse, dtype=np.float64)
    x = crop_to_input_px(np.asarray(points, dtype=np.float64), input_size)
    return np.einsum("nkj,nij->nki", x, inv[:, :, :2]) + inv[:, None, :, 2]
