"""Unpaired image data: DATAROOT/trainA and DATAROOT/trainB, any common image format.

Every random choice (which A, which B, crop offsets, flips) is drawn by
:class:`UnpairedSampler` from ``(seed, epoch)`` and handed to the dataset as a per-sample seed,
so a batch depends only on the seed, the epoch and its position in the epoch: not on the
number of DataLoader workers, and not on whether the run was interrupted and resumed.
Images come out as float32 ``(C, H, W)`` RGB tensors in [-1, 1].
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from training.run_dir import is_run_folder

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif",
})


class DataError(ValueError):
    """A data folder that cannot be trained on (missing, empty, nothing readable)."""


class SkippedFilesWarning(UserWarning):
    """Some files in a data folder were skipped; the message names them and why."""


class TranslatedImagesWarning(UserWarning):
    """A data folder holds a ``cyclegan-run`` output folder: its translations are read as
    training images (meant, for a data set made by translating; else a mix-up)."""


# What cyclegan-run records in an output folder (runtime.media.manifest.MANIFEST_NAME; training
# imports nothing of the runtime, so the name is repeated here).
RUN_OUTPUT_MANIFEST = ".cyclegan-run.jsonl"


def loader_workers(requested: int) -> int:
    """DataLoader worker processes for ``requested``: at most the cores this process may run
    on (its affinity set: a container's or taskset's limit). More only compete with the
    training step for the same cores, and PyTorch warns about each loader that asks for more.
    The data order does not depend on the count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(requested, max(1, cores)))


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any PIL image to an ``(H, W, 3)`` uint8 RGB array.

    Grayscale and palette images are expanded, alpha is dropped (as the official code does),
    16-bit and 32-bit integer images are scaled from 0..65535 and float images from 0..1.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy wants


def read_image(path: str | Path) -> torch.Tensor:
    """Decode one file to a ``(3, H, W)`` uint8 RGB tensor, EXIF orientation applied.

    Raises ``OSError`` (or ``UnidentifiedImageError``) for unreadable files.
    """
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image.load()
        array = to_rgb_array(image)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def _check_image(path: Path) -> str | None:
    """Return why ``path`` cannot be used as a training image, or None if it looks fine."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image"
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as image:
            image.verify()  # header and structure checks without a full decode
    except UnidentifiedImageError:
        return "not a recognised image"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable ({exc})"
    return None


def candidate_files(folder: Path, unusable: list[str] | None = None) -> list[Path]:
    """Every file under ``folder`` (recursive, sorted) that could be a training image.

    Links to folders are followed (each folder once: a link loop or a second link to the
    same folder adds nothing). Passed over without a word: hidden files and folders
    (``.DS_Store``, ``._x.jpg``, temp files of atomic writes) and run folders
    (:func:`training.run_dir.is_run_folder`): a run folder placed inside the data must never
    feed its own samples back as training images. Broken links, pipes and devices are added
    to ``unusable`` as ``"NAME (why)"``, when given. A ``cyclegan-run`` output folder inside is
    read, with a :class:`TranslatedImagesWarning` naming it.
    """
    found: list[Path] = []
    walked: set[str] = set()
    translated: list[str] = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        here = Path(top)
        real = os.path.realpath(here)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not is_run_folder(here / d)]
        if RUN_OUTPUT_MANIFEST in names and here != folder:
            translated.append(str(here.relative_to(folder)))
        for name in names:
            path = here / name
            if name.startswith("."):
                continue
            if path.is_file():
                found.append(path)
            elif unusable is not None:
                why = ("a broken link" if path.is_symlink() and not path.exists()
                       else "not a regular file")
                unusable.append(f"{path.relative_to(folder)} ({why})")
    if translated:
        warnings.warn(f"{folder}: {', '.join(translated)}: cyclegan-run output folder(s); "
                      "their translated images are read as training images (move them out if "
                      "that is not meant)", TranslatedImagesWarning, stacklevel=2)
    return sorted(found)


def scan_images(folder: Path, max_files: int = 0) -> list[Path]:
    """Sorted, readable image files under ``folder`` (recursive; see :func:`candidate_files`).

    Skipped files are reported in one :class:`SkippedFilesWarning` that names each with its
    reason. Raises :class:`DataError` when the folder is missing or holds no usable image.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected DATAROOT/trainA and DATAROOT/trainB)")
    good: list[Path] = []
    skipped: list[str] = []
    for path in candidate_files(folder, skipped):
        reason = _check_image(path)
        if reason is None:
            good.append(path)
        else:
            skipped.append(f"{path.relative_to(folder)} ({reason})")
    if skipped:
        shown = "; ".join(skipped[:20]) + (f"; and {len(skipped) - 20} more" if len(skipped) > 20
                                           else "")
        warnings.warn(f"{folder}: skipped {len(skipped)} file(s): {shown}", SkippedFilesWarning,
                      stacklevel=2)
    if not good:
        why = f"{len(skipped)} file(s) skipped" if skipped else "folder is empty"
        raise DataError(f"{folder}: no readable images ({why})")
    return good[:max_files] if max_files > 0 else good


# ---- preprocessing: uint8 (3, H, W) -> uint8 (3, h, w), randomness from `gen` --------------

@dataclass(frozen=True)
class Preprocess:
    mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    size_multiple: int = 4  # the generator's input size rule, used when no crop fixes the size
    min_size: int = 8       # the generator's smallest input side


def _resize(image: torch.Tensor, size: list[int]) -> torch.Tensor:
    return TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)


def _random_crop(image: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    height, width = image.shape[-2:]
    if height < size or width < size:  # too small to crop: scale up the short side first
        scale = size / min(height, width)
        image = _resize(image, [max(size, math.ceil(height * scale)),
                                max(size, math.ceil(width * scale))])
        height, width = image.shape[-2:]
    top = int(torch.randint(0, height - size + 1, (1,), generator=gen))
    left = int(torch.randint(0, width - size + 1, (1,), generator=gen))
    return TF.crop(image, top, left, size, size)


def _scale_width(image: torch.Tensor, width: int) -> torch.Tensor:
    old_h, old_w = image.shape[-2:]
    return _resize(image, [max(1, round(old_h * width / old_w)), width])


def _to_multiple(image: torch.Tensor, multiple: int, minimum: int = 1) -> torch.Tensor:
    height, width = image.shape[-2:]
    floor = max(multiple, -(-minimum // multiple) * multiple)
    new_h = max(floor, round(height / multiple) * multiple)
    new_w = max(floor, round(width / multiple) * multiple)
    return image if (new_h, new_w) == (height, width) else _resize(image, [new_h, new_w])


def _resize_and_crop(image: torch.Tensor, p: Preprocess, gen: torch.Generator) -> torch.Tensor:
    return _random_crop(_resize(image, [p.load_size, p.load_size]), p.crop_size, gen)


def _crop(image: torch.Tensor, p: Preprocess, gen: torch.Generator) -> torch.Tensor:
    return _random_crop(image, p.crop_size, gen)


def _scale_width_only(image: torch.Tensor, p: Preprocess, gen: torch.Generator) -> torch.Tensor:
    return _to_multiple(_scale_width(image, p.load_size), p.size_multiple, p.min_size)


def _scale_width_and_crop(image: torch.Tensor, p: Preprocess,
                          gen: torch.Generator) -> torch.Tensor:
    return _random_crop(_scale_width(image, max(p.load_size, p.crop_size)), p.crop_size, gen)


def _none(image: torch.Tensor, p: Preprocess, gen: torch.Generator) -> torch.Tensor:
    return _to_multiple(image, p.size_multiple, p.min_size)


# Official --preprocess names -> functions.
PREPROCESSORS: dict[str, Callable[[torch.Tensor, Preprocess, torch.Generator], torch.Tensor]] = {
    "resize_and_crop": _resize_and_crop,
    "crop": _crop,
    "scale_width": _scale_width_only,
    "scale_width_and_crop": _scale_width_and_crop,
    "none": _none,
}


def augment(image: torch.Tensor, p: Preprocess, gen: torch.Generator) -> torch.Tensor:
    """Apply the preprocessing mode, then the random flip; uint8 in, float [-1, 1] out."""
    image = PREPROCESSORS[p.mode](image, p, gen)
    flip = bool(torch.rand((), generator=gen) < 0.5)
    if p.flip and flip:
        image = TF.horizontal_flip(image)
    return to_model_range(image)


def to_model_range(image: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the official Normalize((0.5,)*3, (0.5,)*3))."""
    return image.to(torch.float32).div_(127.5).sub_(1.0)


def center_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """Deterministic view for sample grids: short side resized to ``size``, centre crop."""
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    image = _resize(image, [max(size, round(height * scale)), max(size, round(width * scale))])
    return to_model_range(TF.center_crop(image, [size, size]))


# ---- dataset and sampler --------------------------------------------------------------------

SampleKey = tuple[int, int, int]  # (index into A, index into B, per-sample seed)


class UnpairedDataset(Dataset):
    """``dataset[(ia, ib, seed)]`` -> ``{"A": (3,H,W), "B": (3,H,W), "A_path", "B_path"}``.

    Files that pass the scan but fail to decode (e.g. truncated JPEGs) are replaced by the
    next readable file of the same domain, with one warning naming them.
    """

    def __init__(self, root: str | Path, preprocess: Preprocess, max_files: int = 0) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root}: is a file; give the data folder that holds trainA/ "
                            "and trainB/")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such data folder")
        self.files_a = scan_images(self.root / "trainA", max_files)
        self.files_b = scan_images(self.root / "trainB", max_files)
        self.preprocess = preprocess
        self._broken: set[Path] = set()

    def __len__(self) -> int:
        # As in the official code: an epoch visits the larger domain once.
        return max(len(self.files_a), len(self.files_b))

    def _load(self, files: list[Path], index: int) -> tuple[torch.Tensor, Path]:
        for offset in range(len(files)):
            path = files[(index + offset) % len(files)]
            if path in self._broken:
                continue
            try:
                return read_image(path), path
            except (OSError, ValueError, SyntaxError) as exc:
                self._broken.add(path)
                warnings.warn(f"{path}: skipped, cannot decode ({exc})", SkippedFilesWarning,
                              stacklevel=2)
        raise DataError(f"{files[0].parent}: no image could be decoded")

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        index_a, index_b, seed = key
        gen = torch.Generator().manual_seed(seed)
        image_a, path_a = self._load(self.files_a, index_a)
        image_b, path_b = self._load(self.files_b, index_b)
        return {
            "A": augment(image_a, self.preprocess, gen),
            "B": augment(image_b, self.preprocess, gen),
            "A_path": str(path_a),
            "B_path": str(path_b),
        }


def batches_into_epoch(batches: int, batch_size: int, saved_world: int, world: int) -> int:
    """Each process's position in an epoch (``batches`` of ``batch_size``, counted per
    process) when ``saved_world`` processes become ``world``. :class:`UnpairedSampler` deals
    one permutation out in turn, so what was used is its first ``batches x batch_size x
    saved_world`` samples: the new position covers as many of those as whole steps of
    ``world`` processes do (a few samples may come again, none is skipped)."""
    if saved_world == world:
        return batches
    return batches * batch_size * saved_world // (batch_size * world)


class UnpairedSampler(Sampler[SampleKey]):
    """Yields ``(index_a, index_b, seed)`` for one epoch, sharded across processes.

    A is visited in a random order (``index % len(A)`` over ``max(len A, len B)`` draws), B is
    drawn at random (unpaired), each sample gets its own augmentation seed. Everything is a
    function of ``(seed, epoch)``; ``start`` skips samples already consumed (resume).
    """

    def __init__(self, len_a: int, len_b: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.len_a, self.len_b = len_a, len_b
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def samples_per_epoch(self) -> int:
        """Samples each rank sees in a full epoch (the larger domain, split across ranks)."""
        return math.ceil(max(self.len_a, self.len_b) / self.world_size)

    def __len__(self) -> int:
        return self.samples_per_epoch - self.start

    def keys(self) -> list[SampleKey]:
        total = max(self.len_a, self.len_b)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(total, generator=gen)
        b_draws = torch.randint(0, self.len_b, (total,), generator=gen)
        seeds = torch.randint(0, 2**62, (total,), generator=gen)
        padded = self.samples_per_epoch * self.world_size  # equal shares: pad by wrapping around
        picks = [i % total for i in range(padded)][self.rank::self.world_size]
        return [(int(order[i]) % self.len_a, int(b_draws[i]), int(seeds[i])) for i in picks]

    def __iter__(self) -> Iterator[SampleKey]:
        return iter(self.keys()[self.start:])
