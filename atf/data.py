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

A DataLoader fetches whole batches (`LandmarkDataset.__getitems__`) in a leaner layout: images as
uint8 [B, S, S, 3] and heatmaps as their two separable factors, finished where the model runs by
`batch_inputs` and `batch_targets` into the same float32 numbers as the per-sample layout. Why: the
loader's cost at 256 px was the bytes, not the maths (normalising in float32 and 98 maps of 64 px
are 0.8 MB and 1.6 MB per sample, copied into shared memory and page-faulted in on every batch).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from atf import heatmaps, transforms
from atf.config import AugmentConfig
from atf.cropcache import CropCache
from atf.transforms import load_image

__all__ = ["AnnotationLike", "LandmarkDataset", "UnreadableImageError", "collate", "flip_average",
           "load_image", "batch_inputs", "batch_targets"]


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


def _row_label(aset: AnnotationLike, index: int) -> str:
    """`file.csv row 12` (1-based data row of the file, also for a subset: AnnotationSet.rows)."""
    return f"{aset.source} row {int(_file_rows(aset)[index]) + 1}"


class LandmarkDataset(Dataset):
    """Samples of one dataset for training (augment given) or evaluation (augment=None).

    Pixels come from the photo (decoded per sample) or, with `crops`, from a face-crop cache
    (atf.cropcache) holding this set's faces: the same affine is applied either way, re-based onto
    the cached crop, so the draws and the landmarks are identical and only the resampling differs.
    """

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
        border: Literal["constant", "replicate"] = "constant",
        crops: CropCache | None = None,
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
        self.border = border
        self.epoch = 0
        self._stream = zlib.crc32(str(getattr(aset, "dataset", "")).encode())
        self.crops = crops
        self._pos = crops.positions(_file_rows(aset)) if crops is not None else None
        self._float_pixels = self.augment is not None and (self.augment.color > 0 or self.augment.grayscale > 0)

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

    def crop_square(self, index: int) -> tuple[float, float, float]:
        """(cx, cy, side) of sample `index`'s un-augmented square crop, in photo pixels."""
        a = self.aset
        scale = float(a.scales[index]) if self.crop == "center_scale" else float("nan")
        mode = self.crop
        if mode == "center_scale" and not np.isfinite(scale) and np.all(np.isfinite(a.boxes[index])):
            mode = "box"  # e.g. COFW: no HRNet scale column, the box defines the crop
        try:
            return transforms.crop_box(mode, a.centers[index], scale, a.boxes[index], self.crop_margin)
        except ValueError as e:
            raise ValueError(f"{_row_label(a, index)}: {e}") from None

    def affine(self, index: int, params: transforms.AugmentParams) -> np.ndarray:
        """Original pixels -> input pixels for sample `index` under `params`."""
        a = self.aset
        if self.crop == "ocn_test":  # eval.protocol ocn: the public OCN code's test crop (no augmentation)
            try:
                return transforms.ocn_test_affine(a.boxes[index], a.landmarks[index], self.input_size)
            except ValueError as e:
                raise ValueError(f"{_row_label(a, index)}: {e}") from None
        cx, cy, side = self.crop_square(index)
        return transforms.build_affine(cx, cy, side, self.input_size, params)

    def _pixels(self, index: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(pixels, their px -> photo px affine, None for the photo itself); (None, None) if unreadable."""
        if self._pos is None:
            return load_image(self.image_path(index)), None
        pos = int(self._pos[index])
        if not self.crops.ok[pos]:
            return None, None
        return self.crops.crop(pos), self.crops.to_original[pos]

    def _unreadable(self, index: int) -> str:
        return f"cannot read image {self.image_path(index)} ({_row_label(self.aset, index)})"

    def _draw(self, index: int, out: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, transforms.AugmentParams] | None:
        """(uint8 crop [S, S, 3] (written into `out` when given), coords [K, 2] crop units, affine
        photo -> input, params), or None for an unreadable image in skip mode."""
        pixels, back = self._pixels(index)
        if pixels is None:
            if self.skip_unreadable:
                return None
            raise UnreadableImageError(self._unreadable(index))
        params = transforms.sample_params(self.augment, self.rng(index))
        m = self.affine(index, params)
        src_m = m if back is None else transforms.compose_affine(m, back)
        crop = transforms.warp(pixels, src_m, self.input_size, self.border, out=out)
        pts = transforms.transform_points(self.aset.landmarks[index], m)
        if params.flip:
            pts = transforms.flip_points(pts, self.flip_perm)
        coords = transforms.input_px_to_crop(pts.astype(np.float64), self.input_size).astype(np.float32)
        return crop, np.ascontiguousarray(coords, dtype=np.float32), m, params

    def _float_image(self, crop: np.ndarray, params: transforms.AugmentParams) -> np.ndarray:
        """CHW float32, ImageNet-normalised (colour jitter, when on, applied first)."""
        img = crop.astype(np.float32) * (1.0 / 255.0)
        if self._float_pixels:
            img = transforms.color_jitter(img, params)
        return transforms.normalize(img)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One sample in the module docstring's layout (float image, full heatmaps)."""
        index = int(index)
        drawn = self._draw(index)
        if drawn is None:
            return {"skipped": True, "index": index, "reason": self._unreadable(index)}
        crop, coords, m, params = drawn
        sample: dict[str, Any] = {
            "image": torch.from_numpy(self._float_image(crop, params)),
            "coords": torch.from_numpy(coords),
            "inverse": torch.from_numpy(transforms.invert_affine(m).astype(np.float32)),
            "index": index,
            "flipped": params.flip,
        }
        if self.heatmap_size:
            hm_pts = heatmaps.crop_to_hm(torch.from_numpy(coords), self.heatmap_size)
            sample["heatmap"] = heatmaps.encode(hm_pts, self.heatmap_size, self.sigma)
        return sample

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A whole batch, as the DataLoader fetches it (`batch_inputs` and `batch_targets` finish it
        where the model runs): images uint8 [B, S, S, 3] (float [B, 3, S, S] under colour jitter),
        heatmap targets as their two separable factors, each as its non-zero span (`heatmap_x`
        [B, K, W] from column `heatmap_x_start` [B, K], the same for y). Per sample a quarter
        (images) and 1/180 (98 heatmaps of 64 px) of `collate`'s bytes, for the same numbers."""
        s = self.input_size
        images = None if self._float_pixels else _batch_buffer((len(indices), s, s, 3), torch.uint8)
        slots = images.numpy() if images is not None else None
        drawn, skipped = [], []
        for i in indices:   # uint8 crops are warped straight into their slot of the batch
            d = self._draw(int(i), out=slots[len(drawn)] if slots is not None else None)
            if d is None:
                skipped.append(int(i))
            else:
                drawn.append((int(i), d))
        batch = _empty_batch(skipped, [self._unreadable(i) for i in skipped], [i for i, _ in drawn])
        if not drawn:
            return batch
        if self._float_pixels:
            batch["image"] = torch.from_numpy(np.stack([self._float_image(c, p) for _, (c, _, _, p) in drawn]))
        else:
            batch["image"] = images[:len(drawn)]
        coords = np.stack([d[1] for _, d in drawn])
        batch["coords"] = torch.from_numpy(coords)
        batch["inverse"] = torch.from_numpy(np.stack([transforms.invert_affine(d[2]) for _, d in drawn])
                                            .astype(np.float32))
        batch["flipped"] = torch.tensor([d[3].flip for _, d in drawn])
        if self.heatmap_size:   # one call for the batch: elementwise, so the same floats as per sample
            h = self.heatmap_size
            pts = heatmaps.crop_to_hm(coords, h).reshape(-1, 2)
            for axis, g in zip("xy", heatmaps.encode_axes(pts, h, self.sigma)):
                start, values = heatmaps.pack_axes(g, pts[:, "xy".index(axis)], self.sigma)
                batch[f"heatmap_{axis}_start"] = torch.from_numpy(start.reshape(len(drawn), -1))
                batch[f"heatmap_{axis}"] = torch.from_numpy(values.reshape(len(drawn), -1, values.shape[-1]))
            batch["heatmap_size"] = h
        return batch


def _batch_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A batch tensor; inside a DataLoader worker made in shared memory at once, so handing it to
    the main process copies nothing (as torch's default_collate does)."""
    out = torch.empty(shape, dtype=dtype)
    return out.share_memory_() if torch.utils.data.get_worker_info() is not None else out


def _file_rows(aset: AnnotationLike) -> np.ndarray:
    rows = getattr(aset, "rows", None)
    return np.arange(len(aset.images), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)


SMALL_TENSOR = 64 * 1024   # bytes: below this a batch's tensor crosses to the main process by value


class Batch(dict):
    """A batch that crosses from a DataLoader worker to the main process in one pickle: its small
    tensors (coordinates, affines, indices) travel by value instead of in one shared-memory segment
    each, which costs more than their bytes (3.5 ms a batch for five of them, measured here: a
    tenth of an OCN-112 batch's budget). Large ones (images, heatmap factors) stay shared."""

    def __reduce__(self):
        small = {k: v.numpy() if isinstance(v, torch.Tensor) and v.nbytes < SMALL_TENSOR else v
                 for k, v in self.items()}
        return _rebuild_batch, (small,)


def _rebuild_batch(items: dict[str, Any]) -> Batch:
    return Batch({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in items.items()})


def _empty_batch(skipped: list[int], reasons: list[str], kept: list[int]) -> Batch:
    return Batch({"skipped": torch.tensor(skipped, dtype=torch.long), "skipped_reasons": reasons,
                  "index": torch.tensor(kept, dtype=torch.long)})


def batch_inputs(batch: dict[str, Any], device: torch.device | str = "cpu", non_blocking: bool = False
                 ) -> torch.Tensor:
    """The model's input [B, 3, S, S] float32 from a batch: a uint8 batch is normalised here, on
    `device`, with exactly the float32 operations of `transforms.normalize` (bit-identical)."""
    x = batch["image"].to(device, non_blocking=non_blocking)
    if x.dtype != torch.uint8:
        return x
    mean = torch.tensor(transforms.IMAGENET_MEAN, dtype=torch.float32, device=x.device)
    std = torch.tensor(transforms.IMAGENET_STD, dtype=torch.float32, device=x.device)
    x = x.to(torch.float32) * (1.0 / 255.0)
    return ((x - mean) / std).permute(0, 3, 1, 2).contiguous()


def batch_targets(batch: dict[str, Any], kind: Literal["coords", "heatmap"], device: torch.device | str = "cpu",
                  non_blocking: bool = False) -> torch.Tensor:
    """Coordinates [B, K, 2], or heatmaps [B, K, h, h] (expanded here from their factors)."""
    if kind == "coords":
        return batch["coords"].to(device, non_blocking=non_blocking)
    if "heatmap" in batch:
        return batch["heatmap"].to(device, non_blocking=non_blocking)
    h = int(batch["heatmap_size"])
    gx, gy = (heatmaps.unpack_axes(batch[f"heatmap_{a}_start"].to(device, non_blocking=non_blocking),
                                   batch[f"heatmap_{a}"].to(device, non_blocking=non_blocking), h) for a in "xy")
    return heatmaps.expand_axes(gx, gy)


def collate(samples: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Stack samples; drop skip markers and list their dataset indices in `batch["skipped"]`.

    Runs inside DataLoader workers too, so the count travels with the batch rather than in a
    dataset attribute. A batch whose samples were all skipped holds only `index` (empty) and
    `skipped`.
    """
    if isinstance(samples, dict):   # a batch made whole by LandmarkDataset.__getitems__
        return samples
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
