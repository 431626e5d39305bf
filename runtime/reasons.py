"""One line of an exception for the user: what failure summaries and error messages print."""

from __future__ import annotations

import zipfile
from pathlib import Path


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def typed_first_line(exc: BaseException) -> str:
    """``"ClassName: first line"`` (the class name alone when there is no message): for
    failures whose message may not say what kind of error it was (``KeyError: 'x'``)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def not_a_file(path: Path) -> str:
    """``"PATH: why"`` for a ``path`` that was to be a file and is none (:func:`why_no_file`)."""
    return f"{path}: {why_no_file(path)}"


def why_no_file(path: Path) -> str:
    """Why ``path``, which was to be a file, is none: "is a folder", "no such file", "a broken
    link (its target does not exist)" or "not a regular file (a pipe, socket or device)"."""
    if path.is_dir():
        return "is a folder"
    if path.is_symlink() and not path.exists():
        return "a broken link (its target does not exist)"
    if not path.exists():
        return "no such file"
    return "not a regular file (a pipe, socket or device)"


def not_onnx_reason(path: Path) -> str | None:
    """Why ``path``, an existing file that onnxruntime could not load, is no ONNX model, when
    its first bytes tell: a PyTorch checkpoint (a zip archive with data.pkl, or a pickle), so
    the advice can be to export it first. None when they do not tell."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            if head == b"PK\x03\x04":
                with zipfile.ZipFile(handle) as archive:
                    torch_file = any(name.rsplit("/", 1)[-1] == "data.pkl"
                                     for name in archive.namelist())
            else:  # a pickle (torch.save's legacy format, any protocol)
                torch_file = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03",
                                                                   b"\x04", b"\x05")
    except (OSError, zipfile.BadZipFile):  # unreadable, or a zip that is not one
        return None
    if not torch_file:
        return None
    return (f"is a PyTorch file, not an ONNX model: export it first (cyclegan-export "
            f"{path} {path.with_suffix('.onnx').name})")

