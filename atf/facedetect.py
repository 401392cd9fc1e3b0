"""Every face in a photo: an MTCNN cascade (Zhang et al. 2016) in PyTorch, with the trained
weights the `mtcnn` package ships inside its wheel (nothing is downloaded at run time).

Why this and not a library: facenet-pytorch pins torch < 2.3, MediaPipe's current wheels ship no
face model (0.10.21, the last that did, pins numpy < 2), no package ships a YuNet ONNX file for
OpenCV's FaceDetectorYN, and `mtcnn` itself needs TensorFlow to run its own code (we read only its
weights: joblib/lz4 arrays). docs/predict.md has what was tried. OpenCV's Haar cascade stays the
fallback (atf.predict).

The cascade: P-Net slides over an image pyramid proposing 12 px windows, R-Net (24 px) and O-Net
(48 px) re-score and refine them; boxes are merged by non-maximum suppression at every stage.
Input is RGB scaled as (x - 127.5) / 128, as the weights were trained. tests/test_facedetect.py
holds it to the `mtcnn` package's own outputs stage by stage (tests/data/mtcnn_reference.npz).

Where it departs from that package, on purpose: the pyramid has two levels per step of the paper's
0.709 (a large face falls between levels, and P-Net's probabilities swing by up to 0.85 with one
pixel of level size: one more level gives it a second chance), R-Net and O-Net see their boxes
area-averaged on whole pixels (the package samples a 400 px box at 24 points, aliased), and P-Net's
window is the original's 12 px one (see `candidates`). The 1024 x 817 grayscale portrait of issue
20, missed with one level per step, is found with them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FaceBox", "MtcnnUnavailable", "mtcnn_available", "detect_faces", "weights_dir", "pyramid", "pnet_level",
           "candidates"]

WEIGHTS_PACKAGE = "mtcnn"
MIN_FACE = 20               # px: the smallest face looked for
PYRAMID_FACTOR = 0.709 ** 0.5  # each level this much smaller: two levels per step of the paper's 0.709
THRESHOLDS = (0.6, 0.7, 0.8)  # face probability kept after P-Net, R-Net, O-Net
NMS = (0.5, 0.7, 0.7)         # IoU merging: per pyramid level, after R-Net, after O-Net ("min" overlap)


class MtcnnUnavailable(RuntimeError):
    """The `mtcnn` package (which ships the weights) or `joblib`/`lz4` (which read them) is missing."""


@dataclass(frozen=True)
class FaceBox:
    """One detection: box (left, top, right, bottom) in image pixels, face probability, and the five
    points O-Net regresses (eyes, nose, mouth corners) as [5, 2]."""
    box: tuple[float, float, float, float]
    score: float
    points: np.ndarray


def weights_dir() -> Path | None:
    """Where the installed `mtcnn` package keeps its weights (found without importing it)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"
    return folder if all((folder / f"{n}.lz4").is_file() for n in ("pnet", "rnet", "onet")) else None


def mtcnn_available() -> bool:
    return weights_dir() is not None and importlib.util.find_spec("joblib") is not None \
        and importlib.util.find_spec("lz4") is not None


# -- the three networks -----------------------------------------------------------------------------

def _conv(w: np.ndarray, b: np.ndarray) -> nn.Conv2d:
    """A Keras kernel [H, W, in, out] as a torch convolution."""
    conv = nn.Conv2d(w.shape[2], w.shape[3], (w.shape[0], w.shape[1]))
    conv.weight.data = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).float()
    conv.bias.data = torch.from_numpy(b).float()
    return conv


def _prelu(alpha: np.ndarray) -> nn.PReLU:
    act = nn.PReLU(alpha.size)
    act.weight.data = torch.from_numpy(alpha.reshape(-1)).float()
    return act


def _linear(w: np.ndarray, b: np.ndarray) -> nn.Linear:
    fc = nn.Linear(w.shape[0], w.shape[1])
    fc.weight.data = torch.from_numpy(np.ascontiguousarray(w.T)).float()
    fc.bias.data = torch.from_numpy(b).float()
    return fc


class _Trunk(nn.Module):
    """conv -> PReLU [-> max-pool] blocks; pools are (kernel, stride, ceil) as TF's SAME/VALID."""

    def __init__(self, weights: list[np.ndarray], pools: list[tuple[int, int, bool] | None]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(weights[3 * i], weights[3 * i + 1]) for i in range(len(pools)))
        self.acts = nn.ModuleList(_prelu(weights[3 * i + 2]) for i in range(len(pools)))
        self.pools = pools

    def forward(self, x: Tensor) -> Tensor:
        for conv, act, pool in zip(self.convs, self.acts, self.pools):
            x = act(conv(x))
            if pool is not None:
                x = F.max_pool2d(x, pool[0], pool[1], ceil_mode=pool[2])
        return x


class PNet(nn.Module):
    """12 px windows, fully convolutional: (box offsets [N, 4, h, w], face probability [N, h, w])."""

    def __init__(self, w: list[np.ndarray]) -> None:
        super().__init__()
        self.trunk = _Trunk(w[:9], [(2, 2, True), None, None])
        self.reg, self.cls = _conv(w[9], w[10]), _conv(w[11], w[12])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.trunk(x)
        return self.reg(f), F.softmax(self.cls(f), dim=1)[:, 1]


class _Refiner(nn.Module):
    """R-Net / O-Net: conv trunk, flattened in (W, H, C) order as the weights expect, one FC layer,
    then heads (box offsets, [points,] face probability)."""

    def __init__(self, w: list[np.ndarray], pools: list[tuple[int, int, bool] | None]) -> None:
        super().__init__()
        n = 3 * len(pools)
        self.trunk = _Trunk(w[:n], pools)
        self.fc, self.act = _linear(w[n], w[n + 1]), _prelu(w[n + 2])
        self.heads = nn.ModuleList(_linear(w[i], w[i + 1]) for i in range(n + 3, len(w), 2))

    def forward(self, x: Tensor) -> list[Tensor]:
        f = self.trunk(x).permute(0, 3, 2, 1).flatten(1)
        f = self.act(self.fc(f))
        outs = [head(f) for head in self.heads]
        outs[-1] = F.softmax(outs[-1], dim=1)[:, 1]
        return outs


@lru_cache(maxsize=1)
def _networks() -> tuple[PNet, _Refiner, _Refiner]:
    folder = weights_dir()
    if folder is None:
        raise MtcnnUnavailable("the MTCNN detector needs the 'mtcnn' package, which ships its weights "
                               "(pip install mtcnn)")
    try:
        import joblib
    except ImportError:
        raise MtcnnUnavailable("reading the MTCNN weights needs joblib and lz4 (pip install mtcnn)") from None
    w = {n: [np.asarray(a) for a in joblib.load(folder / f"{n}.lz4")] for n in ("pnet", "rnet", "onet")}
    pnet = PNet(w["pnet"]).eval()
    rnet = _Refiner(w["rnet"], [(3, 2, True), (3, 2, False), None]).eval()
    onet = _Refiner(w["onet"], [(3, 2, True), (3, 2, False), (2, 2, True), None]).eval()
    return pnet, rnet, onet


# -- boxes ------------------------------------------------------------------------------------------

def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (IoU, or overlap over the smaller box)."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _refine(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply regressed offsets (fractions of the box's width/height)."""
    wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes + offsets * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box as the square of its longer side around its centre, on whole pixels (what R-Net and
    O-Net see: the crop is exactly the box, so their offsets apply to the box they were given)."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(np.round(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])), 1)[:, None]
    left_top = np.round(c - side / 2)
    return np.concatenate([left_top, left_top + side], axis=1)


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> Tensor:
    """Each whole-pixel box averaged down (area resampling) to size x size; outside the image
    mid-grey (0 after normalisation). Averaging matters: a 400 px face sampled at 24 points
    without it is aliased, and R-Net's score then swings with a pixel of shift."""
    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        patch = np.full((y2 - y1, x2 - x1, 3), 127.5, np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(patch, (size, size), interpolation=interp)
    return torch.from_numpy((out - 127.5) / 128.0).permute(0, 3, 1, 2)


# -- the cascade ------------------------------------------------------------------------------------

def pyramid(height: int, width: int, min_face: int = MIN_FACE,
            factor: float = PYRAMID_FACTOR) -> list[tuple[float, tuple[int, int]]]:
    """[(scale, (level height, level width))]: from the scale where a `min_face` face is 12 px down
    to the level whose shorter side is still 12 px (P-Net's window); sizes rounded up, as the
    original MATLAB code does."""
    scale, out = 12.0 / min_face, []
    while min(height, width) * scale >= 12:
        out.append((scale, (int(np.ceil(height * scale)), int(np.ceil(width * scale)))))
        scale *= factor
    return out


@torch.no_grad()
def pnet_level(pnet: PNet, image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """P-Net on the image area-resampled to `size` (height, width): offsets [4, h, w], face
    probability [h, w]. Input is RGB scaled as (x - 127.5) / 128, as the weights were trained."""
    level = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    reg, prob = pnet(torch.from_numpy((level - 127.5) / 128.0).permute(2, 0, 1)[None].float())
    return reg[0].numpy(), prob[0].numpy()


def candidates(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float = THRESHOLDS[0],
               window: tuple[int, int] = (0, 12)) -> np.ndarray:
    """P-Net cells above `threshold` as boxes [n, 5] (x1, y1, x2, y2, score) in image pixels: the
    window of each cell at stride 2, (2x + window[0], 2y + window[0]) to (2x + window[1], ...),
    moved by its offsets (fractions of its width), divided by the level's scale. (0, 12) is the
    original's 12 px window, 1-based MATLAB pixels 2x+1..2x+12; the `mtcnn` package reads those
    indices as (1, 12), an 11 px window one pixel off (the parity test passes it)."""
    ys, xs = np.nonzero(prob > threshold)
    a, b = window
    cells = np.stack([xs * 2 + a, ys * 2 + a, xs * 2 + b, ys * 2 + b], axis=1).astype(np.float64) / scale
    boxes = _refine(cells, reg[:, ys, xs].T.astype(np.float64))
    return np.concatenate([boxes, prob[ys, xs, None].astype(np.float64)], axis=1)


def _proposals(pnet: PNet, image: np.ndarray, min_face: int) -> np.ndarray:
    """P-Net over the pyramid: candidate boxes [n, 5], merged within each level, then across levels."""
    found = []
    for scale, size in pyramid(*image.shape[:2], min_face):
        cand = candidates(*pnet_level(pnet, image, size), scale)
        found.append(cand[_nms(cand[:, :4], cand[:, 4], NMS[0])])
    cand = np.concatenate(found) if found else np.zeros((0, 5))
    return cand[_nms(cand[:, :4], cand[:, 4], 0.7)]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """An RGB float32 copy of a uint8 image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (alpha dropped)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"detect_faces needs uint8 pixels (0-255), got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"detect_faces needs an image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}")
    image = image[..., :3] if image.shape[2] != 1 else np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image, dtype=np.float32)


@torch.no_grad()
def detect_faces(image_rgb: np.ndarray, min_face: int = MIN_FACE) -> list[FaceBox]:
    """Every face in an RGB uint8 image (grayscale [H, W] and RGBA are taken too), most probable first."""
    pnet, rnet, onet = _networks()
    image = _as_rgb(image_rgb)
    cand = _proposals(pnet, image, min_face)
    if not len(cand):
        return []
    boxes = _square(cand[:, :4])
    reg, prob = rnet(_crops(image, boxes, 24))
    keep = prob.numpy() > THRESHOLDS[1]
    boxes, reg, scores = boxes[keep], reg.numpy()[keep], prob.numpy()[keep]
    if not len(boxes):
        return []
    kept = _nms(boxes, scores, NMS[1])
    boxes = _square(_refine(boxes[kept], reg[kept]))
    reg, points, prob = onet(_crops(image, boxes, 48))
    keep = prob.numpy() > THRESHOLDS[2]
    boxes, reg, points, scores = boxes[keep], reg.numpy()[keep], points.numpy()[keep], prob.numpy()[keep]
    if not len(boxes):
        return []
    wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    # O-Net's points: five x offsets, then five y offsets, as fractions of the (square) box
    pts = np.stack([boxes[:, None, 0] + points[:, :5] * wh[:, :1], boxes[:, None, 1] + points[:, 5:] * wh[:, 1:]],
                   axis=2)
    boxes = _refine(boxes, reg)
    kept = _nms(boxes, scores, NMS[2], mode="min")
    return [FaceBox(tuple(float(v) for v in boxes[i]), float(scores[i]), pts[i]) for i in kept]
