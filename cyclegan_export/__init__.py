"""Checkpoint to verified, self-describing ONNX.

``export_onnx(source, output, ...)`` returns an :class:`ExportReport` with every verification
figure; ``cyclegan-export`` is its command line. The names below are imported on first use, so
importing the package (as the command does before parsing ``--help``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cyclegan_export.export import ExportError, ExportReport, export_onnx

__all__ = ["ExportError", "ExportReport", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cyclegan_export import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
