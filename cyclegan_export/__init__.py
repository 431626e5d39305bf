"""Checkpoint to verified, self-describing ONNX.

``export_onnx(source, output, ...)`` returns an :class:`ExportReport` with every verification
figure; ``cyclegan-export`` is its command line.
"""

from cyclegan_export.export import ExportError, ExportReport, export_onnx

__all__ = ["ExportError", "ExportReport", "export_onnx"]
