"""``Translator``: the embedding API. Images in, translated images out, any size.

    from runtime import Translator
    translator = Translator("horse2zebra.onnx")
    zebra = translator(cv2.imread("horse.jpg"))       # HWC uint8 BGR in, same size out

The model's metadata (size rule, IO kind, colour order, static shape, batch) drives everything;
the file name means nothing. No torch anywhere.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.backends import Backend, BackendError, OnnxRuntimeBackend, create_backend
from runtime.gpu import TRT_DEFAULT_MAX_SIDE, GpuOptions
from runtime.memory import HEADROOM, available_bytes, check_fits, frame_bytes
from runtime.metadata import ModelMetadata, read_metadata
from runtime.metrics import psnr
from runtime.reasons import first_line, not_onnx_reason
from runtime.synthetic import natural_images
from runtime.transforms import (
    crop_to,
    from_model_output,
    merge_alpha,
    pad_exact,
    pad_to_multiple,
    split_alpha,
    to_model_input,
    unit_float_to_uint8,
)

AUTO_CANDIDATES = ("openvino", "opencv")  # besides onnxruntime, tried by backend="auto"
AUTO_MIN_PSNR_DB = 35.0  # a faster backend must stay this close to onnxruntime fp32
DEFAULT_MAX_BATCH = 8  # frames per model call at most on a GPU, unless memory allows fewer
# On a CPU a batch only adds memory traffic (onnxruntime parallelises inside one frame): the
# demo model took 550 ms per frame in batches of 4 against 328 one by one at 256x256 on the
# 2-core machine, so by default a CPU runs frames one by one (never slower per frame).
BATCH_CANDIDATES = (1, 2, 4, 8)  # what pick_batch_size measures


def _check_whole_number(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 1 (not a bool, float or string)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _check_color_order(color_order: str) -> None:
    if color_order not in ("BGR", "RGB"):
        raise ValueError(f"color_order must be 'BGR' or 'RGB', got {color_order!r}")


def _is_pil(image: object) -> bool:
    """A PIL image, recognised without importing Pillow (not a runtime dependency)."""
    return any(cls.__module__.startswith("PIL.") and cls.__name__ == "Image"
               for cls in type(image).__mro__)


def _pil_array(image: Any, color_order: str) -> np.ndarray:
    """A PIL image -> a numpy image in ``color_order``: uint8 RGB(A), or uint16 gray for the
    16-bit modes (``convert("RGB")`` would clip them at 255), alpha kept where the mode has it.
    """
    if image.mode == "F":  # 32-bit float gray, taken as [0, 1] (as read_image does)
        gray = np.nan_to_num(np.asarray(image, np.float32))
        if gray.size and float(gray.max()) > 1.0:
            warnings.warn(f"a PIL mode 'F' image is taken as [0, 1], but its values reach "
                          f"{float(gray.max()):g}: they are clipped to white (for a 0-255 "
                          "image, give image.convert('L'))", UserWarning, stacklevel=4)
        return unit_float_to_uint8(gray)
    if image.mode == "I" or image.mode.startswith("I;16"):
        gray = np.asarray(image)
        if image.mode == "I" and gray.size and 0 < int(gray.max()) <= 255:
            warnings.warn("a PIL mode 'I' image is taken as 16-bit (0-65535), but its values "
                          "stay within 0-255: it comes out nearly black (for an 8-bit image, "
                          "give image.convert('L'))", UserWarning, stacklevel=4)
        return np.clip(gray, 0, 65535).astype(np.uint16)
    if image.mode in ("RGBa", "La"):  # premultiplied alpha: un-premultiplied first
        image = image.convert("RGBA" if image.mode == "RGBa" else "LA")
    # alpha kept, a palette's transparent entry included (as read_image keeps it)
    alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    array = np.asarray(image.convert("RGBA" if alpha else "RGB"))
    if color_order == "BGR":
        array = np.ascontiguousarray(array[..., [2, 1, 0, *range(3, array.shape[2])]])
    return array


def _probe_input(meta: ModelMetadata) -> np.ndarray:
    """One natural-looking frame at the model's training size (<= 256), in its IO format."""
    side = min(meta.crop_size or 256, 256)
    side = max(meta.min_size, side // meta.size_multiple * meta.size_multiple)
    height, width = meta.static_size or (side, side)
    image = natural_images(meta.batch or 1, height, width, seed=1)
    if meta.io == "uint8":
        return np.ascontiguousarray(image[..., ::-1] if meta.color_order == "BGR" else image)
    return to_model_input(image, color_order="RGB")


class _ClosedBackend:
    """What a closed :class:`Translator` holds instead of its session: it still says what ran
    (for ``repr`` and logs) and refuses to run."""

    def __init__(self, closed: Backend, model_path: Path) -> None:
        self.providers = list(closed.providers)
        self.precision = str(getattr(closed, "precision", ""))
        self.on_cpu = getattr(closed, "on_cpu", None)
        self._model_path = model_path

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise BackendError(f"{self._model_path}: this Translator was closed")


def _reopen(cls: type[Translator], model_path: Path, options: dict[str, Any],
            working: dict[str, Any]) -> Translator:
    """A pickled :class:`Translator`, opened again with its constructor's ``options``, then
    its ``working`` attributes set as they were (see ``Translator.__reduce__``)."""
    translator = cls(model_path, **options)
    for name, value in working.items():
        setattr(translator, name, value)
    return translator


def _time_backend(backend: Backend, feed: np.ndarray, runs: int = 3) -> float:
    """Best-of-``runs`` seconds per call after one warm-up call."""
    backend.run(feed)
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        backend.run(feed)
        best = min(best, time.perf_counter() - started)
    return best


class Translator:
    """Run an exported CycleGAN generator on images.

    ``providers``: ``"auto"`` (TensorRT, then CUDA, then CPU), a name (``"cuda"``, ``"cpu"``)
    or a list; ``backend``: ``"onnxruntime"``, ``"opencv"``, ``"openvino"`` or ``"auto"`` (on a
    CPU: the fastest installed backend within 35 dB PSNR of onnxruntime fp32; see
    ``selection`` for what was measured). ``precision``: ``"auto"`` (the backend's choice:
    OpenVINO picks bf16 on CPUs with bf16 units), ``"fp32"``, or ``"bf16"``/``"fp16"``
    (OpenVINO only, where the CPU has them; onnxruntime and OpenCV run the model file's own
    precision); ``backend="auto"`` compares candidates at ``"auto"`` or ``"fp32"``, and
    ``precision`` (the attribute) tells what runs. On a GPU (onnxruntime with CUDA or
    TensorRT), ``"auto"`` means fp16 and ``"fp32"`` keeps the file's float32; pre- and
    post-processing then run on the GPU and batches go through IO binding (see
    :mod:`runtime.backends`); ``cuda_graph=True`` also replays CUDA graphs per frame size
    (CUDA provider; opt-in). ``max_side``: when set, frames
    whose longer side exceeds it are translated at that working resolution and scaled back
    (faster on large frames). ``max_batch``: frames per model call at most (None: 1 on a CPU,
    where batches are slower per frame, 8 on a GPU; on a CPU always no more than fit in
    memory); ``translate_batch`` splits larger inputs into chunks. ``threads``: CPU threads
    for the model (a whole number; None: the backend's default). OpenCV's thread count is
    process-wide, so the OpenCV backend sets it for the length of its own calls, then puts the
    previous one back. One instance may be shared by several threads. A Translator pickles
    as its model path and options, so a worker process opens the model itself;
    :meth:`close` (or a ``with`` block) releases the session at once.

    Inputs: numpy HWC arrays (BGR unless ``color_order="RGB"``), PIL images (Pillow is imported
    only then; returned as a PIL image, RGB, or RGBA when the input has alpha: RGBA, LA, PA, a
    palette with a transparent entry, or premultiplied RGBa/La), image file paths (str,
    ``Path`` or any ``os.PathLike``) and an encoded image's bytes (PNG, JPEG...): read,
    translated, returned as a numpy array in ``color_order``, BGR by default. PIL mode "I" is
    taken as 16-bit (0-65535, as older Pillow opens a 16-bit PNG) and mode "F" as [0, 1] (a
    float TIFF); convert other ranges first (e.g. ``image.convert("L")``).
    """

    def __init__(self, model_path: str | Path, *, providers: str | Sequence[str] = "auto",
                 device_id: int = 0, threads: int | None = None, backend: str = "onnxruntime",
                 max_side: int | None = None, precision: str = "auto",
                 max_batch: int | None = None, cuda_graph: bool = False) -> None:
        self.max_batch = max_batch  # checked by the property
        if threads is not None:
            _check_whole_number("threads", threads)
        self.model_path = Path(model_path)
        # What pickling re-opens the model with: the constructor's options (a GPU session's
        # TensorRT profile follows max_side and max_batch as given here).
        self._options: dict[str, Any] = {
            "providers": providers, "device_id": device_id, "threads": threads,
            "backend": backend, "precision": precision, "cuda_graph": cuda_graph,
            "max_side": max_side, "max_batch": max_batch}
        if self.model_path.is_dir():
            raise BackendError(f"{self.model_path}: is a folder; give the exported .onnx "
                               "model file")
        if not self.model_path.is_file():
            raise BackendError(f"{self.model_path}: no such file")
        # A checkpoint given for a model: said before any backend starts (and warns about
        # providers), so the one line is all the user reads.
        if reason := not_onnx_reason(self.model_path):
            raise BackendError(f"{self.model_path}: {reason}")
        self.selection: list[str] = []  # how backend="auto" chose, one line per candidate
        # How a GPU session is prepared (see runtime.gpu.GpuOptions); a CPU ignores it.
        self._gpu = GpuOptions(cuda_graph=cuda_graph, max_batch=max_batch or DEFAULT_MAX_BATCH,
                               trt_max_side=max_side or TRT_DEFAULT_MAX_SIDE)
        if backend == "auto":
            self.backend = self._choose_backend(providers, device_id, threads, precision)
        else:
            self.backend = create_backend(backend, self.model_path, providers, device_id,
                                          threads, precision, gpu=self._gpu)
        # What the backend prepared (e.g. a TensorRT engine built, and how long it took).
        self.notes: list[str] = list(getattr(self.backend, "notes", []))
        if isinstance(self.backend, OnnxRuntimeBackend):
            # The session's own metadata: on a GPU it may take uint8 frames where the file
            # takes floats (pre/post-processing moved onto the device), or run in fp16. The
            # backend parsed it already; a file without it is parsed again for the reason.
            self.metadata = self.backend.metadata or ModelMetadata.from_props(
                self.backend.custom_metadata, str(self.model_path))
        else:
            self.metadata = read_metadata(self.model_path)
        self.max_side = max_side  # checked by the property

    def _choose_backend(self, providers: str | Sequence[str], device_id: int,
                        threads: int | None, precision: str) -> Backend:
        """On a GPU: onnxruntime with the best provider. On a CPU: time every installed
        backend (each at ``precision``) on a natural-looking image and keep the fastest whose
        output stays within :data:`AUTO_MIN_PSNR_DB` of onnxruntime's fp32 output."""
        # onnxruntime is both the reference and a candidate, so a precision it cannot run
        # (bf16, fp16) is refused here, with the advice to name the backend.
        reference = OnnxRuntimeBackend(self.model_path, providers, device_id, threads,
                                       precision, gpu=self._gpu)
        if reference.providers[0] != "CPUExecutionProvider":
            self.selection = [f"onnxruntime on {reference.providers[0]}: GPU available"]
            return reference
        meta = ModelMetadata.from_props(reference.custom_metadata, str(self.model_path))
        feed = _probe_input(meta)
        expected = reference.run(feed)
        best: tuple[float, Backend] = (_time_backend(reference, feed), reference)
        self.selection = [f"onnxruntime CPU: {best[0] * 1000:.1f} ms (reference)"]
        for name in AUTO_CANDIDATES:
            try:
                candidate = create_backend(name, self.model_path, "cpu", device_id, threads,
                                           precision)
                got = candidate.run(feed)
                seconds = _time_backend(candidate, feed)
            except Exception as exc:  # noqa: BLE001 - cv2.error, OpenVINO errors: skip it
                reason = first_line(exc)
                self.selection.append(f"{name}: not usable ({reason})")
                continue
            try:
                quality = psnr(expected, got, 255.0 if meta.io == "uint8" else 2.0)
            except ValueError:  # a different output shape: unusable
                quality = float("-inf")
            verdict = "kept" if quality >= AUTO_MIN_PSNR_DB else "rejected: quality"
            self.selection.append(f"{candidate.providers[0]}: {seconds * 1000:.1f} ms, "
                                  f"PSNR {quality:.1f} dB vs fp32 ({verdict})")
            if quality >= AUTO_MIN_PSNR_DB and seconds < best[0]:
                best = (seconds, candidate)
        self.selection.append(f"chosen: {best[1].providers[0]}")
        return best[1]

    @classmethod
    def demo(cls, **options: object) -> Translator:
        """The bundled demo model (photo -> blue hour), with the same options as ``__init__``.
        """
        from runtime.demo import demo_model_path

        return cls(demo_model_path(), **options)  # type: ignore[arg-type]

    @property
    def on_cpu(self) -> bool:
        """Whether the model computes on the CPU's cores (which it then owns: batches of one,
        few codec threads). A backend may say so itself with an ``on_cpu`` attribute (the
        benchmark's null backend stands for an accelerator); otherwise the provider that runs
        decides (CUDA, TensorRT: not on the CPU)."""
        declared = getattr(self.backend, "on_cpu", None)
        if declared is not None:
            return bool(declared)
        providers = self.backend.providers
        return not providers or "CUDA" not in providers[0] and "Tensorrt" not in providers[0]

    @property
    def _tensorrt(self) -> bool:
        """TensorRT runs: its shape profile (``self._gpu``) bounds frame sides and batches."""
        return self.providers[0] == "TensorrtExecutionProvider"

    @property
    def in_flight(self) -> int:
        """Batches :meth:`stream` keeps in flight: 2 on a GPU (one is copied and prepared
        while the other computes), 1 on a CPU (where the model already uses every core)."""
        return 1 if self.on_cpu else 2

    @property
    def providers(self) -> list[str]:
        """What actually runs, best first (e.g. ``["CUDAExecutionProvider", ...]``)."""
        return list(self.backend.providers)

    @property
    def precision(self) -> str:
        """The precision that actually runs, as the backend reports it: ``"fp32"``,
        ``"bf16"``, ``"fp16"``, ``"int8"``... (OpenVINO: read from the compiled model)."""
        return str(getattr(self.backend, "precision", self.metadata.precision))

    def __repr__(self) -> str:
        meta = self.metadata
        return (f"Translator({self.model_path.name!r}, {meta.architecture}, "
                f"{meta.source_domain}->{meta.target_domain}, {self.precision}, "
                f"{meta.io} IO, providers={self.providers}"
                f"{', closed' if self.closed else ''})")

    # ---- public API ------------------------------------------------------------------------
    def close(self) -> None:
        """Release the model's session now (on a GPU, its device memory, IO-binding buffers and
        CUDA graphs) instead of when the Translator is collected. Later calls raise
        ``BackendError``; closing twice does nothing. ``with Translator(...) as t:`` closes on
        leaving the block."""
        if not isinstance(self.backend, _ClosedBackend):
            self.backend = _ClosedBackend(self.backend, self.model_path)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return isinstance(self.backend, _ClosedBackend)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its model path and options, so that a worker process (``multiprocessing``,
        ``ProcessPoolExecutor``) opens the model itself: a session cannot cross processes.
        ``backend="auto"`` measures again there."""
        if self.closed:
            raise TypeError(f"{self.model_path}: a closed Translator cannot be pickled")
        working = {"max_side": self.max_side, "max_batch": self.max_batch}  # as set since
        # absolute: a worker may run in another working directory
        return (_reopen, (type(self), self.model_path.absolute(), self._options, working))

    def __enter__(self) -> Translator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def translate(self, image: Any, *, color_order: str = "BGR") -> Any:
        """Translate one image.

        ``image``: ``(H, W)`` gray, ``(H, W, 3)`` colour or ``(H, W, 4)`` with alpha; uint8 or
        uint16; channels in ``color_order`` ("BGR" as OpenCV reads, or "RGB"). Returns uint8
        ``(H, W, 3)`` in ``color_order`` (``(H, W, 4)`` with the input's alpha carried over),
        exactly the input's height and width. A PIL image comes back as a PIL image (RGB, or
        RGBA when it has alpha); an image path (str, ``Path``, ``os.PathLike``) or an encoded
        image's bytes as a numpy array in ``color_order``.
        """
        return self.translate_batch([image], color_order=color_order)[0]

    __call__ = translate

    @property
    def max_batch(self) -> int | None:
        """Frames per model call at most (None: the device's default, see
        :meth:`chunk_size`); a whole number >= 1, checked when set."""
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int | None) -> None:
        if value is not None:
            _check_whole_number("max_batch", value)
        self._max_batch = value

    @property
    def max_side(self) -> int | None:
        """Longer side of the working resolution at most (None: frames run at their own
        size); a whole number no smaller than the model's size multiple, checked when set."""
        return self._max_side

    @max_side.setter
    def max_side(self, value: int | None) -> None:
        if value is not None:
            _check_whole_number("max_side", value)
            if value < self.metadata.size_multiple:
                raise ValueError(f"max_side {value} is smaller than the model's size multiple "
                                 f"{self.metadata.size_multiple}")
        self._max_side = value

    def translate_batch(self, images: Iterable[Any], *, color_order: str = "BGR") -> list[Any]:
        """Translate several images (numpy, PIL or paths, as :meth:`translate`; a list, any
        iterable, or an ``(N, H, W, C)`` array of N frames); same-size images run together, in
        chunks of at most :meth:`chunk_size` frames. Returns a list, in the input's order."""
        _check_color_order(color_order)
        if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or _is_pil(
                images) or (
                isinstance(images, np.ndarray) and images.ndim != 4):
            shape = f" of shape {images.shape}" if isinstance(images, np.ndarray) else ""
            raise TypeError(f"translate_batch takes several images (a list, or (N, H, W, C) "
                            f"frames), not one {type(images).__name__}{shape}; translate() "
                            "takes one")
        try:
            images = list(images)
        except TypeError:
            raise TypeError(f"translate_batch takes an iterable of images, not "
                            f"{type(images).__name__}") from None
        arrays = [self._as_array(image, color_order) for image in images]
        prepared = [split_alpha(image) for image in arrays]
        results: list[np.ndarray | None] = [None] * len(prepared)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (colour, _) in enumerate(prepared):
            groups.setdefault(colour.shape[:2], []).append(index)
        for (height, width), indices in groups.items():
            chunk = self.chunk_size(height, width)
            for start in range(0, len(indices), chunk):
                part = indices[start:start + chunk]
                batch = (prepared[part[0]][0][None] if len(part) == 1  # a view, no copy
                         else np.stack([prepared[i][0] for i in part]))
                out = self._translate_same_size(batch, color_order)
                for row, index in enumerate(part):
                    results[index] = merge_alpha(out[row], prepared[index][1])
        return [self._as_given(images[i], result, color_order)
                for i, result in enumerate(results) if result is not None]

    def chunk_size(self, height: int, width: int) -> int:
        """Frames of ``height`` x ``width`` per model call: ``max_batch`` when set (on a CPU
        lowered to what the memory estimate of :mod:`runtime.memory` lets fit), else 1 on a
        CPU and :data:`DEFAULT_MAX_BATCH` on a GPU (whose memory is the provider's to judge).
        """
        if not self.on_cpu:
            size = self.max_batch or DEFAULT_MAX_BATCH
            return min(size, self._gpu.max_batch) if self._tensorrt else size
        if self.max_batch is None:
            return 1
        available = available_bytes()
        if available is None:
            return self.max_batch
        one = max(1, frame_bytes(self.metadata, height, width))
        return max(1, min(self.max_batch, int(available * HEADROOM // one)))

    def pick_batch_size(self, height: int, width: int,
                        candidates: Sequence[int] = BATCH_CANDIDATES,
                        rounds: int = 2) -> tuple[int, list[str]]:
        """Measure ``candidates`` batch sizes on a probe frame of ``height`` x ``width`` and
        return the fastest per frame (ties go to the smaller), with one line per candidate.

        Each candidate runs as one model call (whatever ``max_batch`` says), once to warm up,
        then best of ``rounds``; a candidate the memory estimate refuses (or that fails) is
        skipped. To use the result, set ``max_batch`` to it."""
        frame = np.ascontiguousarray(natural_images(1, height, width, seed=3)[0])
        best = (float("inf"), 1)
        lines = []
        for size in candidates:
            frames = np.stack([frame] * size)
            try:
                self._translate_same_size(frames, "BGR")
                seconds = float("inf")
                for _ in range(max(1, rounds)):
                    started = time.perf_counter()
                    self._translate_same_size(frames, "BGR")
                    seconds = min(seconds, time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own types too (a GPU's
                # out-of-memory or out-of-profile Fail/EPFail are not RuntimeErrors)
                lines.append(f"batch {size}: skipped ({first_line(exc)})")
                continue
            per_frame = seconds / size
            lines.append(f"batch {size}: {per_frame * 1000:.1f} ms per frame")
            if per_frame < best[0] * 0.97:  # a smaller batch wins unless clearly slower
                best = (per_frame, size)
        return best[1], lines

    def stream(self, source: Any, *, temporal: bool = False, batch_size: int = 1,
               queue_size: int = 8, in_flight: int | None = None, color_order: str = "BGR",
               ) -> Generator[np.ndarray, None, None]:
        """Translated frames of ``source``, in order: an iterable of HWC uint8 frames, a video
        file path, a camera index or a stream URL. ``color_order``: the channel order of the
        frames given and of those returned (a video, camera or URL is decoded into it).
        Decoding runs in a thread, and ``in_flight`` batches (default :attr:`in_flight`) are
        translated at once. Close the generator when stopping early (``close()``, or
        ``contextlib.closing``; a ``for`` loop's ``break`` alone leaves it reading ahead until
        it is collected): that stops it all and closes the source. See
        :mod:`runtime.media.stream`. Raises ``ValueError`` at once for a ``batch_size``,
        ``queue_size`` or ``in_flight`` that is not a whole number >= 1, or another
        ``color_order``; ``TypeError`` for a ``temporal`` that is not a bool.
        """
        from runtime.media.stream import stream

        for name, value in (("batch_size", batch_size), ("queue_size", queue_size),
                            ("in_flight", 1 if in_flight is None else in_flight)):
            _check_whole_number(name, value)
        _check_color_order(color_order)
        if not isinstance(temporal, (bool, np.bool_)):
            raise TypeError(f"temporal must be True or False, got {temporal!r}")
        return stream(self, source, temporal=bool(temporal), batch_size=batch_size,
                      queue_size=queue_size, in_flight=in_flight, color_order=color_order)

    @staticmethod
    def _as_array(image: Any, color_order: str) -> np.ndarray:
        """A numpy image in ``color_order`` from a numpy array, a PIL image or a path."""
        if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
            from runtime.media.sources import decode_image, read_image

            if isinstance(image, (str, os.PathLike)):
                array = read_image(Path(image))  # BGR(A) or gray, as OpenCV reads it
            elif not len(image):
                raise ValueError("empty bytes: give an encoded image (PNG, JPEG...) or a path")
            else:  # an encoded image's bytes, as rembg's remove() takes them
                array = decode_image(np.frombuffer(image, np.uint8), "image bytes", known=False)
            if color_order == "RGB" and array.ndim == 3 and array.shape[2] >= 3:
                array = np.ascontiguousarray(array[..., [2, 1, 0, *range(3, array.shape[2])]])
            return array
        if _is_pil(image):
            return _pil_array(image, color_order)
        array = np.asarray(image)
        if array.dtype.kind in "OSUV":  # None, strings, records: not pixels
            raise TypeError(f"expected an image (a numpy array, a PIL image or a path), got "
                            f"{type(image).__name__}")
        return array

    @staticmethod
    def _as_given(original: Any, result: np.ndarray, color_order: str) -> Any:
        """The result in the form of the input: PIL for PIL, numpy otherwise."""
        if not _is_pil(original):
            return result
        from PIL import Image

        if color_order == "BGR":
            result = np.ascontiguousarray(result[..., [2, 1, 0, *range(3, result.shape[2])]])
        return Image.fromarray(result)  # RGB or RGBA, from the shape

    # ---- internals ---------------------------------------------------------------------------
    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` at which a ``height`` x ``width`` frame goes through the model, before
        padding: scaled to ``max_side`` (and to TensorRT's shape profile) keeping the aspect
        ratio, or to fit a fixed-size model; the frame's own size otherwise."""
        meta = self.metadata
        if meta.static_size is not None:
            # Fit inside the fixed size keeping the aspect ratio; the rest is reflect padding.
            scale = min(meta.static_size[0] / height, meta.static_size[1] / width)
            return (min(max(1, round(height * scale)), meta.static_size[0]),
                    min(max(1, round(width * scale)), meta.static_size[1]))
        limit = self.max_side
        if self._tensorrt:
            # Larger frames than TensorRT's shape profile takes run at its largest side.
            limit = min(limit or self._gpu.trt_max_side, self._gpu.trt_max_side)
        if not limit or max(height, width) <= limit:
            return height, width
        scale = limit / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _translate_same_size(self, batch: np.ndarray, color_order: str) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 -> same shape, handling working size, padding and batching."""
        height, width = batch.shape[1:3]
        meta = self.metadata
        work = batch
        target = self.working_size(height, width)
        if target != (height, width):
            shrink = target[0] * target[1] < height * width
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
            work = np.stack([cv2.resize(img, (target[1], target[0]), interpolation=interpolation)
                             for img in batch])
        if meta.static_size is not None:
            padded = pad_exact(work, meta.static_size[0] - work.shape[1],
                               meta.static_size[1] - work.shape[2])
        else:
            padded = pad_to_multiple(work, meta.size_multiple, meta.min_size)
        if self.on_cpu:
            # Fail now, with a --max-side that fits, rather than in the allocator after
            # seconds of work (GPU memory is the provider's to judge).
            check_fits(meta, padded.shape[1], padded.shape[2], meta.batch or len(padded))
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
