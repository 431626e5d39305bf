"""What onnxruntime needs to keep a GPU busy: IO binding with reused device buffers, TensorRT's
options (fp16, engine cache, shape profiles) and CUDA graphs.

Nothing here imports a GPU library: the functions build option dicts and file names, and
:class:`BoundSession` drives any onnxruntime session through IO binding (it also runs on the
CPU provider, which is how the tests check it on machines without a GPU).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.metadata import ModelMetadata

# TensorRT's core library, newest major version first (onnxruntime-gpu 1.2x links TensorRT 10).
TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer.so.8", "nvinfer_10.dll", "nvinfer.dll")
# The largest frame side a TensorRT profile accepts unless told otherwise: 1920 covers 1080p in
# either orientation. TensorRT sizes its activation memory for the profile's largest shape,
# so the profile is not made larger than frames need.
TRT_DEFAULT_MAX_SIDE = 1920
# Distinct input shapes whose device buffers stay allocated (video and live frames share one;
# a folder of mixed sizes would otherwise keep one set per size).
BOUND_SHAPES_KEPT = 4

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
}


def cache_root() -> Path:
    """This toolkit's cache folder: ``$CYCLEGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``cyclegan-toolkit``."""
    explicit = os.environ.get("CYCLEGAN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "cyclegan-toolkit"


def tensorrt_library() -> str | None:
    """The TensorRT library this process can load (its file name), or None.

    onnxruntime-gpu lists ``TensorrtExecutionProvider`` whether or not TensorRT is installed,
    then falls back to CUDA with a warning on every session; asking the loader first lets
    ``providers="auto"`` pass over TensorRT quietly when it is absent."""
    for name in TENSORRT_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


def model_digest(data: bytes) -> str:
    """A short content hash naming a model's engine cache: TensorRT's own cache key covers the
    graph's structure, not its weights, so two trainings of one architecture would otherwise
    share (and wrongly reuse) an engine."""
    return hashlib.sha256(data).hexdigest()[:16]


def _shape(batch: int, height: int, width: int, meta: ModelMetadata) -> tuple[int, ...]:
    return (batch, height, width, 3) if meta.io == "uint8" else (batch, 3, height, width)


def profile_shapes(meta: ModelMetadata, *, max_batch: int,
                   max_side: int = TRT_DEFAULT_MAX_SIDE) -> dict[str, tuple[int, ...]]:
    """The smallest, optimal and largest input shapes (``"min"``, ``"opt"``, ``"max"``) of
    TensorRT's profile for ``meta``'s input, in its layout.

    A fixed-size model gets its one shape. Otherwise: smallest: one frame of the model's
    minimum size; optimal: one frame of its training crop (256 when unknown); largest:
    ``max_batch`` frames of ``max_side`` x ``max_side`` rounded up to the size multiple.
    """
    fixed_batch = meta.batch
    if meta.static_size is not None:
        shape = _shape(fixed_batch or 1, *meta.static_size, meta)
        return {"min": shape, "opt": shape, "max": shape}
    step = meta.size_multiple

    def rounded(side: int) -> int:
        return max(meta.min_size, -(-side // step) * step)

    low = rounded(meta.min_size)
    opt = rounded(meta.crop_size or 256)
    high = max(opt, rounded(max_side))
    small, large = (fixed_batch, fixed_batch) if fixed_batch else (1, max(1, max_batch))
    return {"min": _shape(small, low, low, meta), "opt": _shape(small, opt, opt, meta),
            "max": _shape(large, high, high, meta)}


def tensorrt_profile(meta: ModelMetadata, input_name: str, *, max_batch: int,
                     max_side: int = TRT_DEFAULT_MAX_SIDE) -> dict[str, str]:
    """The ``trt_profile_{min,opt,max}_shapes`` options for ``meta``'s input
    (:func:`profile_shapes`, as ``"input:1x3x256x256"``)."""
    shapes = profile_shapes(meta, max_batch=max_batch, max_side=max_side)
    return {f"trt_profile_{kind}_shapes": f"{input_name}:{'x'.join(map(str, shape))}"
            for kind, shape in shapes.items()}


def tensorrt_options(meta: ModelMetadata, input_name: str, digest: str, *, device_id: int,
                     fp16: bool, max_batch: int, max_side: int = TRT_DEFAULT_MAX_SIDE,
                     cache: Path | None = None) -> dict[str, Any]:
    """TensorRT execution provider options: fp16 when asked, the engine and timing caches in
    ``cache`` (default ``cache_root() / "tensorrt"``; engines in a subfolder per model
    ``digest``), and the shape profile of :func:`tensorrt_profile`."""
    folder = (cache or cache_root() / "tensorrt")
    return {
        "device_id": device_id,
        "trt_fp16_enable": fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder / digest),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(folder),
        **tensorrt_profile(meta, input_name, max_batch=max_batch, max_side=max_side),
    }


def make_cache_folders(options: dict[str, Any]) -> None:
    """Create the engine and timing cache folders of TensorRT ``options``: its provider makes
    only the last level itself, and fails the session otherwise."""
    for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
        if key in options:
            Path(options[key]).mkdir(parents=True, exist_ok=True)


def cached_engines(folder: str | Path) -> list[Path]:
    """TensorRT engine files already in ``folder`` (none: the next session builds them)."""
    path = Path(folder)
    return sorted(path.glob("*.engine")) if path.is_dir() else []


def cuda_options(device_id: int, *, cuda_graph: bool = False,
                 exact_fp32: bool = False) -> dict[str, Any]:
    """CUDA execution provider options. ``cuda_graph``: capture each input shape's run once
    and replay it (needs IO binding with fixed buffers, which :class:`BoundSession` keeps).
    ``exact_fp32``: float32 arithmetic as it says; the provider's default lets convolutions
    and GEMMs run in TF32 (10-bit mantissas) on Ampere and later, which is not what
    ``precision="fp32"`` promises."""
    options: dict[str, Any] = {"device_id": device_id,
                               # cuDNN times its algorithms once per shape and keeps the best
                               "cudnn_conv_algo_search": "EXHAUSTIVE"}
    if exact_fp32 and _onnxruntime_at_least(1, 18):  # older CUDA providers refuse the key
        options["use_tf32"] = "0"
    if cuda_graph:
        options["enable_cuda_graph"] = "1"
    return options


def _onnxruntime_at_least(major: int, minor: int) -> bool:
    import onnxruntime as ort

    found = re.match(r"(\d+)\.(\d+)", ort.__version__)
    return found is not None and (int(found[1]), int(found[2])) >= (major, minor)


@dataclass
class _Slot:
    """One set of device buffers for one input shape, bound to the session."""

    binding: Any
    input: Any
    output: Any
    run_options: Any
    graph_id: int


class BoundSession:
    """Runs an onnxruntime session through IO binding, with input and output buffers allocated
    once per input shape on ``device`` ("cuda" or "cpu") and reused.

    ``run(batch)``: one host-to-device copy into the shape's buffer, the session, one
    device-to-host copy of the output; no allocation per call. Thread-safe: concurrent calls
    take different buffer sets of the same shape (so two batches can be in flight), created
    as needed and kept for the :data:`BOUND_SHAPES_KEPT` most recent shapes.

    ``cuda_graph``: each buffer set gets its own graph id, so onnxruntime captures one CUDA
    graph per (shape, set) on its first run and replays it after (the session must have been
    created with ``enable_cuda_graph``), and an evicted shape's graphs are released with its
    buffers. Every call, buffer allocation and release then happens on one thread of this
    object's own: onnxruntime runs no concurrent Run() on a session with CUDA graphs, keeps
    the graphs in per-thread state (callers on new threads, as each stream's workers are,
    would capture them again and pin more memory), and a device allocation during another
    thread's capture would break it. ``run`` takes the session input's own dtype only (a copy
    into a device buffer of another type would not be converted).
    """

    def __init__(self, session: Any, device: str = "cuda", device_id: int = 0, *,
                 layout: str = "NCHW", cuda_graph: bool = False) -> None:
        self.session = session
        self.device = device
        self.device_id = device_id
        self.cuda_graph = cuda_graph
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_dtype = np.dtype(_ORT_TYPES.get(inputs[0].type, np.float32))
        self.output_dtype = _ORT_TYPES.get(outputs[0].type, np.float32)
        self.channel_axis = 1 if layout == "NCHW" else 3
        channels = outputs[0].shape[self.channel_axis] if len(outputs[0].shape) == 4 else None
        self.output_channels = channels if isinstance(channels, int) else None
        self._free: OrderedDict[tuple[int, ...], list[_Slot]] = OrderedDict()
        self._lock = threading.Lock()
        self._graph_ids = 0
        # With CUDA graphs: all device work on this one thread (see the class docstring).
        self._graph_thread = (ThreadPoolExecutor(1, thread_name_prefix="cuda-graph")
                              if cuda_graph else None)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The output's shape for an input of ``shape``: a generator keeps batch, height and
        width; the channel count is the output's own where the graph fixes it."""
        out = list(shape)
        if self.output_channels is not None:
            out[self.channel_axis] = self.output_channels
        return tuple(out)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != self.input_dtype:
            raise ValueError(f"the session takes {self.input_dtype} input, got {batch.dtype}")
        batch = np.ascontiguousarray(batch)
        if self._graph_thread is not None:
            return self._graph_thread.submit(self._run_here, batch).result()
        return self._run_here(batch)

    def _run_here(self, batch: np.ndarray) -> np.ndarray:
        slot = self._take(batch.shape)
        try:
            return self._run_slot(slot, batch)
        finally:
            self._give(batch.shape, slot)

    def _run_slot(self, slot: _Slot, batch: np.ndarray) -> np.ndarray:
        slot.input.update_inplace(batch)
        # As onnxruntime's own CUDA-graph tests do: the copy in is complete before the run,
        # the run before the copy out (no-ops on the CPU).
        slot.binding.synchronize_inputs()
        self.session.run_with_iobinding(slot.binding, slot.run_options)
        slot.binding.synchronize_outputs()
        result: np.ndarray = slot.binding.copy_outputs_to_cpu()[0]
        return result

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Input shapes with buffers kept, least recently used first."""
        with self._lock:
            return list(self._free)

    def _take(self, shape: tuple[int, ...]) -> _Slot:
        with self._lock:
            free = self._free.get(shape)
            if free:
                self._free.move_to_end(shape)
                return free.pop()
            graph_id = self._graph_ids
            self._graph_ids += 1
        return self._new_slot(shape, graph_id)

    def _give(self, shape: tuple[int, ...], slot: _Slot) -> None:
        with self._lock:
            self._free.setdefault(shape, []).append(slot)
            self._free.move_to_end(shape)
            evicted = []
            while len(self._free) > BOUND_SHAPES_KEPT:
                evicted += self._free.popitem(last=False)[1]  # buffers freed with the slots
        release = getattr(self.session, "release_captured_graph", None)
        if self.cuda_graph and release is not None:
            for old in evicted:
                release(old.graph_id)  # a captured graph pins its buffers until released

    def _new_slot(self, shape: tuple[int, ...], graph_id: int) -> _Slot:
        import onnxruntime as ort

        value_in = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), self.input_dtype,
                                                             self.device, self.device_id)
        value_out = ort.OrtValue.ortvalue_from_shape_and_type(
            list(self.output_shape(shape)), self.output_dtype, self.device, self.device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value_in)
        binding.bind_ortvalue_output(self.output_name, value_out)
        run_options = ort.RunOptions()
        if self.cuda_graph:
            run_options.add_run_config_entry("gpu_graph_id", str(graph_id))
        return _Slot(binding, value_in, value_out, run_options, graph_id)



@dataclass(frozen=True)
class GpuOptions:
    """How :class:`runtime.backends.OnnxRuntimeBackend` prepares a GPU session.

    ``device_io``: run a float model's pre- and post-processing on the GPU (uint8 IO);
    ``cuda_graph``: capture and replay CUDA graphs per input shape (the CUDA provider only:
    with TensorRT first it is off);
    ``max_batch`` / ``trt_max_side``: the largest input TensorRT's shape profile accepts.
    """

    device_io: bool = True
    cuda_graph: bool = False
    max_batch: int = 8
    trt_max_side: int = TRT_DEFAULT_MAX_SIDE


@dataclass
class GpuModel:
    """A model prepared for a GPU session: what :func:`prepare_for_gpu` returns."""

    model: bytes                  # the serialized ONNX model to load
    providers: list[Any]          # onnxruntime's providers argument, with their options
    precision: str                # what will run: "fp16", "fp32", "int8"...
    engine_cache: Path | None     # TensorRT's engine folder for this model, if TensorRT runs


def prepare_for_gpu(model_path: Path, providers: Sequence[str], precision: str,
                    options: GpuOptions, device_id: int = 0) -> GpuModel:
    """The model at ``model_path`` made ready for ``providers`` (the first a GPU provider).

    ``precision``: ``"auto"`` or ``"fp16"`` run a float32 file in fp16 (TensorRT inside its
    engine; CUDA through :func:`runtime.graph_edit.convert_to_fp16`), ``"fp32"`` keeps it.
    With ``options.device_io`` a float-IO model is wrapped in uint8 BGR IO
    (:func:`runtime.graph_edit.with_uint8_io`). Raises ``ValueError`` for a model TensorRT
    cannot be given a shape profile for (no toolkit metadata).
    """
    import onnx

    from runtime.graph_edit import convert_to_fp16, with_uint8_io
    from runtime.metadata import metadata_or_none

    def metadata(model: onnx.ModelProto) -> ModelMetadata | None:
        return metadata_or_none({p.key: p.value for p in model.metadata_props},
                                str(model_path))

    model = onnx.load_from_string(model_path.read_bytes())
    meta = metadata(model)
    own = meta.precision if meta else "fp32"
    want_fp16 = precision in ("auto", "fp16") and own == "fp32"
    tensorrt = providers[0] == "TensorrtExecutionProvider"
    ran = own
    if want_fp16 and not tensorrt:  # TensorRT converts inside its engine instead
        model = convert_to_fp16(model)
        ran = "fp16"
    if options.device_io and meta is not None and meta.io == "float":
        model = with_uint8_io(model, "BGR")
    prepared = model.SerializeToString()
    provider_list: list[Any] = []
    engines: Path | None = None
    for name in providers:
        if name == "TensorrtExecutionProvider":
            session_meta = metadata(model)
            if session_meta is None:
                raise ValueError(f"{model_path}: TensorRT needs this toolkit's metadata for its "
                                 "shape profile; export the model with cyclegan-export")
            trt = tensorrt_options(session_meta, model.graph.input[0].name,
                                   model_digest(prepared), device_id=device_id,
                                   fp16=want_fp16 or own == "fp16",
                                   max_batch=options.max_batch, max_side=options.trt_max_side)
            # No CUDA graph here (trt_cuda_graph_enable): TensorRT's provider keeps one graph
            # per session, not one per graph id, so BoundSession's buffer sets in flight and
            # other frame sizes would replay the first set's addresses; it is the CUDA
            # provider's feature in this toolkit (a note says so when TensorRT runs).
            make_cache_folders(trt)
            engines = Path(trt["trt_engine_cache_path"])
            provider_list.append((name, trt))
            ran = "fp16" if want_fp16 else own
        elif name == "CUDAExecutionProvider":
            # With TensorRT first, CUDA takes only what TensorRT leaves: a CUDA graph there would
            # fail the session (onnxruntime wants every node on CUDA for one).
            provider_list.append((name, cuda_options(
                device_id, cuda_graph=options.cuda_graph and not tensorrt,
                exact_fp32=ran == "fp32")))
        else:
            provider_list.append(name)
    return GpuModel(prepared, provider_list, ran, engines)
