"""Face-crop cache: every face of an annotation file cropped once, with the margin its augmentation
can read, into one memory-mapped uint8 file that all DataLoader workers share.

Why: a real benchmark photo (WFLW's come from WIDER FACE at about 1024 px, 300W and AFLW reach
several megapixels) takes milliseconds to decode and area-filter, and the face is a small part of
it, while a GPU trains OCN-112 at thousands of images a second. The public PFLD/ATF code crops
faces offline for the same reason. Decoded full images kept per worker (the retired
`data.cache_images`) cost tens of GiB per worker on WFLW; pages of one mapped file are shared.

Two views of a file's faces (`Geometry.view`):
- "augment": a square around the crop box, `extent` times its side, so that every scale, shift,
  rotation and flip the augmentation can draw reads inside it (plus `PAD` pixels for the bilinear
  kernel), at the density the model reads at its strongest zoom-in, never above the photo's own.
  Training (and validation, carved from the training file) samples are warped from it with the
  same affine as from the photo: the same draws, so the same augmentation distribution; only the
  resampling differs (area-filtered once to that density, then bilinear; docs/design.md).
- "exact": the evaluation crop itself, S x S, warped from the photo by the very call the uncached
  path makes. A test set read through the cache gets bit-identical inputs, hence the same NME.

On disk, `<cache_dir>/<dataset>/<csv stem>.<view>-<key16>/`:
    pixels.npy   uint8 [total]: the crops (side x side x 3 each, RGB), back to back
    index.npz    offset [N] int64, side [N] int64, to_original [N, 2, 3] float64 (crop px -> photo
                 px), landmarks [N, K, 2] float32 (crop px), ok [N] bool (image read), rows [N] int64
                 (0-based data rows of the CSV)
    cache.json   key, version, geometry, counts, byte sizes, sha256 of index.npz; written last
The key hashes the CSV's bytes, the rows read, every image's size and modification time, and the
geometry. A cache is built under a temporary name and renamed into place, so a reader sees a whole
cache or none and two builders racing on shared storage leave one good copy; one that fails its
checks (stale key, torn or foreign files, links) is rebuilt, never read. Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import socket
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from atf import transforms
from atf.config import AugmentConfig

__all__ = ["VERSION", "PAD", "Geometry", "CropCache", "CacheError", "augment_geometry", "exact_geometry",
           "cache_key", "cache_folder", "plan_rows", "build", "open_cache", "ensure", "default_cache_dir"]

VERSION = 1
PAD = 3                      # cache pixels around the region the augmentation can read (bilinear taps)
MANIFEST, PIXELS, INDEX = "cache.json", "pixels.npy", "index.npz"
LANDMARK_TOLERANCE = 1e-2    # px: cached landmarks mapped back must land on the annotation's
MIN_PHOTOS_PER_WORKER = 32   # a build process costs ~2 s to start (it imports torch): fewer photos, fewer processes


class CacheError(RuntimeError):
    """A cache that cannot be built or used; the message names the folder or file."""


class _Invalid(Exception):
    """A cache folder that exists but must not be read (stale, torn, foreign); message says why."""


@dataclass(frozen=True)
class Geometry:
    """What a cache holds per face; part of its key."""
    view: Literal["augment", "exact"]
    crop: str                # data.crop (center_scale | box) or ocn_test (the OCN-code test crop)
    crop_margin: float
    input_size: int          # S: the model's input side
    extent: float = 1.0      # augment view: cache square side / crop side
    zoom: float = 1.0        # augment view: the smallest crop-side multiplier drawn (densest read)
    border: str = "constant"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["extent"], d["zoom"] = round(self.extent, 6), round(self.zoom, 6)
        return d


def augment_geometry(aug: AugmentConfig | None, crop: str, crop_margin: float, input_size: int,
                     border: str = "constant") -> Geometry:
    """The square every augmented crop of `aug` stays inside (transforms.sample_params' ranges).

    A crop of side s*side (s in [zoom, s_max]) centred within +-shift*s*side of the box centre and
    rotated by at most r reaches s*side*(shift + (|cos| + |sin|)/2) from it along each axis.
    """
    if aug is None or not aug.enabled:
        return Geometry("augment", crop, float(crop_margin), int(input_size), 1.0, 1.0, border)
    rc = aug.random_crop
    s_max = (1.0 + aug.scale) * (1.0 + rc / 2.0)
    zoom = (1.0 - aug.scale) * (1.0 - rc / 2.0)
    if not zoom > 0:
        raise CacheError(f"augment.scale {aug.scale} / random_crop {rc}: the crop can shrink to nothing")
    shift = aug.translate + rc / 2.0
    r = math.radians(min(abs(aug.rotation), 180.0)) if aug.rotation_prob > 0 else 0.0
    spread = math.sqrt(2.0) if r >= math.pi / 4 else math.cos(r) + math.sin(r)
    extent = 2.0 * s_max * (shift + spread / 2.0)
    return Geometry("augment", crop, float(crop_margin), int(input_size), extent, zoom, border)


def exact_geometry(crop: str, crop_margin: float, input_size: int, border: str = "constant") -> Geometry:
    return Geometry("exact", crop, float(crop_margin), int(input_size), 1.0, 1.0, border)


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/atf/crops (else ~/.cache/atf/crops): the user's own, so always writable and
    trusted; point data.cache_dir at shared storage to build once for every node (docs/cluster.md)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "atf" / "crops"


# -- keys and plans -----------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(ds, geometry: Geometry) -> str:
    """sha256 of the CSV's bytes, the rows read, each image's (name, size, mtime) and the geometry."""
    h = hashlib.sha256()
    src = Path(ds.aset.source)
    try:
        csv_hash = _sha256(src)
    except OSError as e:
        raise CacheError(f"{src}: cannot read the annotation file for the crop cache ({e.strerror})") from None
    h.update(json.dumps({"version": VERSION, "csv": csv_hash, "geometry": geometry.to_dict()},
                        sort_keys=True).encode())
    h.update(ds.aset.file_rows().tobytes())
    for name in dict.fromkeys(ds.aset.images):
        try:
            st = os.stat(ds.images_dir / name)
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\0missing\n".encode())
    return h.hexdigest()


def cache_folder(cache_dir: Path, ds, geometry: Geometry, key: str) -> Path:
    dataset = getattr(ds.aset, "dataset", "") or "data"
    return Path(cache_dir) / dataset / f"{Path(ds.aset.source).stem}.{geometry.view}-{key[:16]}"


def plan_rows(ds, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(to_cache [N, 2, 3] photo px -> cache px, side [N]) of every face of `ds` (no image read)."""
    n = len(ds)
    to_cache = np.zeros((n, 2, 3), dtype=np.float64)
    side = np.zeros(n, dtype=np.int64)
    identity = transforms.AugmentParams.identity()
    s = geometry.input_size
    for i in range(n):
        if geometry.view == "exact":
            to_cache[i], side[i] = ds.affine(i, identity), s
            continue
        cx, cy, crop_side = ds.crop_square(i)
        half = geometry.extent * crop_side / 2.0
        d = min(1.0, s / (crop_side * geometry.zoom))     # cache px per photo px
        if d >= 1.0:   # small face: the photo's own pixels, copied (integer offsets: no resampling)
            x0, y0 = math.floor(cx - half) - PAD, math.floor(cy - half) - PAD
            side[i] = math.ceil(2.0 * half) + 2 * PAD + 2
            to_cache[i] = [[1.0, 0.0, -x0], [0.0, 1.0, -y0]]
        else:          # large face: area-filtered down to the density the model reads
            side[i] = math.ceil(2.0 * half * d) + 2 * PAD
            c = side[i] / 2.0 - 0.5
            to_cache[i] = [[d, 0.0, c - d * cx], [0.0, d, c - d * cy]]
    return to_cache, side


# -- building -----------------------------------------------------------------------------------

def _draw_image(task: tuple[str, str, str, list[tuple[int, list[float], int, int]]]) -> list[tuple[int, bool]]:
    """Worker: decode one photo, warp each of its faces into the pixels file at its offset."""
    import cv2
    cv2.setNumThreads(1)
    pixels_path, image_path, border, faces = task
    img = transforms.load_image(Path(image_path))
    out = []
    mm = np.load(pixels_path, mmap_mode="r+") if img is not None else None
    for row, t, n, offset in faces:
        if img is not None:
            crop = transforms.warp(img, np.asarray(t, dtype=np.float64).reshape(2, 3), n, border)
            mm[offset:offset + n * n * 3] = crop.reshape(-1)
        out.append((row, img is not None))
    del mm   # written through the shared mapping; `build` syncs the file once, before its manifest
    return out


def _tasks(ds, pixels: Path, to_cache: np.ndarray, side: np.ndarray, offset: np.ndarray) -> list:
    """One task per photo (a photo with several faces is decoded once)."""
    by_image: dict[str, list] = {}
    for i, name in enumerate(ds.aset.images):
        by_image.setdefault(name, []).append((i, to_cache[i].reshape(-1).tolist(), int(side[i]), int(offset[i])))
    return [(str(pixels), str(ds.image_path(faces[0][0])), ds.border, faces) for faces in by_image.values()]


def build(ds, geometry: Geometry, folder: Path, key: str, workers: int = 1,
          log: Callable[[str], None] | None = None) -> Path:
    """Write the cache of `ds` (its whole AnnotationSet) into the new folder `folder`; returns it."""
    t0 = time.perf_counter()
    to_cache, side = plan_rows(ds, geometry)
    sizes = side * side * 3
    offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(side) else np.zeros(0, np.int64)
    folder.mkdir(parents=True)
    pixels = folder / PIXELS
    np.lib.format.open_memmap(pixels, mode="w+", dtype=np.uint8, shape=(int(sizes.sum()),)).flush()
    tasks = _tasks(ds, pixels, to_cache, side, offset)
    ok = np.zeros(len(ds), dtype=bool)
    if workers > 1 and len(tasks) >= MIN_PHOTOS_PER_WORKER * 2:  # spawn: safe whatever threads torch started
        workers = min(workers, len(tasks) // MIN_PHOTOS_PER_WORKER)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            results = pool.map(_draw_image, tasks, chunksize=max(1, len(tasks) // (8 * workers)))
            for res in results:
                for row, good in res:
                    ok[row] = good
    else:
        for task in tasks:
            for row, good in _draw_image(task):
                ok[row] = good
    with pixels.open("rb+") as f:
        os.fsync(f.fileno())   # the pixels are on disk before the manifest that vouches for them
    to_original = np.stack([transforms.invert_affine(t) for t in to_cache]) if len(ds) else np.zeros((0, 2, 3))
    pts = np.stack([transforms.transform_points(ds.aset.landmarks[i].astype(np.float64), to_cache[i])
                    for i in range(len(ds))]).astype(np.float32) if len(ds) else np.zeros((0, 0, 2), np.float32)
    np.savez(folder / INDEX, offset=offset, side=side, to_original=to_original, landmarks=pts, ok=ok,
             rows=ds.aset.file_rows())
    manifest = {"version": VERSION, "key": key, "geometry": geometry.to_dict(), "source": ds.aset.source,
                "faces": len(ds), "readable": int(ok.sum()), "pixel_bytes": int(sizes.sum()),
                "pixels_file_bytes": pixels.stat().st_size, "index_sha256": _sha256(folder / INDEX),
                "built_by": f"{getpass.getuser()}@{socket.gethostname()}", "built_at": time.time(),
                "seconds": round(time.perf_counter() - t0, 3)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if log is not None:
        log(f"crop cache: {len(ds)} faces of {ds.aset.source} ({geometry.view} view, {geometry.crop} crop, "
            f"{sizes.sum() / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
    return folder


# -- reading ------------------------------------------------------------------------------------

class CropCache:
    """An opened, checked cache: small index arrays in memory, the pixels mapped on first use.

    Pickles without the mapping (a DataLoader worker started by spawn maps the file itself; a forked
    one shares the parent's), so every worker reads the same page-cache pages.
    """

    def __init__(self, folder: Path, manifest: dict, index: dict[str, np.ndarray]) -> None:
        self.folder, self.manifest = folder, manifest
        self.offset, self.side = index["offset"], index["side"]
        self.to_original, self.landmarks = index["to_original"], index["landmarks"]
        self.ok, self.rows = index["ok"], index["rows"]
        self._pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offset)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.load(self.folder / PIXELS, mmap_mode="r")
        return self._pixels

    def crop(self, pos: int) -> np.ndarray:
        """[side, side, 3] uint8 RGB view of face `pos` (no copy)."""
        n, o = int(self.side[pos]), int(self.offset[pos])
        return self.pixels[o:o + n * n * 3].reshape(n, n, 3)

    def positions(self, file_rows: np.ndarray) -> np.ndarray:
        """Cache positions of the faces read from these CSV data rows (CacheError when absent)."""
        pos = np.searchsorted(self.rows, file_rows)
        pos = np.minimum(pos, max(len(self.rows) - 1, 0))
        missing = np.flatnonzero(self.rows[pos] != file_rows) if len(self.rows) else np.arange(len(file_rows))
        if missing.size:
            raise CacheError(f"{self.folder}: holds no face of CSV data row {int(file_rows[missing[0]]) + 1}")
        return pos


def _read_manifest(folder: Path, key: str) -> dict:
    if folder.is_symlink() or not folder.is_dir():
        raise _Invalid("not a plain folder")
    for name in (MANIFEST, PIXELS, INDEX):
        if (folder / name).is_symlink() or not (folder / name).is_file():
            raise _Invalid(f"{name} is missing or not a plain file")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise _Invalid(f"unreadable {MANIFEST} ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION or manifest.get("key") != key:
        raise _Invalid("made for other data, settings or format (stale key)")
    if (folder / PIXELS).stat().st_size != manifest.get("pixels_file_bytes"):
        raise _Invalid(f"{PIXELS} has {(folder / PIXELS).stat().st_size} bytes, the manifest says "
                       f"{manifest.get('pixels_file_bytes')} (torn)")
    if _sha256(folder / INDEX) != manifest.get("index_sha256"):
        raise _Invalid(f"{INDEX} does not match its checksum (torn)")
    return manifest


def _check_index(index: dict[str, np.ndarray], manifest: dict, ds) -> None:
    n = len(ds)
    shapes = {"offset": (n,), "side": (n,), "to_original": (n, 2, 3), "ok": (n,), "rows": (n,),
              "landmarks": (n, *ds.aset.landmarks.shape[1:]) if n else None}
    for name, shape in shapes.items():
        if name not in index or (shape is not None and index[name].shape != shape):
            raise _Invalid(f"{INDEX}: {name} missing or not of shape {shape} (another file's cache)")
    end = index["offset"] + index["side"] ** 2 * 3
    if n and (index["offset"].min() < 0 or end.max() > manifest["pixel_bytes"] or index["side"].min() < 1):
        raise _Invalid(f"{INDEX}: crops outside {PIXELS} (torn)")
    if not np.array_equal(index["rows"], ds.aset.file_rows()):
        raise _Invalid("covers other rows of the CSV")
    if n:
        back = np.einsum("nkj,nij->nki", index["landmarks"].astype(np.float64), index["to_original"][:, :, :2]) \
            + index["to_original"][:, None, :, 2]
        err = np.abs(back - ds.aset.landmarks.astype(np.float64)).max()
        if not err <= LANDMARK_TOLERANCE * max(1.0, float(np.abs(ds.aset.landmarks).max()) / 1000.0):
            raise _Invalid(f"its landmarks map back {err:.3g} px away from the annotation's (another file's cache)")


def open_cache(folder: Path, key: str, ds) -> CropCache:
    """The checked cache in `folder` for `ds`; FileNotFoundError when absent, _Invalid when unusable."""
    if not folder.exists() and not folder.is_symlink():
        raise FileNotFoundError(folder)
    manifest = _read_manifest(folder, key)
    try:
        with np.load(folder / INDEX, allow_pickle=False) as z:
            index = {k: z[k] for k in z.files}
        header = np.load(folder / PIXELS, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise _Invalid(f"unreadable arrays ({e})") from None
    if header.dtype != np.uint8 or header.shape != (manifest.get("pixel_bytes"),):
        raise _Invalid(f"{PIXELS} is not uint8 [{manifest.get('pixel_bytes')}] (torn)")
    _check_index(index, manifest, ds)
    return CropCache(folder, manifest, index)


def _publish(tmp: Path, folder: Path, key: str, ds) -> None:
    """Rename the new cache into place; a good copy that won the race is kept, a bad one replaced."""
    for _ in range(5):
        try:
            os.rename(tmp, folder)
            return
        except OSError:
            if not folder.exists() and not folder.is_symlink():
                continue
        try:
            open_cache(folder, key, ds)
            shutil.rmtree(tmp, ignore_errors=True)   # another builder won with a good copy
            return
        except (_Invalid, FileNotFoundError):
            aside = folder.with_name(f".{folder.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(folder, aside)
            except OSError:
                continue
            if aside.is_symlink():
                aside.unlink()
            else:
                shutil.rmtree(aside, ignore_errors=True)
    raise CacheError(f"{folder}: could not put the new crop cache in place (folder keeps changing)")


def _sweep_temporaries(parent: Path, name: str, older_than: float = 6 * 3600) -> None:
    """Remove temporaries of `name` left by builders that died (older than six hours)."""
    now = time.time()
    for p in parent.glob(f".{name}.tmp-*"):
        try:
            if now - p.lstat().st_mtime > older_than and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def ensure(ds, geometry: Geometry, cache_dir: Path, workers: int = 1,
           log: Callable[[str], None] | None = None) -> CropCache:
    """The cache of `ds` (a dataset over a whole annotation file): opened when a good one exists,
    else built (under a temporary name, then renamed into place) and opened."""
    key = cache_key(ds, geometry)
    folder = cache_folder(Path(cache_dir), ds, geometry, key)
    try:
        return open_cache(folder, key, ds)
    except FileNotFoundError:
        pass
    except _Invalid as e:
        if log is not None:
            log(f"crop cache {folder}: {e}; rebuilding it")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheError(f"{folder.parent}: cannot create the crop cache folder ({e.strerror}); "
                         "set data.cache_dir to a writable folder") from None
    _sweep_temporaries(folder.parent, folder.name)
    tmp = folder.with_name(f".{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        build(ds, geometry, tmp, key, workers, log)
        _publish(tmp, folder, key, ds)
    except OSError as e:
        raise CacheError(f"{folder}: cannot write the crop cache ({e})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        return open_cache(folder, key, ds)
    except (_Invalid, FileNotFoundError) as e:
        raise CacheError(f"{folder}: the crop cache just built does not read back ({e})") from None
