"""Run exported CycleGAN models with onnxruntime or OpenCV: no torch, ever.

``Translator`` is the embedding API; ``cyclegan-run`` and ``cyclegan-bench`` are the commands.

The public names are imported on first use (PEP 562), so that the commands' ``--help`` and
``--version`` start instantly and a Ctrl-C during the heavy imports lands inside a command,
which reports it in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.metadata import ModelMetadata, read_metadata
    from runtime.translator import Translator

__all__ = ["ModelMetadata", "Translator", "read_metadata"]

_LAZY = {"ModelMetadata": "runtime.metadata", "read_metadata": "runtime.metadata",
         "Translator": "runtime.translator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
