"""Run exported CycleGAN models with onnxruntime or OpenCV: no torch, ever.

``Translator`` is the embedding API; ``cyclegan-run`` and ``cyclegan-bench`` are the commands.
"""

from runtime.metadata import ModelMetadata, read_metadata
from runtime.translator import Translator

__all__ = ["ModelMetadata", "Translator", "read_metadata"]
