"""``cyclegan-bench``'s library: every engine this machine has, side by side, on one model.

    from runtime.bench.benchmark import run_benchmark
    report = run_benchmark(["g.onnx", "g_int8.onnx"], checkpoint="latest.pt", sizes=[256])
    print(report.summary())
    report.save_json("bench.json")

A row is one engine (onnxruntime with one provider, OpenCV DNN, OpenVINO, PyTorch eager) on one
model at one batch size and resolution. Each row runs in a fresh process (``multiprocessing``,
spawn): its peak resident memory is its own, and no engine's thread pool or allocator is still
warm, or still spinning, when the next one starts. Inside the row: the engine is created,
called ``warmup`` times untimed, then timed call by call; only the engine call is timed (the
model's own input, prepared once), so the rows compare engines, not pre-processing. The whole
pipeline (decode, pre/post-processing, encode) is :mod:`runtime.bench.e2e`'s business.

Every row also translates the same seeded natural-looking images; its output is compared with
the reference row's (onnxruntime, CPU provider, the first fp32 model) as PSNR, so a fast row
that computes something else shows it.

No torch here: the PyTorch eager peer imports torch and the training packages inside its own
child process only, and only when a checkpoint is given. The ``onnx`` package (for counting
multiply-accumulates) is optional as well.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import BACKENDS, BackendError, available_providers, resolve_providers
from runtime.bench.engines import (
    ENGINES,
    GPU_PROVIDERS,
    RowOutcome,
    RowSpec,
    Timing,
    check_plugin_source,
    measure_row,
    run_in_fresh_process,
    short_provider,
)
from runtime.bench.machine import gemm_gflops, machine_info
from runtime.bench.macs import count_macs
from runtime.bench.report import (
    ENGINE_TITLES,
    BenchError,
    BenchReport,
    BenchRow,
    MachineInfo,
    plot_report,
)
from runtime.metadata import MetadataError, ModelMetadata, read_metadata
from runtime.metrics import psnr
from runtime.reasons import not_a_file
from runtime.synthetic import natural_images
from runtime.transforms import from_model_output

__all__ = ["BenchError", "BenchReport", "BenchRow", "MachineInfo", "Timing", "count_macs",
           "gemm_gflops", "machine_info", "natural_images", "plot_report", "psnr",
           "run_benchmark"]

FLOAT_DATA_RANGE = 2.0    # PSNR peak-to-peak for float models: tanh output in [-1, 1]
UINT8_DATA_RANGE = 255.0  # and for uint8-IO models
REFERENCE_PROVIDER = "CPUExecutionProvider"
# onnxruntime lists providers that do not compute on this machine (Azure: a remote endpoint).
SKIP_PROVIDERS = frozenset({"AzureExecutionProvider"})


# ---- planning and the whole run ----------------------------------------------------------------

@dataclass(frozen=True)
class _Model:
    path: Path
    meta: ModelMetadata


def available_engines(checkpoint: str | Path | None = None) -> list[str]:
    """Engines usable here: onnxruntime always; OpenCV DNN with cv2; OpenVINO when the runtime
    has its backend and ``openvino`` imports; PyTorch eager with a checkpoint and torch plus
    this project's training/export packages installed (looked up, not imported)."""
    engines = ["onnxruntime"]
    if importlib.util.find_spec("cv2") is not None:
        engines.append("opencv")
    if "openvino" in BACKENDS:
        try:
            import openvino  # noqa: F401 - the check is that it imports
            engines.append("openvino")
        except ImportError:
            pass
    if (checkpoint is not None and "pytorch" in ENGINES
            and importlib.util.find_spec("torch") is not None):
        engines.append("pytorch")  # contributed by cyclegan_export through an entry point
    return engines


def _load_models(paths: Sequence[str | Path]) -> list[_Model]:
    if not paths:
        raise BenchError("give at least one model (.onnx)")
    models = []
    for path in map(Path, paths):
        if not path.is_file():
            raise BenchError(not_a_file(path))
        try:
            models.append(_Model(path, read_metadata(path)))
        except MetadataError as exc:
            raise BenchError(str(exc)) from None
    return models


def _check_shape(model: _Model, batch: int, height: int, width: int) -> None:
    meta, name = model.meta, model.path.name
    if batch < 1:
        raise BenchError(f"--batch-size must be >= 1, got {batch}")
    if meta.batch is not None and batch != meta.batch:
        raise BenchError(f"{name} was exported with fixed batch {meta.batch}; "
                         f"--batch-size {batch} cannot run on it")
    if meta.static_size is not None:
        if (height, width) != tuple(meta.static_size):
            h, w = meta.static_size
            raise BenchError(f"{name} was exported for {h}x{w} only; use --size {h}x{w}")
        return
    multiple, minimum = meta.size_multiple, meta.min_size
    if height % multiple or width % multiple or min(height, width) < minimum:
        raise BenchError(f"--size {height}x{width}: {name} needs height and width that are "
                         f"multiples of {multiple} and at least {minimum}")


def _onnxruntime_providers(requested: str | Sequence[str] | None) -> list[str]:
    if requested is None:
        return [p for p in available_providers() if p not in SKIP_PROVIDERS]
    try:
        return resolve_providers(requested)
    except BackendError as exc:
        raise BenchError(str(exc)) from None


def _run_row(spec: RowSpec, timing: Timing, isolate: bool) -> RowOutcome:
    if not isolate:
        return measure_row(spec, timing)
    try:
        outcome: RowOutcome = run_in_fresh_process(measure_row, spec, timing)
    except BrokenProcessPool:
        return RowOutcome(error="the row's process died (crashed or ran out of memory)")
    return outcome


def plan_rows(models: Sequence[_Model], reference: _Model, checkpoint: str | Path | None,
              direction: str, batches: Sequence[int], sizes: Sequence[tuple[int, int]],
              engines: Sequence[str], providers: Sequence[str]) -> list[RowSpec]:
    """Rows in run order: per batch and size, the reference first, then PyTorch eager, then
    each model (reference model first) on each engine and provider."""
    specs = []
    torch_devices = ["cpu"] + (["cuda"] if any(p in GPU_PROVIDERS for p in providers) else [])
    ordered = [reference] + [m for m in models if m is not reference]
    for batch in batches:
        for height, width in sizes:
            shape = (batch, height, width)
            specs.append(RowSpec("onnxruntime", str(reference.path), *shape,
                                 provider=REFERENCE_PROVIDER, reference=True))
            if "pytorch" in engines and checkpoint is not None:
                specs += [RowSpec("pytorch", str(checkpoint), *shape, provider=device,
                                  direction=direction) for device in torch_devices]
            for model in ordered:
                path = str(model.path)
                if "onnxruntime" in engines:
                    specs += [RowSpec("onnxruntime", path, *shape, provider=p) for p in providers
                              if not (model is reference and p == REFERENCE_PROVIDER)]
                if "opencv" in engines:
                    specs.append(RowSpec("opencv", path, *shape))
                if "openvino" in engines:
                    specs.append(RowSpec("openvino", path, *shape, precision="auto"))
    return specs


def run_benchmark(models: Sequence[str | Path], *, checkpoint: str | Path | None = None,
                  direction: str | None = None, batches: Sequence[int] = (1,),
                  sizes: Sequence[int | tuple[int, int]] = (256,),
                  engines: Sequence[str] | None = None,
                  providers: str | Sequence[str] | None = None, timing: Timing | None = None,
                  gemm_size: int = 2048, isolate: bool = True,
                  progress: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark ``models`` (exported .onnx files: fp32, int8, fp16, uint8 IO...) on every
    engine, and PyTorch eager from ``checkpoint`` when given.

    Args:
        models: the .onnx files; each is its own set of rows. The first fp32 one is the
            reference (onnxruntime, CPU provider) that every row's PSNR is taken against;
            its row always runs, whatever ``engines`` says.
        checkpoint: training checkpoint or generator state_dict for the PyTorch eager peer
            (needs torch and this project's training/export packages; fp32 only).
        direction: ``"AtoB"`` or ``"BtoA"``: which generator of a training checkpoint; default
            (None) the reference model's own, from its metadata. One that differs from it is
            noted in the report (that row's PSNR then compares two different generators).
        batches, sizes: batch sizes and resolutions (``256`` or ``(H, W)``); each must suit
            every model's metadata (size multiple, static size, fixed batch).
        engines: subset of :data:`ENGINES` (default: :func:`available_engines`).
        providers: onnxruntime providers (``"cuda"``, ``"cpu,cuda"``, a list; default: all this
            build has, except ones that do not compute locally).
        timing: warm-up, iterations / time budget, PSNR images, threads.
        gemm_size: matrix size of the GEMM yardstick (0 skips it).
        isolate: each row (and the GEMM) in a fresh spawned process; False runs them here
            (peak memory then means nothing).
        progress: called with a one-line description before each row.

    Returns:
        A :class:`BenchReport`; rows whose engine failed carry ``error`` instead of figures.
        Raises :class:`BenchError` when the request itself is unusable (missing file, a size
        the model cannot take, an engine this machine lacks).
    """
    timing = timing or Timing()
    timing.check()
    loaded = _load_models(models)
    size_pairs = [(s, s) if isinstance(s, int) else (int(s[0]), int(s[1])) for s in sizes]
    if not batches or not size_pairs:
        raise BenchError("give at least one batch size and one size")
    for model in loaded:
        for batch in batches:
            for height, width in size_pairs:
                _check_shape(model, batch, height, width)
    chosen = _choose_engines(engines, checkpoint)
    ort_providers = _onnxruntime_providers(providers)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise BenchError(not_a_file(Path(checkpoint)))
    reference = next((m for m in loaded if m.meta.precision == "fp32"), loaded[0])
    notes = []
    if reference.meta.precision != "fp32":
        notes.append(f"no fp32 model given: PSNR is against {reference.path.name} "
                     f"({reference.meta.precision}) on onnxruntime CPU")
    if direction is None:
        direction = reference.meta.direction
    elif checkpoint is not None and direction != reference.meta.direction:
        notes.append(f"--direction {direction}, but {reference.path.name} is the "
                     f"{reference.meta.direction} generator: a training checkpoint's PyTorch "
                     "rows run the other one, so their PSNR compares different generators")
    if checkpoint is not None and reference.meta.source_sha256 and \
            _sha256(Path(checkpoint)) != reference.meta.source_sha256:
        notes.append(f"{Path(checkpoint).name} is not the file {reference.path.name} was "
                     f"exported from ({reference.meta.source_file or 'another'}, by its "
                     "sha256): the PyTorch rows' PSNR compares different weights")
    if checkpoint is not None and "pytorch" not in chosen:
        notes.append("PyTorch eager skipped: " + (
            "torch or the training package is not installed" if engines is None
            else "--engine leaves it out, so --checkpoint is unused"))
    if checkpoint is not None and "pytorch" in chosen:
        _check_peer(str(checkpoint), direction, reference, isolate)

    say = progress or (lambda line: None)
    say("measuring the fp32 GEMM rate" if gemm_size else "reading machine info")
    created = datetime.now().astimezone().isoformat(timespec="seconds")
    report = BenchReport(machine_info(gemm_size, isolate=isolate, gemm_threads=timing.threads),
                         settings=_settings(loaded, checkpoint, direction, batches, size_pairs,
                                            chosen, ort_providers, timing, gemm_size),
                         notes=notes, created=created)
    # Models of another network than the reference (not exported from the same file and
    # direction): their outputs and speed compare to nothing of the reference's or PyTorch's.
    others = {str(m.path) for m in loaded if _network(m.meta) != _network(reference.meta)}
    other_names = {Path(path).name for path in others}  # as rows name their model
    for name in sorted(other_names):
        report.notes.append(f"{name} is another network than {reference.path.name}: its rows "
                            "have no PSNR and no PyTorch ratio")
    if not isolate:
        report.notes.append("rows ran in this one process (--no-isolate): no peak memory "
                            "per row")
    cpu_before = _cpu_snapshot()
    by_path = {str(m.path): m for m in loaded}
    references: dict[tuple[int, int, int], RowOutcome] = {}
    macs: dict[tuple[str, tuple[int, ...]], int | None] = {}
    queue = plan_rows(loaded, reference, checkpoint, direction, batches, size_pairs, chosen,
                      ort_providers)
    total, rows_started = len(queue), time.perf_counter()
    while queue:
        spec = queue.pop(0)
        model = by_path.get(spec.model, reference)  # PyTorch: the reference model's graph
        say(f"[{len(report.rows) + 1}/{total}] {_describe(spec)}"
            f"{_pace(len(report.rows), total, time.perf_counter() - rows_started)}")
        outcome = _run_row(spec, timing, isolate)
        key = (spec.batch, spec.height, spec.width)
        if spec.reference:
            references[key] = outcome
        shape = ((spec.batch, spec.height, spec.width, 3) if model.meta.io == "uint8"
                 else (spec.batch, 3, spec.height, spec.width))
        if (str(model.path), shape) not in macs:
            macs[str(model.path), shape] = count_macs(model.path, shape)
        row = _make_row(spec, outcome, model, macs[str(model.path), shape], report.machine,
                        None if spec.model in others else references.get(key))
        if not isolate:  # every row in this one process: its peak is all of theirs
            row.peak_rss_mib = row.base_rss_mib = None
        report.rows.append(row)
        if (spec.engine == "openvino" and spec.precision == "auto" and row.ok
                and model.meta.precision == "fp32"):
            if row.precision != "fp32":
                # Automatic precision chose bf16: also measure OpenVINO held to fp32.
                queue.insert(0, replace(spec, precision="fp32"))
                total += 1
            elif OPENVINO_FP32_NOTE not in report.notes:
                report.notes.append(OPENVINO_FP32_NOTE)
    if None in macs.values():
        report.notes.append("MACs not counted for some rows (needs the onnx package)")
    _add_pytorch_ratios(report.rows)
    for row in report.rows:
        if row.model in other_names:
            row.vs_pytorch = None
    report.notes += _steadiness_notes(report, cpu_before, _cpu_snapshot())
    return report


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _network(meta: ModelMetadata) -> tuple[object, ...]:
    """What identifies a model's network: the file it was exported from and the direction
    (fp32, fp16 and int8 exports of one generator share it), else its architecture."""
    if meta.source_sha256:
        return (meta.source_sha256, meta.direction)
    return (meta.architecture, meta.generator.get("ngf"), meta.direction)


@dataclass(frozen=True)
class _CpuSnapshot:
    """The machine's busy CPU seconds (all processes, from /proc/stat), this process's and its
    finished children's, and the wall clock: two of them tell what other work took."""

    machine_busy_s: float
    own_s: float
    wall_s: float


def _cpu_snapshot() -> _CpuSnapshot | None:
    try:
        import resource

        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (ImportError, OSError, ValueError):  # not Linux
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick  # all but idle and iowait
    own = sum(getattr(resource.getrusage(who), field) for who in
              (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    return _CpuSnapshot(busy, own, time.perf_counter())


def _others_share(before: _CpuSnapshot | None, after: _CpuSnapshot | None) -> float | None:
    """The share of the machine's cores that other processes kept busy between two
    snapshots (0: the benchmark had the machine to itself)."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    others = ((after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s))
    return max(0.0, others) / ((after.wall_s - before.wall_s) * (os.cpu_count() or 1))


def _steadiness_notes(report: BenchReport, before: _CpuSnapshot | None,
                      after: _CpuSnapshot | None) -> list[str]:
    """Say when the figures may not reproduce: other work on the machine (it shares the cores,
    and PyTorch's threads suffer most, so its ratios move most), rows whose p90 is over twice
    their p50, and fp32 rows above 100% of the fp32 GEMM rate (the yardstick itself was
    measured low)."""
    notes = []
    share = _others_share(before, after)
    if share is not None and share > 0.2:
        notes.append(f"other processes kept {share:.0%} of the CPU busy while the rows ran: "
                     "figures, and the PyTorch ratios most, may not reproduce on a quiet "
                     "machine")
    unsteady = [f"{row.label} {row.model} b{row.batch} {row.size}" for row in report.rows
                if row.ok and row.latency_p50_ms and row.latency_p90_ms
                and row.latency_p90_ms > 2 * row.latency_p50_ms]
    if unsteady:
        notes.append(f"unsteady (p90 over twice p50): {'; '.join(unsteady)}")
    # fp32 rows only: int8 (and bf16) arithmetic may beat the fp32 GEMM rate honestly
    over = sum(1 for row in report.rows if row.gemm_fraction and row.gemm_fraction > 1.0
               and row.precision == "fp32")
    if over:
        notes.append(f"{over} fp32 row(s) above 100% of the fp32 GEMM rate: the yardstick was "
                     "measured low (a busy machine, or a --gemm-size too small)")
    return notes


OPENVINO_FP32_NOTE = ("OpenVINO's automatic precision runs fp32 on this CPU (no bf16 units), so "
                      "its one row per model is the fp32 one")
# Why an engine is missing, for the error naming it.
ENGINE_NEEDS = {
    "opencv": "needs opencv-python",
    "openvino": "needs the openvino package (pip install 'cyclegan-toolkit[openvino]')",
    "pytorch": "needs --checkpoint, torch and this project's training package",
}


def _check_peer(checkpoint: str, direction: str, reference: _Model, isolate: bool) -> None:
    """Load the generator the PyTorch rows will run, up front (a file it cannot load is a
    :class:`BenchError` now, not an error row after minutes of benchmarking), and refuse one
    that is not the reference model's network: its PSNR and the "x PyTorch eager" ratios
    would compare two different models. ``isolate``: in a fresh process, as the rows (this
    process never imports torch)."""
    if not isolate:
        peer = check_plugin_source("pytorch", checkpoint, direction)
    else:
        try:
            peer = run_in_fresh_process(check_plugin_source, "pytorch", checkpoint, direction)
        except BrokenProcessPool:
            raise BenchError(f"{checkpoint}: the process loading it died (out of "
                             "memory?)") from None
    if peer is None:
        return
    ours = (reference.meta.architecture, reference.meta.generator.get("ngf"))
    theirs = (peer["architecture"], peer["ngf"])
    if ours != theirs:
        raise BenchError(f"{checkpoint}: holds a {theirs[0]} generator with ngf {theirs[1]}, "
                         f"but {reference.path.name} is a {ours[0]} with ngf {ours[1]}: give "
                         "the checkpoint the model was exported from, or leave --checkpoint out")


def _choose_engines(engines: Sequence[str] | None, checkpoint: str | Path | None) -> list[str]:
    usable = available_engines(checkpoint)
    if engines is None:
        return usable
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise BenchError(f"unknown engine {unknown[0]!r}; choose from {', '.join(ENGINES)}")
    missing = [e for e in engines if e not in usable]
    if missing:
        raise BenchError("; ".join(f"engine {e!r} is not available ({ENGINE_NEEDS[e]})"
                                   for e in missing))
    return list(dict.fromkeys(engines))


def _pace(done: int, total: int, seconds: float) -> str:
    """``" (12 s a row, about 3 min left)"`` after ``done`` of ``total`` rows took ``seconds``;
    nothing before the first row has finished."""
    if done == 0:
        return ""
    each = seconds / done
    left = each * (total - done)
    left_text = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
    return f" ({each:.{1 if each < 10 else 0}f} s a row, about {left_text} left)"


def _describe(spec: RowSpec) -> str:
    """One progress line: ``"onnxruntime CPU g.onnx b1 256x256"``."""
    where = short_provider(spec.provider).upper() if spec.provider else ""
    return " ".join(part for part in (ENGINE_TITLES[spec.engine], where, Path(spec.model).name,
                                      f"b{spec.batch}", f"{spec.height}x{spec.width}") if part)


def _settings(models: Sequence[_Model], checkpoint: str | Path | None, direction: str,
              batches: Sequence[int], sizes: Sequence[tuple[int, int]], engines: Sequence[str],
              providers: Sequence[str], timing: Timing, gemm_size: int) -> dict[str, Any]:
    return {"models": [str(m.path) for m in models],
            "checkpoint": str(checkpoint) if checkpoint is not None else None,
            "direction": direction, "batches": list(batches),
            "sizes": [f"{h}x{w}" for h, w in sizes], "engines": list(engines),
            "onnxruntime_providers": list(providers), "warmup": timing.warmup,
            "iterations": timing.iterations, "seconds": timing.seconds,
            "psnr_images": timing.psnr_images, "seed": timing.seed, "threads": timing.threads,
            "gemm_size": gemm_size}


def _make_row(spec: RowSpec, outcome: RowOutcome, model: _Model, macs: int | None,
              machine: MachineInfo, reference: RowOutcome | None) -> BenchRow:
    title = ENGINE_TITLES[spec.engine]
    precision = outcome.precision or (model.meta.precision if spec.engine != "pytorch"
                                      else "fp32")
    # a failed row names its device as a working one would: "CPU" for PyTorch's "cpu" too
    named = short_provider(spec.provider or "CPU")
    provider = outcome.provider or (named.upper() if named.islower() else named)
    name = Path(spec.model).name
    row = BenchRow(label=f"{title} {provider} {precision}", engine=spec.engine,
                   provider=provider, precision=precision, model=name,
                   io=outcome.io if outcome.error is None else model.meta.io, batch=spec.batch,
                   height=spec.height, width=spec.width, device=outcome.device,
                   peak_rss_mib=outcome.peak_rss_mib, base_rss_mib=outcome.base_rss_mib,
                   load_seconds=outcome.load_seconds, reference=spec.reference,
                   error=outcome.error)
    if outcome.error is not None or not outcome.times:
        return row
    times_ms = np.asarray(outcome.times) * 1000.0
    mean_s = float(times_ms.mean()) / 1000.0
    row.iterations = len(times_ms)
    row.latency_p50_ms = float(np.percentile(times_ms, 50))
    row.latency_p90_ms = float(np.percentile(times_ms, 90))
    row.latency_mean_ms = float(times_ms.mean())
    row.throughput_ips = spec.batch / mean_s
    row.macs = macs
    if macs is not None:
        row.gflops = 2.0 * macs / mean_s / 1e9
        if machine.gemm_gflops and row.device == "cpu":
            row.gemm_fraction = row.gflops / machine.gemm_gflops
    row.psnr_db = _row_psnr(outcome, reference)
    return row


def _comparable(outcome: RowOutcome) -> tuple[np.ndarray, str]:
    """Outputs as float NCHW RGB ("float") or uint8 NHWC RGB ("uint8")."""
    assert outcome.outputs is not None
    if outcome.io == "uint8":
        out = outcome.outputs
        return (out[..., ::-1] if outcome.color_order == "BGR" else out), "uint8"
    return outcome.outputs.astype(np.float32), "float"


def _row_psnr(outcome: RowOutcome, reference: RowOutcome | None) -> float | None:
    """PSNR in the float domain (range 2.0) when both sides are float models, else on the
    uint8 RGB images (range 255), a float side rounded as the runtime would."""
    if reference is None or reference.outputs is None or outcome.outputs is None:
        return None
    (ref, ref_kind), (test, test_kind) = _comparable(reference), _comparable(outcome)
    if ref_kind == test_kind == "float":
        data_range = FLOAT_DATA_RANGE
    else:
        ref = ref if ref_kind == "uint8" else from_model_output(ref, "RGB")
        test = test if test_kind == "uint8" else from_model_output(test, "RGB")
        data_range = UINT8_DATA_RANGE
    if ref.shape != test.shape:
        return None
    return psnr(ref, test, data_range)


def _add_pytorch_ratios(rows: list[BenchRow]) -> None:
    """Throughput over PyTorch eager's at the same batch, size and device kind."""
    eager = {(r.batch, r.height, r.width, r.device): r for r in rows
             if r.engine == "pytorch" and r.ok}
    for row in rows:
        peer = eager.get((row.batch, row.height, row.width, row.device))
        if row.ok and peer is not None and peer.throughput_ips:
            assert row.throughput_ips is not None
            row.vs_pytorch = row.throughput_ips / peer.throughput_ips
