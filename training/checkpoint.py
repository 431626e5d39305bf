"""Training checkpoints: one self-describing file, written atomically, read without pickle code.

A checkpoint is a dict of plain data (tensors, numbers, strings, lists, dicts)::

    format        "cyclegan-toolkit/checkpoint"
    version       CHECKPOINT_VERSION
    config        the full resolved TrainConfig as a dict
    run_id        the run it belongs to (see training/run_dir.py); absent in older files
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

import hashlib
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "cyclegan-toolkit/checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(Exception):
    """A model or checkpoint file cannot be used; the message names the file and the reason."""


# The first bytes of what torch.save writes: a zip archive (the default since PyTorch 1.6) or,
# for older files such as the official pretrained generators, a pickle (protocol 2: 0x80 0x02).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
# torch.save's legacy (non-zip) format opens with a pickle (protocol 2 by default, any with
# pickle_protocol=) of this magic number: a LONG1 opcode of 10 bytes.
_TORCH_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_HEAD_BYTES = 32  # enough for the magic after a protocol 4/5 pickle's frame header
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_NOT_TENSORFLOW = ("this toolkit reads PyTorch weights (the TensorFlow tutorial's pix2pix U-Net "
                   "is cyclegan-train --generator unet_256)")
# An ONNX file is a protobuf ModelProto: field 1 (ir_version, varint; tag byte 0x08) comes
# first, then a small version number and the tag of another ModelProto field.
_ONNX_NEXT_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72})


def _looks_like_onnx(path: Path, head: bytes) -> bool:
    if head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        return False
    if path.suffix.lower() == ".onnx":
        return True
    return len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_NEXT_TAGS


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Raises :class:`CheckpointError` naming the file and the real reason: missing, a directory,
    empty, an ONNX model, not a PyTorch file, or a pickle that would run code (refused by the
    weights-only unpickler, never executed).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            raise CheckpointError(f"{path}: is a TensorFlow SavedModel; {_NOT_TENSORFLOW}")
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if _looks_like_onnx(path, head):
        raise CheckpointError(f"{path}: is an ONNX model, not a PyTorch checkpoint (ONNX files "
                              "are what cyclegan-export writes; give the .pt/.pth it came from)")
    if head.startswith(_HDF5_MAGIC):
        raise CheckpointError(f"{path}: is an HDF5 file (Keras weights?); {_NOT_TENSORFLOW}")
    if head.startswith(_ZIP_MAGIC):
        _check_zip(path)
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise next to the one-line error we give.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - garbage bytes make the unpickler raise anything
        raise CheckpointError(f"{path}: {_load_failure_reason(exc, head)}") from None


def _check_zip(path: Path) -> None:
    """Refuse a zip-format file whose archive is cut short or whose bytes were changed (each
    member's CRC-32, which torch.load does not check: flipped bytes would load as weights), or
    that is a TorchScript or Keras archive rather than torch.save's weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
                raise CheckpointError(
                    f"{path}: is a TorchScript archive (torch.jit.save), not weights: in a "
                    "trusted environment, save torch.jit.load(path).state_dict() with "
                    "torch.save and give that file")
            if "config.json" in names and any(name.endswith(".weights.h5") for name in names):
                raise CheckpointError(f"{path}: is a Keras model; {_NOT_TENSORFLOW}")
            if not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names):
                raise CheckpointError(f"{path}: is a zip archive but not a PyTorch file (no "
                                      "data.pkl inside)")
            # torch.save may be told not to compute CRCs (serialization config
            # compute_crc32=False): all zero, nothing to check.
            checked = any(info.CRC for info in archive.infolist())
            damaged = archive.testzip() if checked else None
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
            zlib.error) as exc:
        raise CheckpointError(f"{path}: is truncated or damaged (its zip archive cannot be "
                              f"read: {_first_line(exc)})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: is damaged: the checksum of {damaged} does not match "
                              "its bytes (a bad copy or download?)")


def _load_failure_reason(exc: Exception, head: bytes) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words, from its exception."""
    message = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in message.upper():
        # The weights-only unpickler met a reference to a Python callable or class.
        return ("refused to load: it contains Python objects or code, not only weights "
                "(loaded with weights_only=True, nothing was executed)")
    if head.startswith(_ZIP_MAGIC):
        # Only torch's first sentence: the rest advises weights_only=False, which we never do.
        return (f"is a zip archive but not a PyTorch file "
                f"({_first_line(exc).split('. ')[0].rstrip('.')})")
    if not head.startswith(_PICKLE_MAGIC):
        return "is not a PyTorch file (neither the zip nor the pickle format torch.save writes)"
    if _TORCH_LEGACY_MAGIC not in head:
        return ("is a plain Python pickle (as pickle.dump writes), not a file torch.save "
                "wrote; it was not loaded, since unpickling it could run code")
    if head[1:2] in (b"\x04", b"\x05"):
        # torch.save(..., _use_new_zipfile_serialization=False, pickle_protocol=4)
        return ("is in torch.save's legacy format with pickle protocol "
                f"{head[1]}, which weights-only loading cannot read; in a trusted "
                "environment, load it and save it again with plain torch.save(obj, path)")
    # torch.save's legacy format, but damaged or holding what weights_only refuses.
    reason = message.split("WeightsUnpickler error:")[-1] if isinstance(
        exc, pickle.UnpicklingError) else _first_line(exc)
    detail = next((line.strip() for line in reason.splitlines() if line.strip()),
                  type(exc).__name__)
    return ("is damaged or not a PyTorch file (torch.save's legacy pickle format, but "
            f"torch.load could not read it safely: {detail})")


def checkpoint_step(path: Path) -> int | None:
    """The ``step`` of the training checkpoint at ``path``, None when there is none or it
    cannot be read. Memory-mapped: the weights are not read."""
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["step"])
    except Exception:  # noqa: BLE001 - unreadable or not ours: no step to compare
        return None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names the file and why. Nothing is
    left of it: the previous file at that path, if any, is untouched."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Save to a temp file in the same directory, fsync, then rename over ``path``.

    A crash at any point leaves either the previous file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = temp_affixes(path.name)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~current_umask())  # mkstemp's 0600 -> the usual mode
        os.replace(tmp_name, path)
    except (OSError, RuntimeError) as exc:
        Path(tmp_name).unlink(missing_ok=True)
        # torch.save reports a short write as "[enforce fail at inline_container.cc] unexpected
        # pos": name the file, and the full disk that is nearly always the cause.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
        if isinstance(exc, RuntimeError) and shutil.disk_usage(path.parent).free < (64 << 20):
            reason = "No space left on device"
        raise CheckpointWriteError(f"{path}: cannot write ({reason})") from exc
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def temp_affixes(name: str) -> tuple[str, str]:
    """``(prefix, suffix)`` of the temp file an atomic write of ``name`` goes through.

    ``mkstemp`` puts 8 random characters between them: ``.latest.pt.k3j9_x0a.tmp``. Hidden, so
    a folder listing (or a data scan) passes over it; :func:`temp_file_pattern` matches it.
    """
    return f".{name}.", ".tmp"


def temp_file_pattern(name_regex: str) -> re.Pattern[str]:
    """Full-match pattern of the temp files :func:`temp_affixes` names for targets that match
    ``name_regex`` (e.g. ``r"latest\\.pt|step_\\d+\\.pt"``): only our own leftovers match it."""
    # CPython's mkstemp: 8 characters of a-z, 0-9 and "_" between prefix and suffix.
    return re.compile(rf"\.(?:{name_regex})\.[a-z0-9_]{{8}}\.tmp")


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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks): which file a model came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
