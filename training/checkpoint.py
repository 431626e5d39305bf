"""Training checkpoints: one self-describing file, written atomically, read without pickle code.

A checkpoint is a dict of plain data (tensors, numbers, strings, lists, dicts)::

    format        "cyclegan-toolkit/checkpoint"
    version       CHECKPOINT_VERSION
    config        the full resolved TrainConfig as a dict
    step, epoch   optimisation steps done; epoch in progress (0-based)
    batch_in_epoch  batches of ``epoch`` already consumed (to resume mid-epoch)
    generators    {"G_AB": spec+state, "G_BA": spec+state}  (G: A->B, F: B->A)
    discriminators {"D_A": state, "D_B": state}
    optimizers    {"G": state, "D": state};  schedulers {"G": state, "D": state}
    pools         {"fake_A": [tensors], "fake_B": [tensors]}
    rng           torch CPU/CUDA generator states and the pools' Python RNG states

Every reader goes through :func:`load_torch_file`, i.e. ``torch.load(weights_only=True)``:
a file that would need to run code to unpickle is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "cyclegan-toolkit/checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(Exception):
    """A model or checkpoint file cannot be used; the message names the file and the reason."""


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Raises :class:`CheckpointError` for a missing or unreadable file, a file that is not a
    PyTorch file, and a pickle that would run code (refused by the weights-only unpickler).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise next to the one-line error we give.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: refused to load: it contains Python objects or code, not only weights "
                "(loaded with weights_only=True, nothing was executed)"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first})") from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes make the unpickler raise anything
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save to a temp file in the same directory, fsync, then rename over ``path``.

    A crash at any point leaves either the previous file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~current_umask())  # mkstemp's 0600 -> the usual mode
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def current_umask() -> int:
    """The process umask (reading it means setting it: call from one thread at a time)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint written by this package; validates format and version."""
    data = load_torch_file(path)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cyclegan-toolkit training checkpoint")
    if data.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {data['version']} is newer than this package "
            f"understands ({CHECKPOINT_VERSION}); upgrade cyclegan-toolkit"
        )
    return data


def is_training_checkpoint(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT
