"""CycleGAN training in PyTorch: networks, data, objective, loop and checkpoints.

Knows nothing of ONNX; :mod:`cyclegan_export` builds on it and :mod:`runtime` never imports it.
"""

__version__ = "0.1.0"
