"""Inside one benchmark row: load an engine, feed it seeded images, time its calls.

:func:`measure_row` runs in the row's own process (the parent, :mod:`.benchmark`, starts a
fresh spawned process per row), so everything here is picklable in and out, and engine
failures come back as data, not exceptions.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import BACKENDS, OnnxRuntimeBackend, create_backend
from runtime.bench.report import BenchError
from runtime.metadata import read_metadata
from runtime.synthetic import natural_images
from runtime.transforms import to_model_input

# Providers whose rows compare with PyTorch on CUDA rather than on the CPU; their GFLOP/s are
# not divided by the CPU's GEMM rate.
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider",
                           "ROCMExecutionProvider", "MIGraphXExecutionProvider",
                           "DmlExecutionProvider"})


@dataclass(frozen=True)
class Timing:
    """How every row is measured.

    ``iterations`` and ``seconds`` both bound the timed calls (whichever comes first; None means
    no bound from that side, but not both None). ``psnr_images``: how many seeded images each
    row translates for the PSNR column (0 skips it). ``threads``: CPU threads per engine
    (None: each engine's default, usually all cores).
    """

    warmup: int = 5
    iterations: int | None = 30
    seconds: float | None = None
    psnr_images: int = 4
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        if self.warmup < 0:
            raise BenchError(f"--warmup must be >= 0, got {self.warmup}")
        if self.iterations is None and self.seconds is None:
            raise BenchError("give --iterations or --seconds (or both)")
        if self.iterations is not None and self.iterations < 1:
            raise BenchError(f"--iterations must be >= 1, got {self.iterations}")
        if self.seconds is not None and self.seconds <= 0:
            raise BenchError(f"--seconds must be > 0, got {self.seconds}")
        if self.psnr_images < 0:
            raise BenchError(f"--psnr-images must be >= 0, got {self.psnr_images}")


@dataclass(frozen=True)
class RowSpec:
    """What one child process measures (picklable: it crosses the process boundary)."""

    engine: str                 # key of ENGINES
    model: str                  # .onnx path; the checkpoint for engine "pytorch"
    batch: int
    height: int
    width: int
    provider: str = ""          # onnxruntime provider name; "cpu" or "cuda" for PyTorch
    precision: str = "auto"     # asked of the backend: auto | fp32 | bf16 | fp16 (OpenVINO)
    direction: str = "AtoB"     # PyTorch: which generator of a training checkpoint
    reference: bool = False


@dataclass
class RowOutcome:
    """What a child process sends back."""

    provider: str = ""
    precision: str = ""
    io: str = "float"
    color_order: str = "RGB"
    device: str = "cpu"
    times: list[float] = field(default_factory=list)     # seconds per timed call
    outputs: np.ndarray | None = None   # the PSNR images' outputs, in the model's convention
    peak_rss_mib: float | None = None
    base_rss_mib: float | None = None
    load_seconds: float | None = None
    error: str | None = None


@dataclass
class EngineSession:
    """A loaded engine: ``run`` maps one model input batch to its output (numpy both ways)."""

    run: Callable[[np.ndarray], np.ndarray]
    provider: str
    precision: str
    io: str = "float"           # float: NCHW float32 RGB [-1, 1]; uint8: NHWC uint8
    color_order: str = "RGB"
    device: str = "cpu"


# ---- engines (called inside the row's own process) -----------------------------------------

def short_provider(name: str) -> str:
    """The device in a provider description: ``"CUDAExecutionProvider"`` -> ``"CUDA"``,
    ``"OpenCV DNN 5.0.0 (CPU)"`` -> ``"CPU"``, ``"OpenVINO 2026.4.1 CPU (fp32)"`` -> ``"CPU"``."""
    if name.endswith("ExecutionProvider"):
        return name[: -len("ExecutionProvider")]
    device = re.search(r"\b(CPU|GPU|NPU|CUDA)\b", name)
    return device.group(1) if device else name


def _onnxruntime_engine(spec: RowSpec, threads: int | None) -> EngineSession:
    backend = OnnxRuntimeBackend(spec.model, spec.provider or "cpu", threads=threads,
                                 precision=spec.precision)
    # What the session takes: on a GPU a float file is given uint8 IO (and fp16) at load time.
    meta = backend.metadata or read_metadata(spec.model)
    ran = backend.providers[0]
    return EngineSession(backend.run, short_provider(ran), backend.precision, meta.io,
                         meta.color_order, "gpu" if ran in GPU_PROVIDERS else "cpu")


def _opencv_engine(spec: RowSpec, threads: int | None) -> EngineSession:
    meta = read_metadata(spec.model)
    backend = create_backend("opencv", spec.model, threads=threads, precision=spec.precision)
    return EngineSession(backend.run, short_provider(backend.providers[0]), backend.precision,
                         meta.io, meta.color_order)


def _openvino_engine(spec: RowSpec, threads: int | None) -> EngineSession:
    meta = read_metadata(spec.model)
    if "openvino" not in BACKENDS:
        raise BenchError("this runtime has no openvino backend")
    # The backend reads what runs from the compiled model: "auto" becomes bf16 only on CPUs
    # with bf16 units; an int8 file says "int8" (or "int8+bf16").
    backend = create_backend("openvino", spec.model, threads=threads, precision=spec.precision)
    return EngineSession(backend.run, short_provider(backend.providers[0]), backend.precision,
                         meta.io, meta.color_order)


EngineBuilder = Callable[[RowSpec, int | None], EngineSession]
# Engines other packages contribute (the PyTorch peer lives in cyclegan_export, which the
# runtime must not import): setup.cfg entry points in this group, loaded only when a row of
# that engine runs, in that row's own process.
ENGINE_ENTRY_POINTS = "cyclegan_toolkit.bench_engines"


def _plugin(name: str) -> EngineBuilder:
    def build(spec: RowSpec, threads: int | None) -> EngineSession:
        from importlib.metadata import entry_points

        (point,) = [p for p in entry_points(group=ENGINE_ENTRY_POINTS) if p.name == name]
        builder: EngineBuilder = point.load()
        return builder(spec, threads)

    return build


def plugin_engine_names() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(p.name for p in entry_points(group=ENGINE_ENTRY_POINTS))


def check_plugin_source(name: str, model: str, direction: str) -> dict[str, Any] | None:
    """Ask plugin engine ``name`` about the file its rows will load (its builder's ``check``
    attribute, when it has one): what network it holds (``{"architecture": ..., "ngf": ...}``),
    or :class:`~runtime.bench.report.BenchError` when it cannot load it. None without a check.
    """
    from importlib.metadata import entry_points

    points = [p for p in entry_points(group=ENGINE_ENTRY_POINTS) if p.name == name]
    check = getattr(points[0].load(), "check", None) if len(points) == 1 else None
    return None if check is None else check(model, direction)


# Engine name -> builder of a loaded session. A row's spec.engine is one of these keys.
ENGINES: dict[str, EngineBuilder] = {
    "onnxruntime": _onnxruntime_engine,
    "opencv": _opencv_engine,
    "openvino": _openvino_engine,
    **{name: _plugin(name) for name in plugin_engine_names()},
}


def _model_input(images_rgb: np.ndarray, io: str, color_order: str) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 RGB -> the model's input: float NCHW RGB [-1, 1], or uint8 NHWC
    in the model's colour order."""
    if io == "uint8":
        return np.ascontiguousarray(images_rgb[..., ::-1] if color_order == "BGR" else images_rgb)
    return to_model_input(images_rgb, color_order="RGB")


def time_calls(call: Callable[[], object], warmup: int, iterations: int | None,
               seconds: float | None, min_calls: int = 1,
               sync: Callable[[], None] | None = None) -> list[float]:
    """Call ``warmup`` times untimed, then time calls until ``iterations`` calls or ``seconds``
    of timed calls, whichever comes first, but at least ``min_calls``. ``sync`` (e.g.
    ``torch.cuda.synchronize``) ends each timed call, for work a call only queues. Returns
    seconds per call."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    spent = 0.0
    while True:
        started = time.perf_counter()
        call()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - started)
        spent += times[-1]
        if len(times) < min_calls:
            continue
        if iterations is not None and len(times) >= iterations:
            return times
        if seconds is not None and spent >= seconds:
            return times


def _peak_rss_mib() -> float | None:
    """This process's peak resident memory, MiB.

    On Linux from ``VmHWM`` (the high-water mark of this process's own address space):
    ``getrusage``'s ``ru_maxrss`` survives ``exec``, so a spawned child would report at least
    its parent's peak. Elsewhere ``getrusage``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def measure_row(spec: RowSpec, timing: Timing) -> RowOutcome:
    """Load the row's engine and measure it, in the calling process (the parent runs this in a
    fresh child per row). Engine failures come back as ``error``, never as exceptions."""
    outcome = RowOutcome(base_rss_mib=_peak_rss_mib())
    try:
        started = time.perf_counter()
        session = ENGINES[spec.engine](spec, timing.threads)
        outcome.load_seconds = time.perf_counter() - started
        outcome.provider, outcome.precision = session.provider, session.precision
        outcome.io, outcome.color_order, outcome.device = (session.io, session.color_order,
                                                           session.device)
        images = natural_images(spec.batch, spec.height, spec.width, timing.seed)
        feed = _model_input(images, session.io, session.color_order)
        outcome.times = time_calls(lambda: session.run(feed), timing.warmup, timing.iterations,
                                   timing.seconds)
        if timing.psnr_images > 0:
            # Whole batches of the row's own size: fixed-batch models accept nothing else.
            count = -(-timing.psnr_images // spec.batch) * spec.batch
            probe = natural_images(count, spec.height, spec.width, timing.seed + 1)
            outcome.outputs = np.concatenate([
                np.asarray(session.run(_model_input(probe[i:i + spec.batch], session.io,
                                                    session.color_order)))
                for i in range(0, count, spec.batch)])
    except Exception as exc:  # noqa: BLE001 - any engine failure is this row's result
        text = str(exc).strip().splitlines()
        outcome.error = f"{type(exc).__name__}: {text[0] if text else 'failed'}"[:300]
    outcome.peak_rss_mib = _peak_rss_mib()
    return outcome


def run_in_fresh_process(function: Callable[..., Any], *args: Any,
                         env: dict[str, str] | None = None) -> Any:
    """``function(*args)`` in a fresh spawned process (nothing inherited, nothing left over);
    ``env``: extra environment variables for that process only."""
    context = multiprocessing.get_context("spawn")
    saved = {name: os.environ.get(name) for name in env or {}}
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        # The child is started by the first submit and copies os.environ then; restore ours
        # right after.
        os.environ.update(env or {})
        try:
            future = pool.submit(function, *args)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return future.result()
