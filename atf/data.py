"""Torch Dataset over an AnnotationSet: load, crop + augment with one affine, build targets.

Per-sample randomness is a pure function of (seed, dataset, epoch, index) — `set_epoch` chooses the epoch —
so a run gives the same samples with 0 or 8 DataLoader workers and after a resume.

A sample is a dict:
    image    float32 [3, S, S]  RGB, ImageNet mean/std normalised (transforms.IMAGENET_MEAN/STD)
    coords   float32 [K, 2]     landmarks in crop units (0..1); mirrored AND permuted when flipped
    heatmap  float32 [K, h, h]  Gaussian targets (only when heatmap_size is set)
    inverse  float32 [2, 3]     input pixels -> original pixels (transforms.to_original uses it)
    index    int                index into the AnnotationSet
    flipped  bool               the sample was mirrored (its coords are permuted)
An unreadable image raises a one-line error naming the image and the CSV row; with
`skip_unreadable=True` the sample comes back as a marker that `collate` drops and reports in
`batch["skipped"]` (dataset indices), so the trainer can count and report them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from atf import heatmaps, transforms
from atf.config import AugmentConfig

__all__ = ["AnnotationLike", "LandmarkDataset", "UnreadableImageError", "collate", "flip_average",
           "load_image"]


class AnnotationLike(Protocol):
    """The fields of atf.readers.AnnotationSet that the Dataset reads."""
    source: str
    images: tuple[str, ...]
    landmarks: np.ndarray   # [N, K, 2]
    centers: np.ndarray     # [N, 2]
    scales: np.ndarray      # [N]
    boxes: np.ndarray       # [N, 4]


class UnreadableImageError(RuntimeError):
    """An image file is missing or cannot be decoded; the message names it and its CSV row."""


def load_image(path: Path) -> np.ndarray | None:
    """Decode an image as RGB uint8 [H, W, 3]; None when missing or unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _row_label(aset: AnnotationLike, index: int) -> str:
    """`file.csv row 12` (1-based data row; the original row when the set is a subset with `rows`)."""
    rows = getattr(aset, "rows", None)
    row = int(rows[index]) if rows is not None else index
    return f"{aset.source} row {row + 1}"


class LandmarkDataset(Dataset):
    """Samples of one dataset for training (augment given) or evaluation (augment=None)."""

    def __init__(
        self,
        aset: AnnotationLike,
        images_dir: str | Path,
        flip_perm: Sequence[int] | np.ndarray,
        input_size: int,
        augment: AugmentConfig | None = None,
        crop: Literal["center_scale", "box", "ocn_test"] = "center_scale",
        crop_margin: float = 1.25,
        heatmap_size: int | None = None,
        sigma: float = 1.5,
        seed: int = 0,
        skip_unreadable: bool = False,
        cache_images: bool = False,
        border: Literal["constant", "replicate"] = "constant",
    ) -> None:
        self.aset = aset
        self.images_dir = Path(images_dir)
        self.flip_perm = np.asarray(flip_perm, dtype=np.int64)
        k = int(aset.landmarks.shape[1])
        if self.flip_perm.shape != (k,) or not np.array_equal(self.flip_perm[self.flip_perm], np.arange(k)):
            raise ValueError(f"{aset.source}: flip_perm must be an involution of {k} indices")
        self.input_size = int(input_size)
        self.augment = augment if augment is not None and augment.enabled else None
        self.crop = crop
        self.crop_margin = float(crop_margin)
        self.heatmap_size = int(heatmap_size) if heatmap_size else None
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.skip_unreadable = skip_unreadable
        self.cache_images = cache_images
        self.border = border
        self.epoch = 0
        self._stream = zlib.crc32(str(getattr(aset, "dataset", "")).encode())
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.aset.images)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random draws __getitem__ uses (call before iterating)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The sample's generator: a pure function of (seed, dataset name, epoch, index).

        The dataset name keeps sample i of two datasets in one ATF run from sharing its draws.
        """
        return np.random.default_rng([self.seed, self._stream, self.epoch, int(index)])

    def image_path(self, index: int) -> Path:
        return self.images_dir / self.aset.images[index]

    def _image(self, index: int) -> np.ndarray | None:
        if index in self._cache:
            return self._cache[index]
        img = load_image(self.image_path(index))
        if img is not None and self.cache_images:
            self._cache[index] = img
        return img

    def affine(self, index: int, params: transforms.AugmentParams) -> np.ndarray:
        """Original pixels -> input pixels for sample `index` under `params`."""
        a = self.aset
        if self.crop == "ocn_test":  # eval.protocol ocn: the public OCN code's test crop (no augmentation)
            try:
                return transforms.ocn_test_affine(a.boxes[index], a.landmarks[index], self.input_size)
            except ValueError as e:
                raise ValueError(f"{_row_label(a, index)}: {e}") from None
        scale = float(a.scales[index]) if self.crop == "center_scale" else float("nan")
        mode = self.crop
        if mode == "center_scale" and not np.isfinite(scale) and np.all(np.isfinite(a.boxes[index])):
            mode = "box"  # e.g. COFW: no HRNet scale column, the box defines the crop
        try:
            cx, cy, side = transforms.crop_box(mode, a.centers[index], scale, a.boxes[index], self.crop_margin)
        except ValueError as e:
            raise ValueError(f"{_row_label(a, index)}: {e}") from None
        return transforms.build_affine(cx, cy, side, self.input_size, params)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        img = self._image(index)
        if img is None:
            msg = f"cannot read image {self.image_path(index)} ({_row_label(self.aset, index)})"
            if self.skip_unreadable:
                return {"skipped": True, "index": index, "reason": msg}
            raise UnreadableImageError(msg)
        params = transforms.sample_params(self.augment, self.rng(index))
        m = self.affine(index, params)
        crop = transforms.warp(img, m, self.input_size, self.border).astype(np.float32) * (1.0 / 255.0)
        if self.augment is not None and (self.augment.color > 0 or self.augment.grayscale > 0):
            crop = transforms.color_jitter(crop, params)
        pts = transforms.transform_points(self.aset.landmarks[index], m)
        if params.flip:
            pts = transforms.flip_points(pts, self.flip_perm)
        coords = transforms.input_px_to_crop(pts.astype(np.float64), self.input_size).astype(np.float32)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(transforms.normalize(crop)),
            "coords": torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32)),
            "inverse": torch.from_numpy(transforms.invert_affine(m).astype(np.float32)),
            "index": index,
            "flipped": params.flip,
        }
        if self.heatmap_size:
            hm_pts = heatmaps.crop_to_hm(torch.from_numpy(coords), self.heatmap_size)
            sample["heatmap"] = heatmaps.encode(hm_pts, self.heatmap_size, self.sigma)
        return sample


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples; drop skip markers and list their dataset indices in `batch["skipped"]`.

    Runs inside DataLoader workers too, so the count travels with the batch rather than in a
    dataset attribute. A batch whose samples were all skipped holds only `index` (empty) and
    `skipped`.
    """
    kept = [s for s in samples if not s.get("skipped")]
    batch: dict[str, Any] = {
        "skipped": torch.tensor([s["index"] for s in samples if s.get("skipped")], dtype=torch.long),
        "skipped_reasons": [s["reason"] for s in samples if s.get("skipped")],
        "index": torch.tensor([s["index"] for s in kept], dtype=torch.long),
    }
    if not kept:
        return batch
    for key in kept[0]:
        if key in ("index", "skipped"):
            continue
        vals = [s[key] for s in kept]
        batch[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else torch.tensor(vals)
    return batch


def flip_average(
    predict_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    flip_perm: Sequence[int] | np.ndarray | torch.Tensor,
    kind: Literal["coords", "heatmap"],
) -> torch.Tensor:
    """Test-time flip: average the prediction of `images` [B, 3, S, S] and of their mirror.

    kind "coords": predictions [B, K, 2] in crop units; the mirror's x becomes 1 - x.
    kind "heatmap": predictions [B, K, h, w]; the mirror's maps are flipped along w (exact under
    the pixel-centre convention of heatmaps.py, so no one-pixel shift is needed).
    Either way the mirror's points are permuted back with `flip_perm` before averaging.
    """
    perm = torch.as_tensor(np.asarray(flip_perm), dtype=torch.long, device=images.device)
    pred = predict_fn(images)
    mirrored = predict_fn(torch.flip(images, dims=[-1]))
    if kind == "coords":
        back = mirrored[:, perm].clone()
        back[..., 0] = 1.0 - back[..., 0]
    elif kind == "heatmap":
        back = torch.flip(mirrored[:, perm], dims=[-1])
    else:
        raise ValueError(f"flip_average: unknown kind {kind!r}; expected 'coords' or 'heatmap'")
    return 0.5 * (pred + back)
