"""``Translator``: the embedding API. Images in, translated images out, any size.

    from runtime import Translator
    translator = Translator("horse2zebra.onnx")
    zebra = translator(cv2.imread("horse.jpg"))       # HWC uint8 BGR in, same size out

The model's metadata (size rule, IO kind, colour order, static shape, batch) drives everything;
the file name means nothing. No torch anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from runtime.backends import Backend, BackendError, OnnxRuntimeBackend, create_backend
from runtime.metadata import ModelMetadata, read_metadata
from runtime.transforms import (
    crop_to,
    from_model_output,
    merge_alpha,
    pad_to_multiple,
    split_alpha,
    to_model_input,
)


class Translator:
    """Run an exported CycleGAN generator on images.

    ``providers``: ``"auto"`` (TensorRT, then CUDA, then CPU), a name (``"cuda"``, ``"cpu"``)
    or a list; ``backend``: ``"onnxruntime"`` or ``"opencv"``. ``max_side``: when set, frames
    whose longer side exceeds it are translated at that working resolution and scaled back
    (faster on large frames). One instance may be shared by several threads.
    """

    def __init__(self, model_path: str | Path, *, providers: str | Sequence[str] = "auto",
                 device_id: int = 0, threads: int | None = None, backend: str = "onnxruntime",
                 max_side: int | None = None) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: no such file")
        self.backend: Backend = create_backend(backend, self.model_path, providers, device_id,
                                               threads)
        if isinstance(self.backend, OnnxRuntimeBackend):
            self.metadata = ModelMetadata.from_props(self.backend.custom_metadata,
                                                     str(self.model_path))
        else:
            self.metadata = read_metadata(self.model_path)
        if max_side is not None and max_side < self.metadata.size_multiple:
            raise ValueError(f"max_side {max_side} is smaller than the model's size multiple "
                             f"{self.metadata.size_multiple}")
        self.max_side = max_side

    @property
    def providers(self) -> list[str]:
        """What actually runs, best first (e.g. ``["CUDAExecutionProvider", ...]``)."""
        return list(self.backend.providers)

    def __repr__(self) -> str:
        meta = self.metadata
        return (f"Translator({self.model_path.name!r}, {meta.architecture}, "
                f"{meta.source_domain}->{meta.target_domain}, {meta.precision}, "
                f"{meta.io} IO, providers={self.providers})")

    # ---- public API ------------------------------------------------------------------------
    def translate(self, image: np.ndarray, *, color_order: str = "BGR") -> np.ndarray:
        """Translate one image.

        ``image``: ``(H, W)`` gray, ``(H, W, 3)`` colour or ``(H, W, 4)`` with alpha; uint8 or
        uint16; channels in ``color_order`` ("BGR" as OpenCV reads, or "RGB"). Returns uint8
        ``(H, W, 3)`` in ``color_order`` (``(H, W, 4)`` with the input's alpha carried over),
        exactly the input's height and width.
        """
        return self.translate_batch([image], color_order=color_order)[0]

    __call__ = translate

    def translate_batch(self, images: Sequence[np.ndarray], *,
                        color_order: str = "BGR") -> list[np.ndarray]:
        """Translate several images; same-size images run together as one batch."""
        if color_order not in ("BGR", "RGB"):
            raise ValueError(f"color_order must be 'BGR' or 'RGB', got {color_order!r}")
        prepared = [split_alpha(image) for image in images]
        results: list[np.ndarray | None] = [None] * len(prepared)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (colour, _) in enumerate(prepared):
            groups.setdefault(colour.shape[:2], []).append(index)
        for indices in groups.values():
            batch = np.stack([prepared[i][0] for i in indices])
            out = self._translate_same_size(batch, color_order)
            for row, index in enumerate(indices):
                results[index] = merge_alpha(out[row], prepared[index][1])
        return [r for r in results if r is not None]

    # ---- internals ---------------------------------------------------------------------------
    def _translate_same_size(self, batch: np.ndarray, color_order: str) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 -> same shape, handling working size, padding and batching."""
        height, width = batch.shape[1:3]
        meta = self.metadata
        work = batch
        if meta.static_size is not None:
            target = meta.static_size
        else:
            target = None
            if self.max_side is not None and max(height, width) > self.max_side:
                scale = self.max_side / max(height, width)
                target = (max(1, round(height * scale)), max(1, round(width * scale)))
        if target is not None and target != (height, width):
            work = np.stack([cv2.resize(img, (target[1], target[0]),
                                        interpolation=cv2.INTER_AREA) for img in batch])
        padded = work if meta.static_size is not None else pad_to_multiple(
            work, meta.size_multiple, meta.min_size)
        out = self._run_batched(padded, color_order)
        out = crop_to(out, work.shape[1], work.shape[2])
        if out.shape[1:3] != (height, width):
            out = np.stack([cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC)
                            for img in out])
        return out

    def _run_batched(self, batch: np.ndarray, color_order: str) -> np.ndarray:
        """Respect a fixed batch size: split into chunks, pad the last one by repetition."""
        fixed = self.metadata.batch
        if fixed is None:
            return self._run(batch, color_order)
        outputs = []
        for start in range(0, len(batch), fixed):
            chunk = batch[start:start + fixed]
            count = len(chunk)
            if count < fixed:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - count, axis=0)])
            outputs.append(self._run(chunk, color_order)[:count])
        return np.concatenate(outputs)

    def _run(self, batch: np.ndarray, color_order: str) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 in ``color_order`` -> the same, through the model."""
        meta = self.metadata
        if meta.io == "uint8":
            swap = color_order != meta.color_order
            feed = np.ascontiguousarray(batch[..., ::-1]) if swap else batch
            out = self.backend.run(feed)
            return np.ascontiguousarray(out[..., ::-1]) if swap else out
        out = self.backend.run(to_model_input(batch, color_order))
        return from_model_output(out, color_order)
