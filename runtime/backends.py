"""Inference backends: one class owns one engine's session and how it is fed.

- :class:`OnnxRuntimeBackend`: onnxruntime with an explicit provider list (TensorRT, CUDA, CPU,
  ...). ``"auto"`` takes the best this build offers and warns when it falls back to the CPU.
  On CUDA the model's inputs and outputs go through IO binding.
- :class:`OpenCVBackend`: the same ``.onnx`` through OpenCV DNN.

Backends take and return numpy arrays in the model's own convention (see
:class:`runtime.metadata.ModelMetadata`); images are :mod:`runtime.translator`'s business.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

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
# What "auto" tries, best first.
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class BackendError(RuntimeError):
    """A backend or provider that cannot be used; the message says why and what exists."""


class ProviderFallbackWarning(UserWarning):
    """``providers="auto"`` found no GPU provider and runs on the CPU."""


class Backend(Protocol):
    providers: list[str]

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_providers(requested: str | Sequence[str] = "auto",
                      available: Sequence[str] | None = None) -> list[str]:
    """Turn ``"auto"``, ``"cuda"``, ``"cuda,cpu"`` or a list into onnxruntime provider names.

    An explicitly requested provider that this onnxruntime build lacks is an error (naming
    what is available); ``"auto"`` picks TensorRT, then CUDA, then CPU and warns on CPU-only.
    """
    available = list(available if available is not None else available_providers())
    if isinstance(requested, str):
        requested = [p.strip() for p in requested.split(",") if p.strip()]
    if not requested or list(requested) == ["auto"]:
        chosen = [p for p in AUTO_ORDER if p in available]
        if "CPUExecutionProvider" not in chosen and "CPUExecutionProvider" in available:
            chosen.append("CPUExecutionProvider")
        if not any(p in chosen for p in AUTO_ORDER[:2]):
            warnings.warn("no GPU execution provider in this onnxruntime build (install "
                          "onnxruntime-gpu for CUDA/TensorRT); running on the CPU",
                          ProviderFallbackWarning, stacklevel=3)
        return chosen
    names = [PROVIDER_ALIASES.get(p.lower(), p) for p in requested]
    missing = [n for n in names if n not in available]
    if missing:
        raise BackendError(f"provider {', '.join(missing)} is not available in this "
                           f"onnxruntime build (available: {', '.join(available)})")
    return names


class OnnxRuntimeBackend:
    """An onnxruntime session; thread-safe (``InferenceSession.run`` may be called
    concurrently)."""

    def __init__(self, model_path: str | Path, providers: str | Sequence[str] = "auto",
                 device_id: int = 0, threads: int | None = None) -> None:
        import onnxruntime as ort

        names = resolve_providers(providers)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        gpu_options = {"device_id": device_id}
        provider_list: list[Any] = [
            (name, gpu_options) if name in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
            else name for name in names
        ]
        try:
            self.session = ort.InferenceSession(str(model_path), options,
                                                providers=provider_list)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{model_path}: onnxruntime cannot load it ({first})") from None
        self.providers = list(self.session.get_providers())
        # onnxruntime drops a provider it cannot initialise (e.g. CUDA without its libraries)
        # and carries on, silently, on the CPU: say so.
        dropped = [name for name in names if name not in self.providers]
        if dropped:
            message = (f"{', '.join(dropped)} could not be initialised (missing CUDA/cuDNN or "
                       f"TensorRT libraries?); running on {self.providers[0]}")
            if isinstance(providers, str) and providers == "auto":
                warnings.warn(message, ProviderFallbackWarning, stacklevel=2)
            else:
                raise BackendError(f"{model_path}: {message}")
        self.device_id = device_id
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.use_io_binding = self.providers[0] == "CUDAExecutionProvider"

    @property
    def custom_metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.use_io_binding:
            # Bind the host array and let onnxruntime place the output on the GPU, then copy
            # once; avoids the extra staging copies of session.run on CUDA.
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
            binding.bind_output(self.output_name, "cuda", self.device_id)
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self.session.run([self.output_name], {self.input_name: batch})[0]


class OpenCVBackend:
    """OpenCV DNN on the CPU. ``cv2.dnn.Net`` is not thread-safe, so calls are serialised."""

    def __init__(self, model_path: str | Path, providers: str | Sequence[str] = "auto",
                 device_id: int = 0, threads: int | None = None) -> None:
        import cv2

        try:
            self.net = cv2.dnn.readNetFromONNX(str(model_path))
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1][:200]
            raise BackendError(f"{model_path}: OpenCV DNN cannot load it ({reason}); "
                               "re-export with --portable-pad or use onnxruntime") from None
        if threads is not None:
            cv2.setNumThreads(threads)
        self.providers = [f"OpenCV DNN {cv2.__version__} (CPU)"]
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.net.setInput(np.ascontiguousarray(batch))
            return np.array(self.net.forward())


class OpenVINOBackend:
    """OpenVINO on the CPU (optional extra: ``pip install openvino``), reading the same .onnx.

    ``precision_hint="auto"`` lets OpenVINO choose: bf16 on CPUs with AVX-512 BF16 or AMX,
    fp32 elsewhere. ``precision`` tells what actually runs. Calls are serialised (one infer
    request is not thread-safe).
    """

    _HINTS = {"auto": None, "fp32": "f32", "bf16": "bf16", "fp16": "f16"}

    def __init__(self, model_path: str | Path, providers: str | Sequence[str] = "auto",
                 device_id: int = 0, threads: int | None = None,
                 precision_hint: str = "auto") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("backend 'openvino' needs the openvino package: "
                               "pip install 'cyclegan-toolkit[openvino]'") from None
        if precision_hint not in self._HINTS:
            raise BackendError(f"unknown OpenVINO precision {precision_hint!r}; choose from "
                               f"{', '.join(self._HINTS)}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self._HINTS[precision_hint] is not None:
            config["INFERENCE_PRECISION_HINT"] = self._HINTS[precision_hint]
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        try:
            self.compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
            raise BackendError(f"{model_path}: OpenVINO cannot load it ({first})") from None
        runs = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        # OpenVINO names types like "f32", "bf16", or "<Type: 'float32'>" depending on version.
        self.precision = "bf16" if "bf16" in runs else ("fp16" if "16" in runs else "fp32")
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
                   device_id: int = 0, threads: int | None = None) -> Backend:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[name](model_path, providers=providers, device_id=device_id, threads=threads)
