"""Inference backends: one class owns one engine's session and how it is fed.

- :class:`OnnxRuntimeBackend`: onnxruntime with an explicit provider list (TensorRT, CUDA, CPU,
  ...). ``"auto"`` takes the best this build offers and warns when it falls back to the CPU.
  On a GPU (CUDA or TensorRT) it prepares the session so the GPU never waits for Python: a
  float model is wrapped in uint8 image IO (:func:`runtime.graph_edit.with_uint8_io`), it runs
  in fp16 unless fp32 is asked for, and batches go through IO binding into device buffers kept
  per shape (:class:`runtime.gpu.BoundSession`); TensorRT gets an engine cache and a shape
  profile (:func:`runtime.gpu.tensorrt_options`). Under ``"auto"``, an engine TensorRT cannot
  build falls back to CUDA (with a warning), and an int8 file skips TensorRT (a note says why).
- :class:`OpenCVBackend`: the same ``.onnx`` through OpenCV DNN.
- :class:`OpenVINOBackend`: the same ``.onnx`` through OpenVINO on the CPU, at an explicit or
  automatic inference precision (fp32, bf16, fp16).

Every backend takes ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``: what the
engine may compute the model's floating-point layers in) and reports, as ``precision``, what
actually runs. On a CPU, onnxruntime and OpenCV run the file exactly as written, so they accept
only ``"auto"`` and ``"fp32"`` (no reduction by the engine) and report the file's own
precision; onnxruntime on a GPU takes ``"auto"`` (fp16), ``"fp16"`` or ``"fp32"``.

Backends take and return numpy arrays in the model's own convention (see
:class:`runtime.metadata.ModelMetadata`); images are :mod:`runtime.translator`'s business.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from runtime.metadata import MetadataError, metadata_or_none, read_metadata
from runtime.reasons import first_line, not_onnx_reason

if TYPE_CHECKING:
    from runtime.gpu import BoundSession, GpuOptions

# Short names users type -> onnxruntime provider names.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
# What "auto" tries, best first (TensorRT only where its libraries load: see resolve_providers).
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# What a backend can be asked to compute in; "auto" leaves it to the engine.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What the CPU needs before OpenVINO offers a reduced precision (for messages and skip reasons).
OPENVINO_PRECISION_NEEDS = {"bf16": "AVX-512 BF16 or AMX", "fp16": "AVX-512 FP16 or AVX2-VNNI-2"}
# Our precision -> OpenVINO's INFERENCE_PRECISION_HINT value.
_OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
# Every spelling of an element type OpenVINO versions have returned -> our name.
_OPENVINO_SPELLINGS = {
    "f32": "fp32", "fp32": "fp32", "float32": "fp32", "float": "fp32",
    "bf16": "bf16", "bfloat16": "bf16",
    "f16": "fp16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
}


class BackendError(RuntimeError):
    """A backend or provider that cannot be used; the message says why and what exists."""


class TensorRTBuildError(BackendError):
    """TensorRT's engine could not be built for the model (``auto`` then runs on CUDA)."""


class ProviderFallbackWarning(UserWarning):
    """``providers="auto"`` runs on less than it looked for: the CPU where no GPU provider
    works, or CUDA where TensorRT's engine could not be built."""


class NoGpuProviderWarning(ProviderFallbackWarning):
    """``providers="auto"`` with an onnxruntime build that has no GPU provider at all: what a
    CPU-only install expects, so ``cyclegan-run -q`` leaves it out (a GPU provider that is
    there but fails still warns)."""


class Backend(Protocol):
    providers: list[str]
    precision: str  # what runs: "fp32", "bf16", "fp16", "int8", "int8+bf16"...

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_providers(requested: str | Sequence[str] = "auto",
                      available: Sequence[str] | None = None,
                      tensorrt_present: bool | None = None) -> list[str]:
    """Turn ``"auto"``, ``"cuda"``, ``"cuda,cpu"`` or a list into onnxruntime provider names.

    An explicitly requested provider that this onnxruntime build lacks is an error (naming
    what is available); ``"auto"`` picks TensorRT (when its libraries load: onnxruntime-gpu
    lists it either way), then CUDA, then CPU and warns on CPU-only. ``tensorrt_present``:
    whether TensorRT's libraries load (None: ask :func:`runtime.gpu.tensorrt_library`).
    """
    available = list(available if available is not None else available_providers())
    if isinstance(requested, str):
        requested = [p.strip() for p in requested.split(",") if p.strip()]
    if not requested or list(requested) == ["auto"]:
        chosen = [p for p in AUTO_ORDER if p in available]
        if "TensorrtExecutionProvider" in chosen:
            if tensorrt_present is None:
                from runtime.gpu import tensorrt_library

                tensorrt_present = tensorrt_library() is not None
            if not tensorrt_present:
                chosen.remove("TensorrtExecutionProvider")
        if "CPUExecutionProvider" not in chosen and "CPUExecutionProvider" in available:
            chosen.append("CPUExecutionProvider")
        if not any(p in chosen for p in AUTO_ORDER[:2]):
            warnings.warn("no GPU execution provider in this onnxruntime build (install "
                          "onnxruntime-gpu for CUDA/TensorRT); running on the CPU",
                          NoGpuProviderWarning, stacklevel=3)
        return chosen
    names = [PROVIDER_ALIASES.get(p.lower(), p) for p in requested]
    missing = [n for n in names if n not in available]
    if missing:
        raise BackendError(f"provider {', '.join(missing)} is not available in this "
                           f"onnxruntime build (available: {', '.join(available)})")
    return names


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")


def _own_precision_only(engine: str, precision: str) -> None:
    """onnxruntime and OpenCV compute what the file holds: refuse a reduced precision."""
    _check_precision(precision)
    if precision not in ("auto", "fp32"):
        raise BackendError(f"precision {precision}: {engine} runs the model's own precision "
                           "(export with `cyclegan-export --precision fp16`, or use "
                           "`--backend openvino`)")


def _file_precision(model_path: str | Path) -> str:
    try:
        return read_metadata(model_path).precision
    except MetadataError:
        return "fp32"


class OnnxRuntimeBackend:
    """An onnxruntime session; thread-safe (``InferenceSession.run`` may be called
    concurrently).

    On a GPU provider (CUDA, TensorRT) the session is prepared for it (see the module
    docstring); ``gpu`` tunes that preparation (:class:`runtime.gpu.GpuOptions`). ``metadata``
    describes what the session takes and returns, which on a GPU may differ from the file
    (uint8 IO, fp16); ``notes`` says what was prepared, e.g. a TensorRT engine being built.
    """

    def __init__(self, model_path: str | Path, providers: str | Sequence[str] = "auto",
                 device_id: int = 0, threads: int | None = None,
                 precision: str = "auto", *, gpu: GpuOptions | None = None) -> None:
        import onnxruntime as ort

        from runtime.gpu import GpuOptions

        _check_precision(precision)
        gpu = gpu or GpuOptions()
        names = resolve_providers(providers)
        on_gpu = bool(names) and names[0] in GPU_PROVIDERS
        if not on_gpu:
            _own_precision_only("onnxruntime", precision)
        elif precision == "bf16":
            raise BackendError("precision bf16: onnxruntime on a GPU runs fp16 or fp32 "
                               "(use --precision fp16, auto or fp32)")
        self.notes: list[str] = []
        self.model_path = Path(model_path)
        self.device_id = device_id
        auto = isinstance(providers, str) and providers == "auto"
        if auto and names[:1] == ["TensorrtExecutionProvider"] and \
                _file_precision(model_path) == "int8":
            # The exporter's int8 is uint8 asymmetric Q/DQ, made for CPUs; TensorRT takes only
            # symmetric int8 (zero point 0). CUDA runs the file's own Q/DQ nodes.
            names.remove("TensorrtExecutionProvider")
            self.notes.append(f"{self.model_path.name}: TensorRT skipped, it takes only "
                              "symmetric int8 and this int8 model (uint8 asymmetric) is made for "
                              "CPUs; on a GPU the fp32 model, in fp16, is the fast one")
        self._options = ort.SessionOptions()
        if threads is not None:
            self._options.intra_op_num_threads = threads
        try:
            precision_run = self._open(names, precision, gpu)
        except TensorRTBuildError as exc:  # explicit profiles: it builds as the session opens
            names, precision_run = self._without_tensorrt(exc, auto, names, precision, gpu)
        # onnxruntime drops a provider it cannot initialise (e.g. CUDA without its libraries)
        # and carries on, silently, on the CPU: say so.
        dropped = [name for name in names if name not in self.providers]
        if dropped:
            message = (f"{', '.join(dropped)} could not be initialised (missing CUDA/cuDNN or "
                       f"TensorRT libraries?); running on {self.providers[0]}")
            if auto:
                warnings.warn(message, ProviderFallbackWarning, stacklevel=2)
            else:
                raise BackendError(f"{model_path}: {message}")
            if on_gpu:
                # The model was prepared for the provider that failed (and onnxruntime's own
                # fallback drops every provider option): prepare it again for what runs, so a
                # CPU fallback runs the file as a plain CPU session would, and CUDA after a
                # failed TensorRT gets its fp16 and its options.
                names = [name for name in names if name in self.providers]
                precision_run = self._open(names, precision, gpu)
        self._bound: BoundSession | None = None
        self._describe(precision_run, gpu)
        if self.providers[0] == "TensorrtExecutionProvider":
            try:
                self._note_tensorrt_build(gpu)
            except TensorRTBuildError as exc:
                names, precision_run = self._without_tensorrt(exc, auto, names, precision, gpu)
                self._describe(precision_run, gpu)

    def _without_tensorrt(self, exc: TensorRTBuildError, auto: bool, names: list[str],
                          precision: str, gpu: GpuOptions) -> tuple[list[str], str | None]:
        """After TensorRT failed to build its engine: under "auto" (which promised the best
        that runs) CUDA, prepared afresh for it, with a warning; else the error, with advice.
        Returns the providers and the precision that now run."""
        if not auto:
            raise TensorRTBuildError(f"{exc}; --providers cuda runs without it") from None
        warnings.warn(f"{exc}; running on CUDA", ProviderFallbackWarning, stacklevel=3)
        # what was said of the TensorRT session no longer holds (_describe says it anew)
        self.notes = [note for note in self.notes if not note.startswith("CUDA graphs: off")]
        names = [name for name in names if name != "TensorrtExecutionProvider"]
        return names, self._open(names, precision, gpu)

    def _describe(self, precision_run: str | None, gpu: GpuOptions) -> None:
        """What the open session takes and runs; IO binding when it runs on a GPU
        (:class:`runtime.gpu.BoundSession`)."""
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.metadata = metadata_or_none(self.custom_metadata, str(self.model_path))
        # A file without this toolkit's metadata counts as fp32, the exporter's default (the
        # Translator refuses such files anyway).
        self.precision = precision_run or (self.metadata.precision if self.metadata else "fp32")
        self._bound = None
        if self.providers[0] in GPU_PROVIDERS:
            from runtime.gpu import BoundSession

            self._bound = BoundSession(self.session, "cuda", self.device_id,
                                       layout=self.metadata.layout if self.metadata else "NCHW",
                                       cuda_graph=gpu.cuda_graph and self.providers[0]
                                       == "CUDAExecutionProvider")
            if gpu.cuda_graph and self.providers[0] != "CUDAExecutionProvider":
                self.notes.append(f"CUDA graphs: off on {self.providers[0]} (the CUDA "
                                  "provider's feature here)")

    def _open(self, names: list[str], precision: str, gpu: GpuOptions) -> str | None:
        """Create ``self.session`` for providers ``names``, prepared for a GPU when the first
        is one, and set :attr:`providers` to what onnxruntime runs; returns the precision that
        preparation runs (None: the file's own)."""
        import onnxruntime as ort

        source: str | bytes = str(self.model_path)
        provider_list: list[Any] = list(names)
        precision_run: str | None = None
        self._trt_engines: Path | None = None
        self._trt_building = False
        if names and names[0] in GPU_PROVIDERS:
            from runtime.gpu import prepare_for_gpu

            try:
                prepared = prepare_for_gpu(self.model_path, names, precision, gpu,
                                           self.device_id)
            except ValueError as exc:  # a model TensorRT cannot be given a profile for
                raise BackendError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - unreadable file: protobuf, OSError...
                raise BackendError(f"{self.model_path}: onnxruntime cannot load it (not a "
                                   f"readable ONNX model: {first_line(exc)})") from None
            source, provider_list = prepared.model, prepared.providers
            precision_run, self._trt_engines = prepared.precision, prepared.engine_cache
        tensorrt = bool(names) and names[0] == "TensorrtExecutionProvider"
        if tensorrt and self._trt_engines is not None:
            from runtime.gpu import cached_engines

            # With explicit shape profiles TensorRT builds its engine while the session is
            # created (not on the first run), so whether it builds is known only before that.
            self._trt_building = not cached_engines(self._trt_engines)
        self._trt_started = time.perf_counter()
        try:
            self.session = ort.InferenceSession(source, self._options, providers=provider_list)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types (EPFail...)
            if tensorrt:  # the file was read already (prepare_for_gpu): the engine failed
                raise TensorRTBuildError(f"{self.model_path}: TensorRT could not build its "
                                         f"engine ({first_line(exc)})") from None
            reason = (not_onnx_reason(self.model_path)
                      or f"onnxruntime cannot load it ({first_line(exc)})")
            raise BackendError(f"{self.model_path}: {reason}") from None
        self.providers = list(self.session.get_providers())
        return precision_run

    def _note_tensorrt_build(self, gpu: GpuOptions) -> None:
        """With TensorRT: build its engine now (a first run takes minutes), saying so;
        :class:`TensorRTBuildError` when it cannot."""
        if self.providers[0] != "TensorrtExecutionProvider" or self._trt_engines is None:
            return
        building, started = self._trt_building, self._trt_started
        if self.metadata is not None:
            from runtime.gpu import profile_shapes

            # One call at the profile's optimal shape: the engine is built (if this onnxruntime
            # did not build it with the session) and proven to run now, not mid-stream.
            shape = profile_shapes(self.metadata, max_batch=gpu.max_batch,
                                   max_side=gpu.trt_max_side)["opt"]
            dtype = np.uint8 if self.metadata.io == "uint8" else np.float32
            try:
                self.run(np.zeros(shape, dtype))
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own types (Fail, EPFail)
                raise TensorRTBuildError(f"{self.model_path}: TensorRT could not build its "
                                         f"engine ({first_line(exc)})") from None
        if building:
            self.notes.append(f"TensorRT: built an engine for {self.model_path.name} in "
                              f"{time.perf_counter() - started:.1f} s (first use; cached in "
                              f"{self._trt_engines})")
        else:
            self.notes.append(f"TensorRT: engine from the cache {self._trt_engines}")
        self.notes.append(f"TensorRT profile: up to {gpu.max_batch} frame(s) of "
                          f"{gpu.trt_max_side}x{gpu.trt_max_side}; larger frames run at that "
                          "working size")

    @property
    def custom_metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._bound is not None:
            return self._bound.run(batch)
        return self.session.run([self.output_name], {self.input_name: batch})[0]



_OPENCV_THREADS = threading.Lock()  # OpenCVBackend: around a call that sets the thread count


class OpenCVBackend:
    """OpenCV DNN on the CPU. ``cv2.dnn.Net`` is not thread-safe, so calls are serialised."""

    def __init__(self, model_path: str | Path, providers: str | Sequence[str] = "auto",
                 device_id: int = 0, threads: int | None = None,
                 precision: str = "auto") -> None:
        import cv2

        _own_precision_only("OpenCV DNN", precision)
        try:
            self.net = cv2.dnn.readNetFromONNX(str(model_path))
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1][:200]
            if not _is_readable_onnx(model_path):
                raise BackendError(f"{model_path}: not a readable ONNX model (corrupt or "
                                   "truncated?); export it again") from None
            raise BackendError(f"{model_path}: OpenCV DNN cannot load it ({reason}); "
                               "re-export with --portable-pad or use onnxruntime") from None
        self.threads = threads
        self.providers = [f"OpenCV DNN {cv2.__version__} (CPU)"]
        self.precision = _file_precision(model_path)
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        import cv2

        with self._lock:
            self.net.setInput(np.ascontiguousarray(batch))
            if self.threads is None:
                return np.array(self.net.forward())
            # OpenCV's thread count is the whole process's: set for this call only, so the
            # app's own cv2 calls keep theirs afterwards (and backend="auto" merely trying
            # OpenCV changes nothing); cv2 calls of other threads meanwhile run with it too.
            # One lock for every instance: two that set and restore in turn would otherwise
            # leave the count at one of theirs. A set costs well under a microsecond.
            with _OPENCV_THREADS:
                before = cv2.getNumThreads()
                cv2.setNumThreads(self.threads)
                try:
                    return np.array(self.net.forward())
                finally:
                    cv2.setNumThreads(before)


def openvino_precision_name(value: object) -> str:
    """What OpenVINO calls an element type -> ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``value``: an ``INFERENCE_PRECISION_HINT`` as versions return it: an ``ov.Type`` (printed
    ``<Type: 'bfloat16'>``) or a string (``"bf16"``, ``"f32"``, ``"float16"``...). Raises
    ``ValueError`` for anything else rather than guess a label.
    """
    text = str(value).strip()
    quoted = re.fullmatch(r"<Type:\s*'([^']*)'>", text)
    key = (quoted.group(1) if quoted else text).strip().lower()
    if key not in _OPENVINO_SPELLINGS:
        raise ValueError(f"unknown OpenVINO precision {text!r}")
    return _OPENVINO_SPELLINGS[key]


@functools.cache
def openvino_core() -> Any:
    """The process's one ``openvino.Core``, created on first use and never freed.

    One, not one per backend: OpenVINO's CPU plugin (2026.4) points the loading thread's
    alternate signal stack at a buffer of its own and puts back the previous one when its Core
    goes; two Cores freed in the order they were made (not the reverse) leave the thread on an
    unmapped buffer, and the next signal a Python handler takes (Ctrl-C, SIGCHLD) kills the
    process with SIGSEGV, silently (faulthandler cannot run). Seen as a crash of the whole test
    suite after torch's DataLoader had installed a SIGCHLD handler.
    """
    import openvino as ov

    return ov.Core()


def openvino_precisions() -> list[str]:
    """Inference precisions OpenVINO's CPU plugin offers on this machine, fp32 first (e.g.
    ``["fp32", "bf16", "fp16"]`` on AMX Xeons, ``["fp32"]`` on AVX2-only CPUs); ``[]`` without
    the openvino package."""
    try:
        core = openvino_core()
    except ImportError:
        return []
    offered = {str(c).upper() for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")}
    return ["fp32"] + [p for p in ("bf16", "fp16") if p.upper() in offered]


def _read_inference_precision(compiled: Any) -> object:
    """The compiled model's ``INFERENCE_PRECISION_HINT``, as OpenVINO returns it (a seam for
    tests: CPUs without bf16 units cannot produce a bf16 compile)."""
    return compiled.get_property("INFERENCE_PRECISION_HINT")


def _is_readable_onnx(model_path: str | Path) -> bool:
    """Does onnxruntime load the file? Tells a corrupt file from one that OpenCV DNN cannot
    run (an operator it lacks), which need different advice."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime raises its own types
        return False
    return True


class OpenVINOBackend:
    """OpenVINO on the CPU (optional extra: ``pip install openvino``), reading the same .onnx.

    ``precision="auto"`` lets OpenVINO choose (bf16 on CPUs with AVX-512 BF16 or AMX, fp32
    elsewhere); ``"fp32"``, ``"bf16"``, ``"fp16"`` hold it to that precision, and one this CPU
    cannot run is a :class:`BackendError` (OpenVINO itself falls back to fp32 silently).
    ``precision`` tells what actually runs, read from the compiled model: ``"fp32"``,
    ``"bf16"``, ``"fp16"``, or for an int8/fp16 file its own precision (``"int8+bf16"`` when
    its float layers run in bf16). Calls are serialised (one infer request is not thread-safe).
    """

    def __init__(self, model_path: str | Path, providers: str | Sequence[str] = "auto",
                 device_id: int = 0, threads: int | None = None,
                 precision: str = "auto") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("backend 'openvino' needs the openvino package: "
                               "pip install 'cyclegan-toolkit[openvino]'") from None
        _check_precision(precision)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = _OPENVINO_HINTS[precision]
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        core = openvino_core()
        try:
            self.compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
            raise BackendError(f"{model_path}: OpenVINO cannot load it ({first})") from None
        hint = _read_inference_precision(self.compiled)
        try:
            self.compute_precision = openvino_precision_name(hint)
        except ValueError:
            raise BackendError(f"{model_path}: OpenVINO reports an inference precision this "
                               f"runtime does not know ({hint})") from None
        if precision != "auto" and self.compute_precision != precision:
            needs = OPENVINO_PRECISION_NEEDS.get(precision)
            raise BackendError(
                f"{model_path}: OpenVINO runs {self.compute_precision}, not the requested "
                f"{precision}, on this CPU (available: {', '.join(openvino_precisions())}"
                + (f"; {precision} needs {needs})" if needs else ")"))
        own = _file_precision(model_path)
        # An int8/fp16 file keeps its own precision; its float layers run in compute_precision.
        if own == "fp32":
            self.precision = self.compute_precision
        elif self.compute_precision in ("fp32", own):
            self.precision = own
        else:
            self.precision = f"{own}+{self.compute_precision}"
        self.providers = [f"OpenVINO {ov.get_version().split('-')[0]} CPU ({self.precision})"]
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.outputs[0]
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            result = self._request.infer({0: np.ascontiguousarray(batch)})
            return np.array(result[self._output])


BACKENDS: dict[str, Callable[..., Backend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "opencv": OpenCVBackend,
    "openvino": OpenVINOBackend,
}


def create_backend(name: str, model_path: str | Path, providers: str | Sequence[str] = "auto",
                   device_id: int = 0, threads: int | None = None,
                   precision: str = "auto", gpu: GpuOptions | None = None) -> Backend:
    """Backend ``name`` of :data:`BACKENDS` on ``model_path``; ``precision``: one of
    :data:`PRECISIONS` (what each backend accepts: see the module docstring); ``gpu``: how
    onnxruntime prepares a GPU session (other backends run on the CPU and take none)."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model_path, providers=providers, device_id=device_id,
                                  threads=threads, precision=precision, gpu=gpu)
    return BACKENDS[name](model_path, providers=providers, device_id=device_id, threads=threads,
                          precision=precision)
