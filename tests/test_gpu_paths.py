"""What runs on a GPU, checked where it can be: the uint8 IO graph, IO binding with reused
buffers, TensorRT's options and the GPU preparation run on the CPU provider; the real GPU
paths are marked ``gpu`` and skip without CUDA (issue 12)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import runtime.backends as backends
from runtime import Translator
from runtime.backends import (
    BackendError,
    OnnxRuntimeBackend,
    TensorRTBuildError,
    resolve_providers,
)
from runtime.demo import demo_model_path
from runtime.gpu import (
    BOUND_SHAPES_KEPT,
    BoundSession,
    GpuOptions,
    model_digest,
    prepare_for_gpu,
    tensorrt_library,
    tensorrt_options,
    tensorrt_profile,
)
from runtime.graph_edit import convert_to_fp16, with_uint8_io
from runtime.metadata import ModelMetadata
from runtime.metrics import psnr
from runtime.synthetic import natural_images
from runtime.transforms import from_model_output, to_model_input

CPU = ["CPUExecutionProvider"]
CUDA_NAMES = ["CUDAExecutionProvider", "CPUExecutionProvider"]
TRT_NAMES = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    return onnx.load(str(demo_model_path()))


def session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=CPU)


def float_reference(model: onnx.ModelProto, images_bgr: np.ndarray) -> np.ndarray:
    """What the runtime's numpy path makes of ``images_bgr``: uint8 BGR out."""
    run = session(model)
    out = run.run(None, {run.get_inputs()[0].name: to_model_input(images_bgr, "BGR")})[0]
    return from_model_output(out, "BGR")


def session_metadata(run: ort.InferenceSession) -> ModelMetadata:
    return ModelMetadata.from_props(dict(run.get_modelmeta().custom_metadata_map))


def bgr_images(count: int = 2, height: int = 48, width: int = 64) -> np.ndarray:
    return np.ascontiguousarray(natural_images(count, height, width, seed=4)[..., ::-1])


# ---- the uint8 IO graph -------------------------------------------------------------------

@pytest.mark.parametrize("color_order", ["BGR", "RGB"])
def test_uint8_io_graph_computes_exactly_what_numpy_does(float_model: onnx.ModelProto,
                                                         color_order: str) -> None:
    images = bgr_images()
    wrapped = with_uint8_io(float_model, color_order)
    onnx.checker.check_model(wrapped, full_check=True)
    run = session(wrapped)
    feed = images if color_order == "BGR" else np.ascontiguousarray(images[..., ::-1])
    got = run.run(None, {run.get_inputs()[0].name: feed})[0]
    if color_order == "RGB":
        got = got[..., ::-1]
    assert got.dtype == np.uint8 and got.shape == images.shape
    np.testing.assert_array_equal(got, float_reference(float_model, images))
    meta = session_metadata(run)
    assert (meta.io, meta.layout, meta.color_order) == ("uint8", "NHWC", color_order)
    assert run.run(None, {meta.input_name: feed})[0].shape == images.shape  # names still hold
    assert meta.output_name == run.get_outputs()[0].name
    assert meta.value_range == (0.0, 255.0)
    # The file's own model is left as it was.
    assert float_model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # uint8 only at the graph's edges: TensorRT has no uint8 Gather or Transpose, so the
    # Cast to uint8 is the last node and the first Cast reads the input alone.
    last, first = wrapped.graph.node[-1], wrapped.graph.node[0]
    assert last.op_type == "Cast" and last.attribute[0].i == onnx.TensorProto.UINT8
    assert list(last.output) == [wrapped.graph.output[0].name]
    assert first.op_type == "Cast" and list(first.input) == [wrapped.graph.input[0].name]
    uint8_tensors = {wrapped.graph.input[0].name, wrapped.graph.output[0].name}
    assert [node.op_type for node in wrapped.graph.node
            if uint8_tensors & {*node.input}] == ["Cast"]


def test_uint8_io_refuses_a_graph_that_is_not_a_generator(float_model: onnx.ModelProto) -> None:
    two_outputs = onnx.ModelProto()
    two_outputs.CopyFrom(float_model)
    two_outputs.graph.output.append(two_outputs.graph.output[0])
    with pytest.raises(ValueError, match="one input and one output"):
        with_uint8_io(two_outputs)


def test_fp16_conversion_says_so_and_stays_close(float_model: onnx.ModelProto) -> None:
    images = bgr_images()
    half = with_uint8_io(convert_to_fp16(float_model))
    run = session(half)
    assert session_metadata(run).precision == "fp16"
    got = run.run(None, {run.get_inputs()[0].name: images})[0]
    assert psnr(float_reference(float_model, images), got, 255.0) >= 45.0


# ---- IO binding with reused buffers ---------------------------------------------------------

def test_bound_session_matches_a_plain_run_and_reuses_its_buffers(
        float_model: onnx.ModelProto) -> None:
    run = session(with_uint8_io(float_model))
    bound = BoundSession(run, "cpu", layout="NHWC")
    images = bgr_images()
    expected = run.run(None, {"frames": images})[0]
    np.testing.assert_array_equal(bound.run(images), expected)
    slot = bound._free[images.shape][0]
    np.testing.assert_array_equal(bound.run(images), expected)
    assert bound._free[images.shape] == [slot]  # the same buffers, not new ones
    assert bound.shapes == [images.shape]


def test_bound_session_refuses_another_dtype(float_model: onnx.ModelProto) -> None:
    bound = BoundSession(session(float_model), "cpu", layout="NCHW")
    with pytest.raises(ValueError, match="takes float32 input, got float64"):
        bound.run(np.zeros((1, 3, 16, 16)))  # a copy into float32 buffers would be garbage


def test_bound_session_keeps_buffers_for_a_few_shapes_only(float_model: onnx.ModelProto) -> None:
    bound = BoundSession(session(with_uint8_io(float_model)), "cpu", layout="NHWC")
    shapes = [(1, 16 + 4 * i, 24, 3) for i in range(BOUND_SHAPES_KEPT + 2)]
    for shape in shapes:
        assert bound.run(np.zeros(shape, np.uint8)).shape == shape
    assert bound.shapes == shapes[-BOUND_SHAPES_KEPT:]


def run_concurrently(run: ort.InferenceSession, bound: BoundSession, sizes: int) -> None:
    """Six callers at once, each on its own thread, frames of ``sizes`` widths: every result
    equals the plain session's."""
    feeds = [to_model_input(bgr_images(1, 32, 32 + 4 * (i % sizes)), "BGR") for i in range(6)]
    expected = [run.run(None, {run.get_inputs()[0].name: feed})[0] for feed in feeds]
    results: list[np.ndarray | None] = [None] * len(feeds)

    def work(index: int) -> None:
        results[index] = bound.run(feeds[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_bound_session_float_io_and_concurrent_callers(float_model: onnx.ModelProto) -> None:
    run = session(float_model)
    run_concurrently(run, BoundSession(run, "cpu", layout="NCHW"), sizes=2)


def test_bound_session_with_cuda_graphs_does_all_device_work_on_one_thread(
        float_model: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime keeps CUDA graphs per thread and allows no allocation during a capture:
    every run, allocation and release of a graph session happens on one thread of its own,
    whichever threads call it."""
    run = session(float_model)
    bound = BoundSession(run, "cpu", layout="NCHW", cuda_graph=True)
    where: set[str] = set()
    for method in ("_new_slot", "_run_slot"):
        original = getattr(bound, method)

        def recorded(*args: object, _original: Any = original) -> Any:
            where.add(threading.current_thread().name)
            return _original(*args)

        monkeypatch.setattr(bound, method, recorded)
    run_concurrently(run, bound, sizes=3)
    assert len(where) == 1 and next(iter(where)).startswith("cuda-graph")
    assert all(len(slots) == 1 for slots in bound._free.values())  # one set per shape: no races


# ---- TensorRT's options and provider choice -------------------------------------------------

def demo_meta(**changes: object) -> ModelMetadata:
    from dataclasses import replace

    from runtime.metadata import read_metadata

    return replace(read_metadata(demo_model_path()), **changes)  # type: ignore[arg-type]


def test_tensorrt_profile_follows_the_model_metadata() -> None:
    meta = demo_meta()  # size multiple 4, min 8, trained on 128 crops, float IO
    profile = tensorrt_profile(meta, "input", max_batch=8, max_side=1081)
    assert profile == {"trt_profile_min_shapes": "input:1x3x8x8",
                       "trt_profile_opt_shapes": "input:1x3x128x128",
                       "trt_profile_max_shapes": "input:8x3x1084x1084"}
    nhwc = tensorrt_profile(demo_meta(io="uint8", layout="NHWC"), "frames", max_batch=2)
    assert nhwc["trt_profile_max_shapes"] == "frames:2x1920x1920x3"
    fixed = tensorrt_profile(demo_meta(static_size=(256, 256), batch=4), "input", max_batch=8)
    assert set(fixed.values()) == {"input:4x3x256x256"}


def test_tensorrt_options_cache_engines_per_model_content(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path))
    first, second = model_digest(b"weights one"), model_digest(b"weights two")
    assert first != second and len(first) == 16
    options = tensorrt_options(demo_meta(), "input", first, device_id=1, fp16=True, max_batch=8)
    assert options["trt_engine_cache_enable"] and options["trt_fp16_enable"]
    assert options["trt_engine_cache_path"] == str(tmp_path / "tensorrt" / first)
    assert options["trt_timing_cache_path"] == str(tmp_path / "tensorrt")
    assert options["device_id"] == 1 and "trt_profile_opt_shapes" in options


def test_auto_skips_a_listed_tensorrt_whose_libraries_are_missing() -> None:
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", listed, tensorrt_present=False)[0] == \
        "CUDAExecutionProvider"
    assert resolve_providers("auto", listed, tensorrt_present=True)[0] == \
        "TensorrtExecutionProvider"
    assert resolve_providers("tensorrt", listed, tensorrt_present=False) == \
        ["TensorrtExecutionProvider"]  # asked for by name: tried, and its failure reported
    assert tensorrt_library() is None or tensorrt_library().startswith(("libnvinfer", "nvinfer"))


# ---- preparing a model for the GPU ----------------------------------------------------------

def test_cuda_preparation_gives_fp16_uint8_io_by_default(float_model: onnx.ModelProto) -> None:
    prepared = prepare_for_gpu(demo_model_path(), CUDA_NAMES, "auto", GpuOptions(), 1)
    assert prepared.precision == "fp16" and prepared.engine_cache is None
    name, options = prepared.providers[0]
    assert name == "CUDAExecutionProvider" and options["device_id"] == 1
    assert "enable_cuda_graph" not in options
    run = session(prepared.model)
    meta = session_metadata(run)
    assert (meta.io, meta.precision) == ("uint8", "fp16")
    images = bgr_images()
    got = run.run(None, {"frames": images})[0]
    assert psnr(float_reference(float_model, images), got, 255.0) >= 45.0


def test_cuda_preparation_keeps_fp32_when_asked(float_model: onnx.ModelProto) -> None:
    prepared = prepare_for_gpu(demo_model_path(), CUDA_NAMES, "fp32",
                               GpuOptions(cuda_graph=True), 0)
    assert prepared.precision == "fp32"
    assert prepared.providers[0][1]["enable_cuda_graph"] == "1"
    images = bgr_images()
    got = session(prepared.model).run(None, {"frames": images})[0]
    np.testing.assert_array_equal(got, float_reference(float_model, images))
    float_io = prepare_for_gpu(demo_model_path(), CUDA_NAMES, "fp32",
                               GpuOptions(device_io=False), 0)
    assert session_metadata(session(float_io.model)).io == "float"


def test_tensorrt_preparation_builds_in_fp16_with_a_cache_per_model(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path))
    prepared = prepare_for_gpu(demo_model_path(), TRT_NAMES, "auto", GpuOptions(max_batch=4), 0)
    (trt_name, trt), (cuda_name, _), cpu = prepared.providers
    assert (trt_name, cuda_name, cpu) == tuple(TRT_NAMES)
    assert trt["trt_fp16_enable"] and prepared.precision == "fp16"
    # The model TensorRT is given stays float32: it converts inside its engine.
    assert session_metadata(session(prepared.model)).precision == "fp32"
    assert trt["trt_profile_max_shapes"] == "frames:4x1920x1920x3"
    assert prepared.engine_cache == tmp_path / "tensorrt" / model_digest(prepared.model)
    assert prepared.engine_cache.is_dir()  # TensorRT makes only the last level itself
    assert "trt_cuda_graph_enable" not in trt
    exact = prepare_for_gpu(demo_model_path(), TRT_NAMES, "fp32", GpuOptions(), 0)
    assert not exact.providers[0][1]["trt_fp16_enable"] and exact.precision == "fp32"


def test_cuda_graphs_stay_off_with_tensorrt_first(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """onnxruntime fails a session whose CUDA graph does not hold every node (the case when
    TensorRT takes the graph), and TensorRT's own option keeps one graph per session, which
    two buffer sets in flight or a second frame size would replay wrongly: neither is set."""
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path))
    prepared = prepare_for_gpu(demo_model_path(), TRT_NAMES, "auto", GpuOptions(cuda_graph=True))
    (_, trt), (_, cuda), _ = prepared.providers
    assert "trt_cuda_graph_enable" not in trt and "enable_cuda_graph" not in cuda


def test_fp32_on_cuda_turns_tf32_off() -> None:
    """The CUDA provider runs float32 convolutions in TF32 unless told not to: "fp32" means
    float32 arithmetic; fp16 runs do not need the setting."""
    exact = prepare_for_gpu(demo_model_path(), CUDA_NAMES, "fp32", GpuOptions())
    assert exact.precision == "fp32" and exact.providers[0][1]["use_tf32"] == "0"
    half = prepare_for_gpu(demo_model_path(), CUDA_NAMES, "auto", GpuOptions())
    assert half.precision == "fp16" and "use_tf32" not in half.providers[0][1]


def test_tensorrt_needs_the_toolkit_metadata(float_model: onnx.ModelProto,
                                             tmp_path: Path) -> None:
    bare = onnx.ModelProto()
    bare.CopyFrom(float_model)
    del bare.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(bare, str(path))
    with pytest.raises(ValueError, match="TensorRT needs this toolkit's metadata"):
        prepare_for_gpu(path, TRT_NAMES, "auto", GpuOptions(), 0)


def test_onnxruntime_on_a_gpu_refuses_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "resolve_providers", lambda *a, **k: list(CUDA_NAMES))
    with pytest.raises(BackendError, match="bf16: onnxruntime on a GPU runs fp16 or fp32"):
        OnnxRuntimeBackend(demo_model_path(), "auto", precision="bf16")


def test_a_gpu_start_that_falls_back_runs_the_file_as_the_cpu_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where CUDA is listed but cannot start, the model prepared for it (fp16, uint8 IO) is not
    what runs: the session is prepared again for the CPU, so the output, the precision and the
    IO are a plain CPU run's."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is present: the gpu-marked tests cover it")
    monkeypatch.setattr(backends, "resolve_providers", lambda *a, **k: list(CUDA_NAMES))
    with pytest.warns(UserWarning, match="CUDAExecutionProvider could not be initialised"):
        fallen = Translator(demo_model_path(), providers="auto")
    assert (fallen.providers[0], fallen.precision, fallen.metadata.io) == \
        ("CPUExecutionProvider", "fp32", "float")
    monkeypatch.undo()
    plain = Translator(demo_model_path(), providers="cpu")
    image = bgr_images(1, 50, 70)[0]
    np.testing.assert_array_equal(fallen(image), plain(image))


def test_auto_leaves_tensorrt_out_for_an_int8_model(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    model = onnx.load(str(demo_model_path()))
    for prop in model.metadata_props:
        if prop.key == "cyclegan.precision":
            prop.value = '"int8"'  # JSON, as the exporter writes it; all the rule reads
    int8 = tmp_path / "int8.onnx"
    onnx.save(model, str(int8))
    opened: list[list[str]] = []
    original = OnnxRuntimeBackend._open

    def record(self: OnnxRuntimeBackend, names: list[str], *args: object) -> str | None:
        opened.append(list(names))
        return original(self, list(CPU), *args)  # type: ignore[arg-type]

    monkeypatch.setattr(OnnxRuntimeBackend, "_open", record)
    monkeypatch.setattr(backends, "resolve_providers", lambda *a, **k: list(TRT_NAMES))
    with pytest.warns(UserWarning):  # CUDA cannot start here either
        backend = OnnxRuntimeBackend(int8, "auto")
    assert opened[0] == CUDA_NAMES
    assert any("TensorRT skipped" in note for note in backend.notes)
    opened.clear()
    with pytest.raises(BackendError):  # asked for by name: tried, and its failure reported
        OnnxRuntimeBackend(int8, "tensorrt")
    assert opened[0] == TRT_NAMES


class _PlainRun:
    """Stands in for BoundSession where IO binding would need a device: the session's plain
    run."""

    def __init__(self, session: Any, *args: object, **kwargs: object) -> None:
        self.session = session

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]


class _SessionOn:
    """A CPU session of the demo model that reports ``providers`` as the ones it runs on,
    and fails every run while TensorRT is first (an engine that cannot be built)."""

    def __init__(self, providers: list[str]) -> None:
        self.providers = providers
        self.real = ort.InferenceSession(str(demo_model_path()), providers=CPU)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def get_providers(self) -> list[str]:
        return self.providers

    def run(self, *args: object, **kwargs: object) -> object:
        if self.providers[0] == "TensorrtExecutionProvider":
            raise RuntimeError("TensorRT EP failed to create engine from network")
        return self.real.run(*args, **kwargs)


def test_a_tensorrt_engine_that_cannot_be_built_falls_back_to_cuda_under_auto(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    opened: list[list[str]] = []

    def fake_open(self: OnnxRuntimeBackend, names: list[str], precision: str,
                  gpu: GpuOptions) -> str:
        opened.append(list(names))
        self.session = _SessionOn(list(names))  # type: ignore[assignment]
        self.providers = self.session.get_providers()  # as _open reports what runs
        self._trt_engines = tmp_path if names[0] == "TensorrtExecutionProvider" else None
        self._trt_building, self._trt_started = True, 0.0
        return "fp16"

    monkeypatch.setattr(OnnxRuntimeBackend, "_open", fake_open)
    monkeypatch.setattr("runtime.gpu.BoundSession", _PlainRun)
    monkeypatch.setattr(backends, "resolve_providers", lambda *a, **k: list(TRT_NAMES))
    with pytest.warns(UserWarning, match="TensorRT could not build its engine .*; running on "
                                         "CUDA"):
        backend = OnnxRuntimeBackend(demo_model_path(), "auto")
    assert opened == [TRT_NAMES, CUDA_NAMES]
    assert backend.providers[0] == "CUDAExecutionProvider" and backend._trt_engines is None
    assert backend.run(to_model_input(bgr_images(1, 32, 32), "BGR")).shape == (1, 3, 32, 32)
    opened.clear()
    with pytest.raises(BackendError, match="TensorRT could not build its engine .*--providers "
                                           "cuda runs without it"):
        OnnxRuntimeBackend(demo_model_path(), "tensorrt")
    assert opened == [TRT_NAMES]


class _EpFail(Exception):
    """As onnxruntime's ``EPFail``: an ``Exception``, not a ``RuntimeError``."""


class _Reporting:
    """A real CPU session that reports ``names`` as the providers it runs on."""

    def __init__(self, session: ort.InferenceSession, names: list[str]) -> None:
        self.real, self.names = session, names

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def get_providers(self) -> list[str]:
        return self.names


@pytest.mark.parametrize("builds", [True, False])
def test_tensorrt_builds_as_the_session_opens_and_its_failure_falls_back(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, builds: bool) -> None:
    """With explicit shape profiles TensorRT builds its engine inside InferenceSession(): the
    build is timed from before it, and a failure there (onnxruntime's EPFail) falls back to
    CUDA under "auto" instead of failing the Translator."""
    monkeypatch.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path))
    real = ort.InferenceSession

    def session_on(source: object, options: object = None,
                   providers: list[Any] | None = None) -> _Reporting:
        names = [p[0] if isinstance(p, tuple) else p for p in providers or []]
        if names[0] == "TensorrtExecutionProvider":
            if not builds:
                raise _EpFail("[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP failed to "
                              "create engine from network")
            engines = Path(providers[0][1]["trt_engine_cache_path"])  # type: ignore[index]
            (engines / "model.engine").write_bytes(b"engine")
        return _Reporting(real(source, options, providers=CPU), names)

    monkeypatch.setattr(ort, "InferenceSession", session_on)
    monkeypatch.setattr("runtime.gpu.BoundSession", _PlainRun)
    monkeypatch.setattr(backends, "resolve_providers", lambda *a, **k: list(TRT_NAMES))
    if builds:
        backend = OnnxRuntimeBackend(demo_model_path(), "auto")
        assert backend.providers[0] == "TensorrtExecutionProvider"
        assert any(note.startswith("TensorRT: built an engine") for note in backend.notes)
        again = OnnxRuntimeBackend(demo_model_path(), "auto")
        assert any(note.startswith("TensorRT: engine from the cache") for note in again.notes)
        return
    with pytest.warns(UserWarning, match="TensorRT could not build its engine .*EP_FAIL.*; "
                                         "running on CUDA"):
        backend = OnnxRuntimeBackend(demo_model_path(), "auto")
    assert backend.providers[0] == "CUDAExecutionProvider" and backend.precision == "fp16"
    with pytest.raises(TensorRTBuildError, match="--providers cuda runs without it"):
        OnnxRuntimeBackend(demo_model_path(), "tensorrt")


def test_a_corrupt_model_prepared_for_a_gpu_is_one_clear_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(backends, "resolve_providers", lambda *a, **k: list(CUDA_NAMES))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(demo_model_path().read_bytes()[:5000])
    with pytest.raises(BackendError, match="broken.onnx: onnxruntime cannot load it"):
        OnnxRuntimeBackend(broken, "auto")


# ---- on a GPU ---------------------------------------------------------------------------------

def cuda_or_skip() -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider in this onnxruntime build")


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_translator_binds_buffers_and_stays_within_the_fp16_floor(cuda_graph: bool) -> None:
    cuda_or_skip()
    gpu = Translator(demo_model_path(), providers="cuda", cuda_graph=cuda_graph)
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.precision == "fp16"
    assert gpu.backend._bound is not None  # type: ignore[attr-defined]
    cpu = Translator(demo_model_path(), providers="cpu")
    frames = [bgr_images(1, 72, 128)[0] for _ in range(3)]
    for frame in frames:  # the same shape again: replayed (graph) or rebound buffers
        assert psnr(cpu(frame), gpu(frame), 255.0) >= 45.0
    exact = Translator(demo_model_path(), providers="cuda", precision="fp32")
    assert psnr(cpu(frames[0]), exact(frames[0]), 255.0) >= 50.0
