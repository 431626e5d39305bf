"""Image-quality measures shared by verification, benchmarks and backend selection (numpy)."""

from __future__ import annotations

import math

import numpy as np


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio of ``test`` against ``reference``, in dB.

    ``data_range`` is the signal's peak-to-peak range: 2.0 for model outputs in [-1, 1], 255.0
    for uint8 images. ``10 * log10(data_range**2 / MSE)`` with the MSE in float64; ``inf`` when
    equal. Not cv2.PSNR: it adds DBL_EPSILON (identical inputs give ~320 dB, not inf) and wants
    2-D arrays of at most 4 channels, which a batch of NCHW outputs is not.
    Raises ``ValueError`` when the shapes differ.
    """
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else float(10.0 * np.log10(data_range**2 / mse))
