"""The student's data: images of the teacher's input domain, augmented as in training.

Every random choice is a function of ``(seed, epoch, position)`` (as in
:class:`training.data.UnpairedSampler`), so a resumed run sees exactly the crops an
uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from training.data import DataError, Preprocess, augment, read_image, scan_images

SampleKey = tuple[int, int]  # (file index, augmentation seed)


def domain_folder(root: str | Path, direction: str, target: bool = False) -> Path:
    """The folder of one domain: ``root`` itself, or its ``trainA``/``trainB`` (the teacher's
    input domain, or with ``target`` the other one) when it has that layout."""
    root = Path(root)
    a, b = root / "trainA", root / "trainB"
    if a.is_dir() or b.is_dir():
        source_is_a = direction == "AtoB"
        return (b if source_is_a else a) if target else (a if source_is_a else b)
    if target:
        raise DataError(f"{root}: has no trainA/trainB layout; give the target domain's "
                        "images with --target")
    return root


class DomainDataset(Dataset):
    """``dataset[(index, seed)]`` -> ``(3, crop, crop)`` float in [-1, 1], RGB."""

    def __init__(self, folder: Path, preprocess: Preprocess) -> None:
        self.folder = folder
        self.files = scan_images(folder)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        index, seed = key
        gen = torch.Generator().manual_seed(seed)
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            try:
                return augment(read_image(path), self.preprocess, gen)
            except (OSError, ValueError, SyntaxError):
                continue  # undecodable despite the scan: the next file takes its place
        raise DataError(f"{self.folder}: no image could be decoded")


class DomainSampler(Sampler[SampleKey]):
    """One epoch of ``(file index, seed)`` keys in a random order, sharded across processes.

    ``length`` samples per epoch (default: one per file; more or fewer for the teacher cache's
    fixed set of crops, cycling over the files). ``fixed_crops``: every epoch reuses epoch 0's
    augmentation seeds, so the crops stay the same and only their order changes. ``start``
    skips keys already consumed (resume).
    """

    def __init__(self, n_files: int, length: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, fixed_crops: bool = False) -> None:
        self.n_files = n_files
        self.length = length or n_files
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.fixed_crops = fixed_crops
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def per_rank(self) -> int:
        return math.ceil(self.length / self.world_size)

    def __len__(self) -> int:
        return self.per_rank - self.start

    def keys(self) -> list[SampleKey]:
        order_gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=order_gen)
        seed_epoch = 0 if self.fixed_crops else self.epoch
        seed_gen = torch.Generator().manual_seed(self.seed * 999_983 + seed_epoch)
        seeds = torch.randint(0, 2**62, (self.length,), generator=seed_gen)
        padded = self.per_rank * self.world_size  # equal shares: pad by wrapping around
        picks = [i % self.length for i in range(padded)][self.rank::self.world_size]
        return [(int(order[i]) % self.n_files, int(seeds[int(order[i])])) for i in picks]

    def __iter__(self) -> Iterator[SampleKey]:
        return iter(self.keys()[self.start:])


def collate_keys(batch: list[tuple[SampleKey, torch.Tensor]]) -> dict[str, Any]:
    keys = [key for key, _ in batch]
    return {"keys": keys, "images": torch.stack([image for _, image in batch])}


class KeyedDataset(Dataset):
    """Returns ``(key, image)`` so that the teacher cache can be indexed by key."""

    def __init__(self, inner: DomainDataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: SampleKey) -> tuple[SampleKey, torch.Tensor]:
        return key, self.inner[key]
