"""cyclegan-bench: sane figures on a tiny generator, MAC counts against hand counts, the report's
JSON/table/chart, the command line and the end-to-end figures. No assertion on speed: only on
what the figures must satisfy whatever the machine (p90 >= p50, throughput = batch / mean...).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cyclegan_export import export_onnx
from runtime.bench.benchmark import (
    BenchError,
    BenchReport,
    Timing,
    count_macs,
    machine_info,
    natural_images,
    psnr,
    run_benchmark,
)
from runtime.bench.cli import main as bench_cli
from runtime.bench.e2e import run_end_to_end
from runtime.bench.engines import time_calls
from runtime.bench.report import PIPELINE_TARGET_RATIO, plot_report
from training.networks import build_generator, generator_spec

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, BATCH = 32, 48, 2  # non-square, batch 2: the arithmetic has to use both
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
# One thread per engine: on a loaded 2-core machine, OpenMP pools spinning against each other
# make single calls take seconds; the figures' consistency does not depend on it.
FAST = Timing(warmup=1, iterations=4, psnr_images=2, threads=1)
# Least PSNR (float outputs, range 2) against the onnxruntime fp32 reference, by the precision a
# row REPORTS. fp32: the same arithmetic in another order (or PyTorch itself). bf16 / fp16: the
# tiny generator run wholly in that precision (PyTorch) measured about 49-51 dB / 56-68 dB, and
# OpenVINO bf16 50.6 dB on an AMX Xeon; int8: the export's own floor. A row running two
# precisions ("int8+bf16") is held to the looser one.
PSNR_FLOOR_DB = {"fp32": 80.0, "bf16": 35.0, "fp16": 45.0, "int8": 30.0}


def psnr_floor(precision: str) -> float:
    return min(PSNR_FLOOR_DB[part] for part in precision.split("+"))



@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, generator: torch.nn.Module) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench_models")
    weights = folder / "g.pth"
    torch.save(generator.state_dict(), weights)
    calibration = folder / "calibration"
    calibration.mkdir()
    import cv2

    for index, image in enumerate(natural_images(8, 64, 64, seed=7)):
        cv2.imwrite(str(calibration / f"{index}.png"), image[..., ::-1])
    out = {"weights": weights, "fp32": folder / "fp32.onnx", "int8": folder / "int8.onnx"}
    export_onnx(weights, out["fp32"], verify=False)
    export_onnx(weights, out["int8"], precision="int8", calibration=calibration, verify=False)
    return out


@pytest.fixture(scope="module")
def report(models: dict[str, Path]) -> BenchReport:
    """fp32 + int8 on every installed engine, PyTorch eager as the peer, each row isolated."""
    return run_benchmark([models["fp32"], models["int8"]], checkpoint=models["weights"],
                         batches=[BATCH], sizes=[(HEIGHT, WIDTH)], timing=FAST, gemm_size=256)


def torch_macs(net: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Independent count: forward hooks on every convolution of the PyTorch network."""
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
             output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
        kernel = math.prod(module.kernel_size)
        if isinstance(module, torch.nn.ConvTranspose2d):
            total += inputs[0].numel() * module.out_channels // module.groups * kernel
        else:
            total += output.numel() * module.in_channels // module.groups * kernel

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    with torch.no_grad():
        net(torch.zeros(shape))
    for handle in handles:
        handle.remove()
    return total


# ---- figures --------------------------------------------------------------------------------

def test_count_macs_matches_a_hand_count(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    def weight(name: str, shape: tuple[int, ...]) -> TensorProto:
        return numpy_helper.from_array(np.zeros(shape, np.float32), name)

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),           # 3->4, 3x3
         helper.make_node("ConvTranspose", ["a", "w2"], ["b"], strides=[2, 2]),     # 4->4, 2x2
         helper.make_node("Conv", ["b", "w3"], ["y"], group=2),                     # 4->6, 1x1/2
         helper.make_node("Relu", ["y"], ["z"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [weight("w1", (4, 3, 3, 3)), weight("w2", (4, 4, 2, 2)), weight("w3", (6, 2, 1, 1))])
    path = tmp_path / "tiny.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                     .SerializeToString())
    n, h, w = 2, 8, 10
    conv = n * 4 * h * w * (3 * 3 * 3)                    # every output: C_in * kH * kW terms
    transpose = n * 4 * h * w * (4 * 2 * 2)               # every input scattered to C_out*kH*kW
    grouped = n * 6 * (2 * h) * (2 * w) * (4 // 2)        # groups: C_in / 2 terms per output
    assert count_macs(path, (n, 3, h, w)) == conv + transpose + grouped


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_count_macs_of_an_export_matches_pytorch(models: dict[str, Path],
                                                 generator: torch.nn.Module, kind: str) -> None:
    # The fp32 export computes its reflect padding in-graph: counted only after folding.
    shape = (BATCH, 3, HEIGHT, WIDTH)
    assert count_macs(models[kind], shape) == torch_macs(generator, shape)


def test_count_macs_is_none_without_onnx(models: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    assert count_macs(models["fp32"], (1, 3, 32, 32)) is None


def test_psnr_and_test_images() -> None:
    images = natural_images(2, 16, 24, seed=3)
    assert images.shape == (2, 16, 24, 3) and images.dtype == np.uint8
    assert np.array_equal(images, natural_images(2, 16, 24, seed=3))
    assert psnr(images, images, 255.0) == math.inf
    noisy = images.astype(np.float64) + 1.0  # MSE 1 -> 20 log10(255)
    assert psnr(images, noisy, 255.0) == pytest.approx(20 * math.log10(255.0))


@pytest.mark.parametrize(("iterations", "seconds", "calls"), [(3, None, 3), (None, 1e-9, 1),
                                                              (2, 60.0, 2)])
def test_time_calls_stops_at_the_first_bound(iterations: int | None, seconds: float | None,
                                             calls: int) -> None:
    count = 0

    def call() -> None:
        nonlocal count
        count += 1

    times = time_calls(call, 2, iterations, seconds)
    assert len(times) == calls and count == calls + 2 and all(t >= 0 for t in times)


def test_machine_info_is_recorded() -> None:
    info = machine_info(gemm_size=128, isolate=False)
    assert info.cpu and info.cores_logical >= info.cores_usable >= 1
    assert info.gemm_gflops is not None and info.gemm_gflops > 0
    assert info.versions["numpy"] == np.__version__ and info.versions["onnxruntime"]
    assert "CPUExecutionProvider" in info.onnxruntime_providers
    assert info.tag and all(c.isalnum() or c == "-" for c in info.tag)


# ---- the benchmark run --------------------------------------------------------------------------

def test_every_row_reports_consistent_figures(report: BenchReport,
                                              generator: torch.nn.Module) -> None:
    macs = torch_macs(generator, (BATCH, 3, HEIGHT, WIDTH))
    assert report.rows
    for row in report.rows:
        assert row.ok, f"{row.label}: {row.error}"
        assert (row.batch, row.height, row.width) == (BATCH, HEIGHT, WIDTH)
        assert row.iterations == FAST.iterations
        assert row.latency_mean_ms is not None and row.throughput_ips is not None
        assert row.latency_p50_ms is not None and row.latency_p90_ms is not None
        assert 0 < row.latency_p50_ms <= row.latency_p90_ms
        assert row.throughput_ips == pytest.approx(BATCH * 1000.0 / row.latency_mean_ms)
        assert row.macs == macs
        assert row.gflops == pytest.approx(2 * macs / (row.latency_mean_ms / 1000) / 1e9)
        assert row.gflops is not None and report.machine.gemm_gflops is not None
        assert row.gemm_fraction == pytest.approx(row.gflops / report.machine.gemm_gflops)
        assert row.peak_rss_mib is not None and row.base_rss_mib is not None
        assert row.peak_rss_mib >= row.base_rss_mib > 0
        assert row.load_seconds is not None and row.load_seconds >= 0


def test_rows_cover_the_installed_engines(report: BenchReport) -> None:
    engines = {row.engine for row in report.rows}
    assert {"onnxruntime", "opencv", "pytorch"} <= engines
    assert ("openvino" in engines) == HAS_OPENVINO
    precisions = {(row.engine, row.model): row.precision for row in report.rows}
    assert precisions[("onnxruntime", "int8.onnx")] == "int8"
    assert precisions[("pytorch", "g.pth")] == "fp32"
    if HAS_OPENVINO:  # what OpenVINO says it runs: automatic (bf16 on CPUs with bf16 units),
        # then fp32 as well where that was not fp32
        openvino = [row.precision for row in report.rows
                    if row.engine == "openvino" and row.model == "fp32.onnx"]
        assert openvino[-1] == "fp32" and set(openvino) <= {"fp32", "bf16", "fp16"}


def test_psnr_against_the_fp32_reference(report: BenchReport) -> None:
    reference = [row for row in report.rows if row.reference]
    assert len(reference) == 1 and reference[0].psnr_db == math.inf
    assert (reference[0].engine, reference[0].provider, reference[0].model) == \
        ("onnxruntime", "CPU", "fp32.onnx")
    for row in report.rows:
        assert row.psnr_db is not None
        assert row.model != "int8.onnx" or row.precision.startswith("int8"), row.label
        assert row.psnr_db >= psnr_floor(row.precision), row.label


def test_ratios_against_pytorch_eager(report: BenchReport) -> None:
    eager = next(row for row in report.rows if row.engine == "pytorch")
    assert eager.vs_pytorch == 1.0 and eager.throughput_ips is not None
    for row in report.rows:
        assert row.throughput_ips is not None
        assert row.vs_pytorch == pytest.approx(row.throughput_ips / eager.throughput_ips)
    lines = report.ratio_lines()
    assert len(lines) == len(report.rows) - 1 and all("x PyTorch eager" in line for line in lines)


def test_each_row_runs_in_its_own_process(report: BenchReport) -> None:
    # Rows after the PyTorch one would otherwise carry torch's memory in their peak.
    eager = next(row for row in report.rows if row.engine == "pytorch")
    onnx_rows = [row for row in report.rows if row.engine == "onnxruntime"]
    assert eager.peak_rss_mib is not None
    assert all(row.peak_rss_mib is not None and row.peak_rss_mib < eager.peak_rss_mib
               for row in onnx_rows)


def test_report_round_trips_through_strict_json(report: BenchReport, tmp_path: Path) -> None:
    path = report.save_json(tmp_path / "bench.json")

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(path.read_text(), parse_constant=no_constants)
    assert data["machine"]["tag"] == report.machine.tag
    assert BenchReport.load_json(path) == report


def test_table_and_markdown_show_every_row(report: BenchReport) -> None:
    table, markdown = report.table(), report.markdown()
    assert "p50 ms" in table and "PSNR dB" in table
    assert len(table.splitlines()) == len(report.rows) + 2
    for row in report.rows:
        assert row.label in table and row.label in markdown
    assert "(ref)" in table and "inf" in table
    assert markdown.count("\n| ") == len(report.rows) + 1


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed")
@pytest.mark.parametrize("metric", ["throughput", "latency"])
def test_plot_is_written(report: BenchReport, tmp_path: Path, metric: str) -> None:
    path = plot_report(report, tmp_path / "chart.png", metric)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_so(report: BenchReport, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(BenchError, match="needs matplotlib"):
        plot_report(report, tmp_path / "chart.png")


def test_openvino_bf16_gets_an_fp32_row_too(models: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Where OpenVINO's automatic precision picks bf16 (AVX-512 BF16 / AMX CPUs), the fp32 row
    is measured as well. Faked here (in-process rows) by an engine that reports bf16 for
    "auto", so the logic runs on any CPU."""
    import runtime.bench.benchmark as bench_module
    from runtime.bench.engines import ENGINES, EngineSession, RowSpec

    def fake_openvino(spec: RowSpec, threads: int | None) -> EngineSession:
        session = ENGINES["onnxruntime"](replace(spec, provider="cpu"), threads)
        session.precision = "bf16" if spec.precision == "auto" else spec.precision
        return session

    monkeypatch.setitem(ENGINES, "openvino", fake_openvino)
    monkeypatch.setattr(bench_module, "available_engines",
                        lambda checkpoint=None: ["onnxruntime", "openvino"])
    said: list[str] = []
    result = run_benchmark([models["fp32"]], engines=["openvino"], sizes=[32], gemm_size=0,
                           isolate=False, timing=Timing(warmup=0, iterations=2, psnr_images=1),
                           progress=said.append)
    assert [row.label for row in result.rows] == [
        "onnxruntime CPU fp32", "OpenVINO CPU bf16", "OpenVINO CPU fp32"]
    # progress counts rows, the one added on the way included, with the pace and time left
    rows = [line for line in said if line.startswith("[")]
    assert [line.split("]")[0] + "]" for line in rows] == ["[1/2]", "[2/2]", "[3/3]"]
    assert re.search(r" \([\d.]+ s a row, about \d+ s left\)$", rows[1]), rows
    assert all(row.ok and row.psnr_db == math.inf for row in result.rows)
    assert result.machine.gemm_gflops is None and result.rows[1].gemm_fraction is None


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "noisy"])
def test_psnr_floor_follows_the_reported_precision(models: dict[str, Path],
                                                   generator: torch.nn.Module,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   precision: str) -> None:
    """The floors above, driven on any CPU with each precision a row can report: an OpenVINO
    stand-in computes the generator in that precision (PyTorch) and says so. Its row meets
    its own floor; reduced precision misses the fp32 floor; a noisy (~30 dB) row misses every
    floating-point floor."""
    import runtime.bench.benchmark as bench_module
    from runtime.bench.engines import ENGINES, EngineSession, RowSpec

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
             "noisy": torch.float32}[precision]
    net = copy.deepcopy(generator).to(dtype)

    def stand_in(spec: RowSpec, threads: int | None) -> EngineSession:
        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = net(torch.from_numpy(batch).to(dtype)).float().numpy()
            if precision == "noisy":
                out = out + np.random.default_rng(0).normal(0, 0.063, out.shape)  # ~30 dB
            return out.astype(np.float32)

        return EngineSession(run, "CPU", "fp32" if precision == "noisy" else precision)

    monkeypatch.setitem(ENGINES, "openvino", stand_in)
    monkeypatch.setattr(bench_module, "available_engines",
                        lambda checkpoint=None: ["onnxruntime", "openvino"])
    result = run_benchmark([models["fp32"]], engines=["openvino"], sizes=[32], gemm_size=0,
                           isolate=False, timing=Timing(warmup=0, iterations=1, psnr_images=2))
    row = result.rows[1]
    assert row.engine == "openvino" and row.psnr_db is not None
    if precision == "noisy":
        assert all(row.psnr_db < floor for name, floor in PSNR_FLOOR_DB.items()
                   if name != "int8"), row.psnr_db
        return
    assert row.precision == precision and row.psnr_db >= psnr_floor(precision), row.psnr_db
    if precision != "fp32":
        assert row.psnr_db < psnr_floor("fp32"), row.psnr_db


@pytest.mark.parametrize(("model", "compiled", "label"), [
    ("fp32", "<Type: 'bfloat16'>", "bf16"), ("fp32", "f32", "fp32"), ("fp32", "f16", "fp16"),
    ("int8", "bf16", "int8+bf16"), ("int8", "<Type: 'float32'>", "int8"),
])
def test_openvino_rows_say_what_the_compiled_model_runs(models: dict[str, Path],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        model: str, compiled: str,
                                                        label: str) -> None:
    """The row's precision is the backend's reading of the compiled model (faked: bf16 and
    fp16 compiles need CPUs that have them), combined with an int8 file's own precision."""
    pytest.importorskip("openvino")
    from runtime import backends as backends_module
    from runtime.bench.engines import ENGINES, RowSpec

    monkeypatch.setattr(backends_module, "_read_inference_precision", lambda c: compiled)
    session = ENGINES["openvino"](RowSpec("openvino", str(models[model]), 1, 32, 32), 1)
    assert session.precision == label


# ---- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"sizes": [30]}, "multiples of 4"),
    ({"sizes": [4]}, "at least 8"),
    ({"batches": [0]}, "--batch-size must be >= 1"),
    ({"engines": ["pytorch"]}, "engine 'pytorch' is not available"),
    ({"providers": "NoSuchExecutionProvider"}, "not available in this onnxruntime build"),
    ({"timing": Timing(iterations=None, seconds=None)}, "--iterations or --seconds"),
])
def test_unusable_requests_are_refused_before_running(models: dict[str, Path],
                                                      options: dict[str, object],
                                                      message: str) -> None:
    with pytest.raises(BenchError, match=message):
        run_benchmark([models["fp32"]], gemm_size=0, **options)  # type: ignore[arg-type]


def test_pytorch_peer_follows_the_reference_models_direction(tiny_checkpoint: Path,
                                                             tmp_path: Path) -> None:
    """A BtoA export benchmarked against its training checkpoint: by default the PyTorch row
    runs G_BA too (the same generator: fp32 PSNR); an explicit --direction AtoB is honoured
    but noted, and its PSNR shows it is another generator."""
    model = tmp_path / "BtoA.onnx"
    export_onnx(tiny_checkpoint, model, direction="BtoA", verify=False)
    common: dict[str, object] = dict(checkpoint=tiny_checkpoint, engines=["onnxruntime",
                                     "pytorch"], providers="cpu", sizes=[32], timing=FAST,
                                     gemm_size=0, isolate=False)
    followed = run_benchmark([model], **common)  # type: ignore[arg-type]
    eager = next(row for row in followed.rows if row.engine == "pytorch")
    assert followed.settings["direction"] == "BtoA"
    assert not [note for note in followed.notes if "--direction" in note]
    assert eager.psnr_db is not None and eager.psnr_db >= PSNR_FLOOR_DB["fp32"]
    crossed = run_benchmark([model], direction="AtoB", **common)  # type: ignore[arg-type]
    eager = next(row for row in crossed.rows if row.engine == "pytorch")
    assert crossed.settings["direction"] == "AtoB"
    assert [note for note in crossed.notes if note.startswith("--direction AtoB, but BtoA.onnx "
                                                             "is the BtoA generator")]
    assert eager.psnr_db is not None and eager.psnr_db < 40


def test_another_runs_weights_as_the_checkpoint_are_noted_in_every_report(
        models: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(11)
    other = tmp_path / "other_run.pth"  # the same architecture, other weights
    torch.save(build_generator(generator_spec("resnet_6blocks", ngf=8)).state_dict(), other)
    report = run_benchmark([models["fp32"]], checkpoint=other, engines=["onnxruntime",
                           "pytorch"], providers="cpu", sizes=[32], timing=FAST, gemm_size=0,
                           isolate=False)
    said = "other_run.pth is not the file fp32.onnx was exported from"
    assert [note for note in report.notes if note.startswith(said)]
    assert f"- note: {said}" in report.markdown()  # the notes travel with the table
    same = run_benchmark([models["fp32"]], checkpoint=models["weights"], engines=["onnxruntime",
                         "pytorch"], providers="cpu", sizes=[32], timing=FAST, gemm_size=0,
                         isolate=False)
    assert not [note for note in same.notes if "was exported from" in note]


def test_a_checkpoint_that_is_not_the_models_or_cannot_load_is_refused_up_front(
        models: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    torch.save(build_generator(generator_spec("unet_128", ngf=8)).state_dict(), other)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(models["weights"].read_bytes()[:1000])
    for checkpoint, message in [(other, "other.pth: holds a unet_128 generator with ngf 8, but "
                                        "fp32.onnx is a resnet_6blocks with ngf 8"),
                                (broken, "broken.pth: is truncated or damaged")]:
        with pytest.raises(BenchError, match=message):
            run_benchmark([models["fp32"]], checkpoint=checkpoint, engines=["onnxruntime",
                          "pytorch"], gemm_size=0, isolate=False, timing=FAST,
                          progress=lambda line: pytest.fail(f"a row ran: {line}"))
    skipped = run_benchmark([models["fp32"]], checkpoint=models["weights"],
                            engines=["onnxruntime"], sizes=[32], gemm_size=0, isolate=False,
                            timing=FAST)
    assert skipped.notes[0] == ("PyTorch eager skipped: --engine leaves it out, so "
                                "--checkpoint is unused")


def test_the_checkpoint_check_keeps_torch_out_of_the_benchmarks_process(
        models: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    torch.save(build_generator(generator_spec("unet_128", ngf=8)).state_dict(), other)
    script = f"""
import sys
from runtime.bench.benchmark import BenchError, Timing, run_benchmark
try:
    run_benchmark([{str(models["fp32"])!r}], checkpoint={str(other)!r},
                  engines=["onnxruntime", "pytorch"], gemm_size=0, timing=Timing(iterations=1))
except BenchError as exc:
    print("refused:", exc)
print("torch imported:", "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert "refused: " in done.stdout and "holds a unet_128 generator" in done.stdout, \
        done.stderr
    assert "torch imported: False" in done.stdout


def test_another_network_gets_no_psnr_nor_pytorch_ratio(models: dict[str, Path],
                                                        tmp_path: Path) -> None:
    torch.manual_seed(5)
    other_weights = tmp_path / "other.pth"
    torch.save(build_generator(generator_spec("resnet_6blocks", ngf=8)).state_dict(),
               other_weights)
    other = tmp_path / "other.onnx"
    export_onnx(other_weights, other, verify=False)
    report = run_benchmark([models["fp32"], models["int8"], other], checkpoint=models["weights"],
                           engines=["onnxruntime", "pytorch"], providers="cpu", sizes=[32],
                           timing=FAST, gemm_size=0, isolate=False)
    rows = {row.model: row for row in report.rows if row.engine == "onnxruntime"}
    assert rows["other.onnx"].psnr_db is None and rows["other.onnx"].vs_pytorch is None
    assert rows["int8.onnx"].psnr_db is not None and rows["int8.onnx"].vs_pytorch is not None
    assert "other.onnx is another network than fp32.onnx: its rows have no PSNR and no " \
        "PyTorch ratio" in report.notes
    assert all("other.onnx" not in line for line in report.ratio_lines())


def test_a_busy_machine_and_unsteady_rows_are_said(models: dict[str, Path]) -> None:
    import runtime.bench.benchmark as benchmark_module
    from runtime.bench.benchmark import _CpuSnapshot

    report = run_benchmark([models["fp32"]], engines=["onnxruntime"], providers="cpu",
                           sizes=[32], timing=FAST, gemm_size=0, isolate=False)
    cores = os.cpu_count() or 1
    # 10 s in which the machine was busy for 8 core-seconds per core, 2 of them ours
    busy = benchmark_module._steadiness_notes(report, _CpuSnapshot(0.0, 0.0, 0.0),
                                              _CpuSnapshot(8.0 * cores, 2.0, 10.0))
    share = (8.0 * cores - 2.0) / (10.0 * cores)
    assert busy[0] == (f"other processes kept {share:.0%} of the CPU busy while the rows ran: "
                       "figures, and the PyTorch ratios most, may not reproduce on a quiet "
                       "machine")
    quiet = _CpuSnapshot(1.0 * cores, 1.0 * cores, 10.0)  # all of it ours
    assert not [note for note in benchmark_module._steadiness_notes(
        report, _CpuSnapshot(0.0, 0.0, 0.0), quiet) if note.startswith("other processes")]
    row = report.rows[0]
    row.latency_p90_ms = 3 * (row.latency_p50_ms or 1.0)
    row.gemm_fraction = 1.5
    notes = benchmark_module._steadiness_notes(report, None, None)
    assert row.precision == "fp32"
    assert notes == [f"unsteady (p90 over twice p50): {row.label} fp32.onnx b{row.batch} "
                     f"{row.size}", "1 fp32 row(s) above 100% of the fp32 GEMM rate: the "
                     "yardstick was measured low (a busy machine, or a --gemm-size too small)"]
    row.precision = "int8"  # int8 arithmetic may honestly beat the fp32 GEMM rate
    assert not [note for note in benchmark_module._steadiness_notes(report, None, None)
                if "GEMM" in note]


def test_cli_refuses_an_unwritable_report_before_any_work(models: dict[str, Path],
                                                           tmp_path: Path) -> None:
    in_the_way = tmp_path / "notes.txt"
    in_the_way.write_text("a file where the report's folder would be")
    result = CliRunner().invoke(bench_cli, [str(models["fp32"]), "--json",
                                            str(in_the_way / "b.json"), "--size", "32"])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {in_the_way / 'b.json'}: cannot write here")
    assert "[1/" not in result.output  # no row ran


def test_cli_benchmarks_a_file_named_twice_once(models: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_cli, [str(models["fp32"]), "--int8", str(models["fp32"]),
                                            "--engine", "onnxruntime", "--size", "32",
                                            "--iterations", "2", "--warmup", "0",
                                            "--psnr-images", "1", "--gemm-size", "0",
                                            "--no-isolate", "--json", str(tmp_path / "r.json"),
                                            "-q"])
    assert result.exit_code == 0, result.output
    assert f"warning: {models['fp32']} is given twice; benchmarking it once" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert [row["model"] for row in data["rows"]] == ["fp32.onnx"]
    assert all(row["peak_rss_mib"] is None for row in data["rows"])


def test_cli_direction_without_checkpoint_warns(models: dict[str, Path]) -> None:
    result = CliRunner().invoke(bench_cli, [str(models["fp32"]), "--direction", "BtoA",
                                            "--size", "x"])
    assert result.exit_code != 0
    assert "warning: --direction picks a generator of --checkpoint; without one it changes " \
        "nothing" in result.output


def test_missing_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no such file"):
        run_benchmark([tmp_path / "missing.onnx"], gemm_size=0)


# ---- command line ----------------------------------------------------------------------------

def test_cli_prints_the_table_and_writes_outputs(models: dict[str, Path], tmp_path: Path) -> None:
    args = [str(models["fp32"]), "--engine", "onnxruntime", "--size", "32", "--batch-size", "1",
            "--iterations", "3", "--warmup", "1", "--gemm-size", "128", "--psnr-images", "1",
            "--threads", "1", "-q", "--json", str(tmp_path / "b.json"), "--markdown",
            str(tmp_path / "b.md")]
    if HAS_MATPLOTLIB:
        args += ["--plot", str(tmp_path / "b.png")]
    result = CliRunner().invoke(bench_cli, args)
    assert result.exit_code == 0, result.output
    assert "onnxruntime CPU fp32 (ref)" in result.output and "p50 ms" in result.output
    loaded = BenchReport.load_json(tmp_path / "b.json")
    assert [row.label for row in loaded.rows] == ["onnxruntime CPU fp32"]
    assert loaded.rows[0].psnr_db == math.inf and loaded.rows[0].batch == 1
    assert loaded.machine.gemm_threads == 1  # the yardstick ran on the engines' thread count
    assert (tmp_path / "b.md").read_text().startswith("**")
    assert not HAS_MATPLOTLIB or (tmp_path / "b.png").stat().st_size > 0
    again = CliRunner().invoke(bench_cli, args)  # its own earlier reports: replaced
    assert again.exit_code == 0, again.output


def test_cli_speaks_the_shared_vocabulary(models: dict[str, Path], tmp_path: Path) -> None:
    fast = [str(models["fp32"]), "--engine", "onnxruntime", "--size", "32", "--iterations", "1",
            "--warmup", "0", "--gemm-size", "0", "--psnr-images", "0", "-q"]
    result = CliRunner().invoke(bench_cli, [*fast, "--batch", "2", "-o", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output  # --batch: the old spelling of --batch-size
    assert "| fp32.onnx |     2 | 32x32 |" in (tmp_path / "r.md").read_text()
    for extra, message in [(["-o", str(tmp_path / "r.txt")], "give a .json, .md or .png file"),
                           (["-o", str(tmp_path / "a.json"), "--json", str(tmp_path / "b.json")],
                            "both name the .json report")]:
        refused = CliRunner().invoke(bench_cli, [*fast, *extra])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    assert "--batch " not in CliRunner().invoke(bench_cli, ["--help"]).output


def test_cli_never_writes_over_a_model_or_a_foreign_file(models: dict[str, Path],
                                                         tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(models["fp32"].read_bytes())
    photo = tmp_path / "photo.json"
    photo.write_text("the user's own file")
    fast = ["--engine", "onnxruntime", "--size", "32", "--iterations", "1", "--warmup", "0",
            "--gemm-size", "0", "--psnr-images", "0", "-q"]
    for option, target, reason in [("--json", model, "would replace a model being benchmarked"),
                                   ("--markdown", photo, "exists and was not written by "
                                                         "cyclegan-bench"),
                                   ("--json", tmp_path, "is a folder")]:
        result = CliRunner().invoke(bench_cli, [str(model), *fast, option, str(target)])
        assert result.exit_code == 2, result.output
        assert reason in result.output and "p50 ms" not in result.output  # before any work
    assert model.read_bytes() == models["fp32"].read_bytes()
    assert photo.read_text() == "the user's own file"


def test_cli_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_cli, [str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'nope.onnx'}: no such file"


def test_cli_rejects_a_malformed_size(models: dict[str, Path]) -> None:
    result = CliRunner().invoke(bench_cli, [str(models["fp32"]), "--size", "32x"])
    assert result.exit_code == 2 and "expected N or HxW" in result.output


# ---- end to end ------------------------------------------------------------------------------

def test_end_to_end_figures(models: dict[str, Path], tmp_path: Path) -> None:
    result = run_end_to_end(models["fp32"], size=32, batch=2, images=6, video_frames=6,
                            live_frames=5, threads=1, iterations=5, workdir=tmp_path)
    assert result.model_only_ips > 0 and result.folder_ips > 0 and result.video_ips > 0
    assert result.folder_images == 6 and result.video_frames == 6
    assert 1 <= result.live_frames <= 5 and result.live_fps > 0 and result.live_model_ms > 0
    assert result.live_overhead_fraction >= 0 and 0 <= result.live_wait_fraction <= 1
    assert result.folder_ratio == pytest.approx(result.folder_ips / result.model_only_ips)
    assert 1 <= result.live_source_fps <= 1000
    assert len(list((tmp_path / "images_out").glob("[!.]*"))) == 6
    # --temporal: the live loop with it, and the pan clip with and without it
    assert result.live_temporal_frames >= 1 and result.live_temporal_overhead_fraction is not None
    assert result.live_temporal_fps and result.live_temporal_model_ms
    assert result.warp_error is not None and result.warp_error_temporal is not None
    assert result.temporal_ms is not None and result.temporal_ms > 0
    assert (result.temporal_width, result.temporal_height) == (640, 480)
    text = "\n".join(result.lines())
    assert f">= {PIPELINE_TARGET_RATIO:.0%}" in text and "<= 10%" in text
    assert "live --temporal" in text and "warping error" in text


@pytest.mark.slow
def test_run_all_quick_writes_results(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick",
                           "--out", str(tmp_path), "--tag", "ci", "--threads", "1"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = BenchReport.load_json(tmp_path / "ci.json")
    assert {row.model.split("_")[-1] for row in loaded.rows} >= {"fp32.onnx", "int8.onnx"}
    assert all(row.ok for row in loaded.rows) and len(loaded.end_to_end) == 1
    assert "| row" in (tmp_path / "ci.md").read_text()
    assert not HAS_MATPLOTLIB or (tmp_path / "ci.png").is_file()
    # a result file of someone else's is never replaced: refused before any work
    foreign = tmp_path / "mine.md"
    foreign.write_text("my notes")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick",
                           "--out", str(tmp_path), "--tag", "mine"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0 and foreign.read_text() == "my notes"
    assert f"{foreign}: exists and was not written by this script" in done.stderr


def test_run_all_names_results_by_plan() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import run_all
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    tag = run_all.machine_info(gemm_size=0).tag
    full, quick = run_all.PLANS["full"], run_all.PLANS["quick"]
    assert run_all.result_name(full, None, None) == tag
    assert run_all.result_name(quick, None, None) == f"{tag}-quick"
    assert run_all.result_name(replace(full, iterations=1), None, None) == f"{tag}-custom"
    assert run_all.result_name(full, None, 1) == f"{tag}-custom"
    assert run_all.result_name(quick, "ci", 1) == "ci"


# ---- pipeline ceiling (issue 12) --------------------------------------------------------------

def test_pipeline_ceiling_row_times_the_runtime_without_a_model(
        models: dict[str, Path], report: BenchReport, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.bench.e2e import NullBackend, measure_pipeline_ceiling
    calls: list[tuple[int, ...]] = []
    original = NullBackend.run

    def counted(self: NullBackend, feed: np.ndarray) -> np.ndarray:
        calls.append(feed.shape)
        return original(self, feed)

    monkeypatch.setattr(NullBackend, "run", counted)
    rows = measure_pipeline_ceiling(models["fp32"], sizes=((24, 32),), frames=4, rounds=2,
                                    preset="ultrafast", workdir=tmp_path)
    (row,) = rows
    assert (row.height, row.width, row.video_frames) == (24, 32, 4)
    assert row.translate_fps > 0 and row.video_fps > 0
    assert row.decode_fps > 0 and row.encode_fps > 0 and row.video_cpu_ms > 0
    assert row.folder_fps > 0 and row.device_io
    # warm-up, then each round: 4 translate (float NCHW), 4 images and 4 frames (uint8 NHWC,
    # as the model's GPU session takes them)
    assert len(calls) == 1 + 2 * (4 + 4 + 4)
    assert calls.count((1, 3, 24, 32)) == 1 + 2 * 4 and calls.count((1, 24, 32, 3)) == 2 * 8
    assert not list(tmp_path.glob("ceiling_enc_*"))  # the encode-alone files are removed
    with_ceiling = replace(report, ceiling=rows)
    assert "pipeline ceiling 32x24 (no-op backend)" in with_ceiling.summary()
    assert "H.264 (ultrafast) alone: decode" in with_ceiling.summary()
    assert "pipeline ceiling 32x24" in with_ceiling.markdown()
    assert BenchReport.load_json(with_ceiling.save_json(tmp_path / "c.json")) == with_ceiling
    older = with_ceiling.to_dict()  # a report written before the codec figures existed
    for values in older["pipeline_ceiling"]:
        for key in ("decode_fps", "encode_fps", "video_cpu_ms", "preset", "folder_fps",
                    "device_io"):
            del values[key]
    (old_row,) = BenchReport.from_dict(older).ceiling
    assert old_row.encode_fps == 0.0 and "H.264" not in old_row.line()
    assert old_row.preset == "veryfast" and not old_row.device_io
    assert "folder" not in old_row.line() and "folder path (JPEG)" in row.line()


def test_ceiling_preset_is_checked_before_benchmarking(models: dict[str, Path]) -> None:
    result = CliRunner().invoke(bench_cli, [str(models["fp32"]), "--ceiling", "--preset",
                                            "warp9"])
    assert result.exit_code == 2, result.output
    assert "--preset warp9: h264 takes ultrafast" in result.output
    assert "Traceback" not in result.output and "onnxruntime" not in result.output
    result = CliRunner().invoke(bench_cli, [str(models["fp32"]), "--preset", "ultrafast"])
    assert result.exit_code == 2 and "--preset is for the video rows of --ceiling" in \
        result.output


def test_null_backend_stands_for_an_accelerator(models: dict[str, Path]) -> None:
    """The ceiling's codecs get the threads a GPU model's would, not a CPU model's."""
    from runtime import Translator
    from runtime.bench.e2e import NullBackend
    from runtime.media.video import codec_threads
    translator = Translator(models["fp32"], providers="cpu")
    assert translator.on_cpu and translator.in_flight == 1
    translator.backend = NullBackend()  # type: ignore[assignment]
    assert not translator.on_cpu and translator.in_flight == 2
    assert codec_threads(False) >= codec_threads(True) >= 1


@pytest.mark.parametrize(("flags", "level"), [
    (["avx", "avx2", "fma"], "avx2"),
    (["avx2", "avx512f", "avx512_bf16"], "avx512-bf16"),
    (["avx512f"], "avx512"),
    (["avx512f", "avx512_bf16", "amx_tile", "amx_bf16"], "amx"),
    ([], ""),
])
def test_machine_tag_names_the_isa_level(flags: list[str], level: str) -> None:
    from runtime.bench.report import isa_level

    assert isa_level(flags) == level
    info = replace(machine_info(gemm_size=0, isolate=False), cpu="AMD EPYC", cpu_flags=flags,
                   cores_usable=2, gpus=[])
    assert info.tag == "-".join(filter(None, ["amd-epyc", level, "2c"]))


def test_end_to_end_alternates_model_only_and_pipeline_rounds(
        models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.bench.e2e as e2e

    order: list[str] = []
    rates = iter([10.0, 30.0, 20.0])
    real_files = e2e.translate_files

    def model_only(*args: object, **kwargs: object) -> float:
        order.append("model")
        return next(rates)

    def files(*args: object, **kwargs: object) -> object:
        order.append("e2e")
        return real_files(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(e2e, "model_only_rate", model_only)
    monkeypatch.setattr(e2e, "translate_files", files)
    result = e2e.run_end_to_end(models["fp32"], size=32, batch=1, images=2, video_frames=2,
                                live_frames=2, temporal_frames=0, iterations=2)
    assert order == ["model", "e2e", "model", "e2e", "model"]
    assert result.model_only_ips == 20.0  # the median of the three rounds
