"""Seeded, natural-looking test images (numpy only): for verification, benchmarks and auto-
selection of backends, where uniform noise would exercise a model in a way no photo does."""

from __future__ import annotations

import numpy as np


def natural_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth, photo-like test images ``(count, H, W, 3)`` uint8 RGB (seeded).

    A bilinearly upsampled 4x4 random colour grid plus mild noise: the low-frequency content
    that real photos have, unlike uniform noise, which no image model is meant for.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((count, height, width, 3), np.uint8)
    ys = np.linspace(0, 3, height)[:, None, None]
    xs = np.linspace(0, 3, width)[None, :, None]
    y0, x0 = np.clip(np.floor(ys).astype(int), 0, 2), np.clip(np.floor(xs).astype(int), 0, 2)
    fy, fx = ys - y0, xs - x0
    for i in range(count):
        grid = rng.uniform(0, 255, size=(4, 4, 3))
        y0i, x0i = y0[:, 0, 0], x0[0, :, 0]
        top = grid[y0i][:, x0i] * (1 - fx) + grid[y0i][:, x0i + 1] * fx
        bottom = grid[y0i + 1][:, x0i] * (1 - fx) + grid[y0i + 1][:, x0i + 1] * fx
        image = top * (1 - fy) + bottom * fy + rng.normal(0, 4, size=(height, width, 3))
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
    return images
