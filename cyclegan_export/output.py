"""Where an export goes: never onto its source, never over a file we did not write.

:func:`check_output` runs before any work (and without torch, so ``cyclegan-export`` refuses
at once): the output must not be the source, and an existing file there may be replaced only
when it is an earlier export of ours (an ONNX model with cyclegan-toolkit metadata).
:func:`remove_stale_temps` clears the temp files a killed export left next to its outputs;
:func:`lock_temp` marks a temp file as in use, so a concurrent export never removes it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: temp files are judged by age alone
    fcntl = None  # type: ignore[assignment]

# The exporter's temp files: mkstemp(prefix=".NAME.", suffix=".tmp") in the output's folder,
# 8 random characters of a-z, 0-9 and "_" in between (CPython's tempfile).
_TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
# Bytes a file that cannot be an ONNX model starts with: torch.save's zip or pickle formats.
_NOT_ONNX_MAGIC = (b"PK\x03\x04", b"\x80")


class OutputError(ValueError):
    """The output path cannot be written as asked; the message names it and the reason."""


def temp_affixes(output: Path) -> tuple[str, str]:
    """``(prefix, suffix)`` of the temp file an export to ``output`` is written through."""
    return f".{output.name}.", ".tmp"


def _is_our_export(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            if handle.read(4).startswith(_NOT_ONNX_MAGIC):
                return False  # a checkpoint: no need to ask onnxruntime
    except OSError:
        return False
    from runtime.metadata import MetadataError, read_metadata

    try:
        read_metadata(path)
    except MetadataError:
        return False
    return True


def check_output(source: Path, output: Path) -> None:
    """Refuse (:class:`OutputError`) an output that is the source, a folder, or an existing
    file that is not an earlier cyclegan-export model. Reads, never writes."""
    if output.is_dir():
        raise OutputError(f"{output}: is a directory; give a file name such as model.onnx")
    if output.exists() or output.is_symlink():
        try:
            same = source.exists() and os.path.samefile(source, output)
        except OSError:
            same = False
        if same:
            raise OutputError(f"{output}: is the file being exported ({source}); writing the "
                              "ONNX model there would destroy it: choose another output name")
        if not _is_our_export(output):
            raise OutputError(f"{output}: exists and is not a model exported by cyclegan-export; "
                              "refusing to replace it: remove it or choose another output name")


def lock_temp(fd: int) -> None:
    """Hold an advisory lock on an open temp file: it is in use until the descriptor closes."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def in_use(path: Path) -> bool:
    """Whether another process holds ``path`` locked (:func:`lock_temp`); True when it cannot
    be opened to tell (leave it), False where locks cannot be taken."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True  # cannot tell: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the lock we may have taken
    return False


def remove_stale_temps(output: Path, started: float | None = None) -> list[Path]:
    """Remove the exporter's temp files that a killed export left in ``output``'s folder.

    Only names of our own pattern (``.NAME.XXXXXXXX.tmp`` for NAME = ``output``'s name or any
    ``*.onnx``), only files older than ``started`` (a wall-clock time; default: now) and not
    locked by a running export (see :func:`lock_temp`). Returns what was removed.
    """
    started = time.time() if started is None else started
    removed: list[Path] = []
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return removed
    for path in sorted(entries):
        match = _TEMP.fullmatch(path.name)
        if match is None or not (match["name"] == output.name
                                 or match["name"].lower().endswith(".onnx")):
            continue
        try:
            if (not path.is_file() or path.is_symlink()
                    or path.stat().st_mtime >= started or in_use(path)):
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed
