"""Issue 12's GPU figures in one command, sized for a short lease on one GPU.

    python benchmarks/gpu_check.py                        # CUDA: ResNet-9 ngf 64, about 5 min
    python benchmarks/gpu_check.py --device cpu --quick   # tiny, on the CPU: every part runs
    bash benchmarks/gpu_check.sh                          # on the GPU host: results into $OUT

Parts, in this order; each is guarded, so one that fails (or cannot run here, e.g. TensorRT
without its libraries) records its error and the rest still run:

- ``setup``: build ``resnet_9blocks`` (ngf 64) with the paper's N(0, 0.02) initialisation, fit
  it briefly on the device to a colour transform (as ``run_all.py`` does; no downloads),
  export fp32 ONNX with float IO (:func:`cyclegan_export.export_onnx`, verified).
- ``session``: ``Translator(model, providers="cuda", precision="auto", max_batch=8)``, as
  ``cyclegan-run`` loads it: on a GPU the runtime prepares the float model at load time (uint8
  IO inside the graph, fp16, IO binding). The providers, precision and IO that actually run
  are recorded.
- ``compare`` (item 2): onnxruntime CUDA fp16, batch 8 at 256x256 (``translator.backend.run`` on
  the input prepared as the session takes it: ``backend.metadata.io``), against PyTorch eager
  fp16 (``.half()``, ``cudnn.benchmark``, ``torch.cuda.synchronize`` after every call), plus
  the same session with CUDA graphs (``cuda_graph=True``) for information. Target: onnxruntime
  at least as fast. The PSNR of onnxruntime's output against PyTorch fp32's proves the fp16
  graph computes the same thing.
- ``frame`` (item 3): ``Translator.translate`` of one 1280x720 frame against the backend call
  alone on the prepared input. Target: within 1.2x.
- ``pipeline`` (item 1): what ``cyclegan-run`` runs (:func:`runtime.media.pipeline.translate_files`:
  decode and encode threads around batched inference, batch 8) on a folder of 512x512 JPEGs and
  on a 640x480 H.264 video, against the model alone at the same size and batch. Target: >= 85 %.
- ``train`` (item 4): ``benchmarks/train_throughput.py`` (its ``cuda`` profile: ResNet-9 ngf 64,
  256 crops, batch 1, 200 JPEGs per domain) in a subprocess: end to end and the pure-step
  ceiling, both reported. Target: end to end within 15 % of the ceiling.
- ``tensorrt`` (extra, information only): onnxruntime TensorRT fp16, batch 8 at 256, when its
  libraries load and time is left (its engine build takes minutes).

Every measurement alternates its kinds of rounds (model only, end to end, model only, ...),
after untimed warm-up calls, and keeps the median of the per-round figures and of the per-round
ratios, so a machine that gets busier or quieter moves both sides of a pair alike. ``--budget-s``
(420 s on a GPU) caps the rounds: each inference part gets a share of it for its timed rounds
(at least ``min_rounds`` of each kind), and the training part's rounds and steps are cut to the
time left.

Writes ``<out>/gpu_<machine-tag>.json`` and ``.md`` (``-quick`` added with ``--quick``) after
every part, so a run stopped early still leaves the parts it finished: each figure with its
target and pass/fail, the versions, the providers that ran, and each part's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
try:
    import runtime  # noqa: F401 - installed with pip install -e .
except ImportError:  # run from a checkout without the editable install
    sys.path.insert(0, str(HERE.parent))
if str(HERE) not in sys.path:  # train_throughput and colour_fit, beside this file
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from colour_fit import fit_colour_transform  # noqa: E402

from runtime.bench.engines import time_calls  # noqa: E402

STARTED = time.perf_counter()


@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one whole run."""

    ngf: int                         # resnet_9blocks width
    fit_steps: int                   # Adam steps fitting a colour transform before the export
    batch: int                       # the pipeline's and item 2's batch
    folder_side: int                 # item 1: folder of side x side JPEGs...
    folder_images: int               # ... this many (a multiple of batch: no odd last batch)
    video_size: tuple[int, int]      # item 1: (H, W) of the video...
    video_frames: int                # ... and its frames (a multiple of batch)
    compare_side: int                # item 2: batch of side x side
    frame_size: tuple[int, int]      # item 3: (H, W)
    round_s: float                   # timed calls per latency / model-only round, in seconds
    min_calls: int                   # ... but at least this many calls
    rounds: int                      # alternating rounds of each kind, at most...
    min_rounds: int                  # ... and at least, whatever the budget
    budget_s: float                  # the whole run's time budget (--budget-s)
    train_profile: str               # train_throughput.py --profile
    train_images: int                # JPEGs per domain
    train_rounds: int                # rounds of each kind, before the budget cuts them
    train_steps: int                 # steps per round, likewise
    train_warmup: int                # untimed steps before the first round of each kind
    train_workers: int               # DataLoader workers
    train_set: tuple[str, ...] = ()  # --set KEY=VALUE overrides of the profile
    train_step_s: float = 0.125      # a guess of one step's seconds (sizes training to budget)
    train_fixed_s: float = 40.0      # a guess of its fixed costs (imports, data set, workers)


PLANS = {
    # ResNet-9 ngf 64 on the GPU: the sizes issue 12 names.
    "full": Plan(ngf=64, fit_steps=40, batch=8, folder_side=512, folder_images=192,
                 video_size=(480, 640), video_frames=240, compare_side=256,
                 frame_size=(720, 1280), round_s=0.5, min_calls=5, rounds=5, min_rounds=3,
                 budget_s=420.0, train_profile="cuda", train_images=200, train_rounds=5,
                 train_steps=40, train_warmup=20, train_workers=4),
    # Every step, tiny, on a CPU: proves the script runs end to end (what the test runs).
    "quick": Plan(ngf=8, fit_steps=3, batch=4, folder_side=64, folder_images=8,
                  video_size=(48, 64), video_frames=8, compare_side=64, frame_size=(72, 128),
                  round_s=0.05, min_calls=2, rounds=2, min_rounds=2, budget_s=100.0,
                  train_profile="cpu", train_images=3, train_rounds=2, train_steps=2,
                  train_warmup=1, train_workers=0,
                  train_set=("ngf=8", "ndf=8", "load_size=36", "crop_size=32"),
                  train_step_s=1.0, train_fixed_s=25.0),
}
# Share of the budget each inference part may spend on its timed rounds.
SHARES = {"compare": 0.08, "frame": 0.08, "pipeline": 0.22, "tensorrt": 0.08}
# Time the TensorRT part needs at least (an engine build takes minutes).
TENSORRT_MIN_LEFT_S = 180.0


@dataclass(frozen=True)
class Target:
    """One of issue 12's GPU criteria: a figure read from a part's results."""

    item: str
    what: str                        # formatted with the plan's fields
    part: str
    key: tuple[str, ...]             # path to the figure in the part's entry
    op: str                          # ">=" or "<="
    bound: float
    detail: Callable[[dict[str, Any]], str]


def _rate_detail(kind: str) -> Callable[[dict[str, Any]], str]:
    def detail(part: dict[str, Any]) -> str:
        row = part[kind]
        return (f"{row['end_to_end_median']:.1f} vs {row['model_only_median']:.1f} img/s "
                f"(rounds {', '.join(f'{r:.2f}' for r in row['ratios'])})")
    return detail


TARGETS = (
    Target("1", "folder of {folder_side}x{folder_side} JPEGs, batch {batch}, end to end / "
           "model only", "pipeline", ("folder", "ratio_median"), ">=", 0.85,
           _rate_detail("folder")),
    Target("1", "{video_size[1]}x{video_size[0]} video, batch {batch}, end to end / model only",
           "pipeline", ("video", "ratio_median"), ">=", 0.85, _rate_detail("video")),
    Target("2", "onnxruntime / PyTorch eager, batch {batch} at {compare_side} (time)",
           "compare", ("onnxruntime_vs_pytorch_median",), "<=", 1.0,
           lambda p: (f"onnxruntime {p['onnxruntime']['precision']} "
                      f"{p['onnxruntime']['ms_median']:.2f} vs PyTorch "
                      f"{p['pytorch_eager']['precision']} "
                      f"{p['pytorch_eager']['ms_median']:.2f} ms per batch")),
    Target("3", "{frame_size[1]}x{frame_size[0]} Translator.translate / backend call (time)",
           "frame", ("ratio_median",), "<=", 1.2,
           lambda p: (f"{p['translate']['ms_median']:.2f} vs {p['model']['ms_median']:.2f} ms "
                      "per frame")),
    Target("4", "training end to end / pure-step ceiling", "train", ("ratio_median",), ">=",
           0.85, lambda p: (f"{p['end_to_end_median']:.2f} vs {p['ceiling_median']:.2f} "
                            "steps/s")),
)


class SkipPart(Exception):
    """A part that does not apply here (or lacks what it needs): recorded as skipped."""


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


@dataclass
class Context:
    """What the parts share: the device, the work folder, the model and its session."""

    plan: Plan
    device: str                      # "cuda" or "cpu"
    workdir: Path
    deadline: float                  # perf_counter() at which the budget ends
    model: Path | None = None
    weights: Path | None = None
    net: Any = None                  # the fitted torch generator, on the device, eval mode
    translator: Any = None
    providers: str = "cpu"           # what the Translator is asked for

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def part_deadline(self, share: float) -> float:
        return min(self.deadline, time.perf_counter() + share * self.plan.budget_s)


@dataclass
class Results:
    """Everything measured; saved as JSON and Markdown after every part."""

    json_path: Path
    plan: Plan
    header: dict[str, Any]
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run(self, name: str, part: Callable[[Context], dict[str, Any]], ctx: Context) -> bool:
        """Run one part, record its figures or its error and its time; True when it ran."""
        log(f"{name}: start ({ctx.left():.0f} s of the budget left)")
        started = time.perf_counter()
        try:
            entry = {"status": "ok", **part(ctx)}
        except SkipPart as exc:
            entry = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one part's failure must not stop the rest
            entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".strip(),
                     "traceback": traceback.format_exc(limit=6).splitlines()[-14:]}
        entry["seconds"] = round(time.perf_counter() - started, 1)
        self.parts[name] = entry
        what = entry.get("reason") or entry.get("error") or "ok"
        log(f"{name}: {entry['status']} in {entry['seconds']} s"
            + ("" if what == "ok" else f": {what}"))
        self.save()
        return entry["status"] == "ok"

    def targets(self) -> list[dict[str, Any]]:
        rows = []
        for target in TARGETS:
            part = self.parts.get(target.part, {})
            figure: Any = part if part.get("status") == "ok" else None
            for key in target.key:
                figure = figure.get(key) if isinstance(figure, dict) else None
            what = target.what.format(**asdict(self.plan))
            row: dict[str, Any] = {"item": target.item, "what": what,
                                   "target": f"{target.op} {target.bound:g}", "figure": figure,
                                   "passed": None, "detail": ""}
            if isinstance(figure, (int, float)):
                row["figure"] = round(float(figure), 4)
                row["passed"] = (figure >= target.bound if target.op == ">="
                                 else figure <= target.bound)
                try:
                    row["detail"] = target.detail(part)
                except (KeyError, TypeError, ValueError):
                    pass
            else:
                why = part.get("error") or part.get("reason") or "; ".join(
                    f"{k}: {v}" for k, v in part.get("errors", {}).items())
                row["detail"] = (f"{target.part}: {part.get('status', 'not run')}"
                                 + (f" ({why})" if why else ""))
            rows.append(row)
        return rows

    def data(self) -> dict[str, Any]:
        return {**self.header, "elapsed_s": round(time.perf_counter() - STARTED, 1),
                "targets": self.targets(), "parts": self.parts}

    def save(self) -> None:
        data = self.data()
        _write_atomic(self.json_path, json.dumps(_finite(data), indent=2, allow_nan=False,
                                                 default=str) + "\n")
        _write_atomic(self.json_path.with_suffix(".md"), markdown(data))


def _finite(value: Any) -> Any:
    """``value`` with infinities and NaNs as strings ("inf": a PSNR of identical outputs), so
    the file stays standard JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_atomic(path: Path, text: str) -> None:
    from runtime.media.sinks import write_bytes_atomic

    write_bytes_atomic(path, text.encode("utf-8"))  # its temp file makes the folder


# ---- measuring ------------------------------------------------------------------------------


def ms_per_call(call: Callable[[], object], plan: Plan, average: Callable[..., Any] = np.mean,
                sync: Callable[[], None] | None = None) -> Callable[[], float]:
    """One round's runner for :func:`alternate`: times ``call`` one by one for ``plan.round_s``
    seconds (at least ``plan.min_calls`` calls; ``sync``, e.g. ``torch.cuda.synchronize``, ends
    each) and returns the ``average`` of the calls, in ms."""
    def run() -> float:
        seconds = time_calls(call, 0, None, plan.round_s, min_calls=plan.min_calls, sync=sync)
        return 1000.0 * float(average(seconds))
    return run


def alternate(runners: dict[str, Callable[[], float]], plan: Plan,
              deadline: float) -> dict[str, list[float]]:
    """Round after round, each runner once in turn (so kinds alternate); at least
    ``plan.min_rounds`` rounds, at most ``plan.rounds``, and no new round that would end past
    ``deadline``. Returns each runner's figure per round."""
    values: dict[str, list[float]] = {name: [] for name in runners}
    last = 0.0
    for index in range(plan.rounds):
        if index >= plan.min_rounds and time.perf_counter() + last > deadline:
            break
        started = time.perf_counter()
        for name, run in runners.items():
            values[name].append(run())
        last = time.perf_counter() - started
        log("  round {}: {}".format(index + 1, ", ".join(f"{n} {v[-1]:.4g}"
                                                         for n, v in values.items())))
    return values


def summary(values: list[float], unit: str) -> dict[str, Any]:
    return {f"{unit}_rounds": [round(v, 4) for v in values],
            f"{unit}_median": round(statistics.median(values), 4)}


def ratios(top: list[float], bottom: list[float]) -> dict[str, Any]:
    """Per-round ratios of paired rounds, their median, min and max."""
    pairs = [t / b for t, b in zip(top, bottom, strict=True)]
    return {"ratios": [round(v, 4) for v in pairs], "ratio_median": round(
        statistics.median(pairs), 4), "ratio_min": round(min(pairs), 4),
        "ratio_max": round(max(pairs), 4)}


def bgr_images(count: int, height: int, width: int, seed: int, unique: int = 16) -> np.ndarray:
    """``(count, H, W, 3)`` uint8 BGR natural-looking images, ``unique`` distinct ones cycled
    (generating hundreds of large ones would cost more than the measurements)."""
    from runtime.synthetic import natural_images

    distinct = natural_images(min(count, unique), height, width, seed=seed)[..., ::-1]
    return np.ascontiguousarray(np.concatenate([distinct] * -(-count // len(distinct)))[:count])


def model_feed(translator: Any, images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 BGR -> the batch as the translator's session takes it: padded to
    its size multiple, then uint8 NHWC in its colour order (uint8 IO, as a GPU session is
    prepared) or float32 NCHW RGB in [-1, 1] (float IO)."""
    from runtime.transforms import pad_to_multiple, to_model_input

    meta = getattr(translator.backend, "metadata", None) or translator.metadata
    padded = pad_to_multiple(images, meta.size_multiple, meta.min_size)
    if meta.io == "uint8":
        return np.ascontiguousarray(padded if meta.color_order == "BGR" else padded[..., ::-1])
    return to_model_input(padded, "BGR")


def session_description(translator: Any) -> dict[str, Any]:
    meta = getattr(translator.backend, "metadata", None) or translator.metadata
    return {"providers": list(translator.providers), "precision": translator.precision,
            "io": meta.io, "layout": meta.layout, "color_order": meta.color_order,
            "repr": repr(translator), "notes": list(getattr(translator, "notes", []))}


# ---- the parts ------------------------------------------------------------------------------


def part_setup(ctx: Context) -> dict[str, Any]:
    """Build, fit and export the generator; keep it (on the device) for PyTorch eager."""
    import torch

    from cyclegan_export import export_onnx
    from training.networks import build_generator, generator_spec, init_weights

    plan = ctx.plan
    torch.manual_seed(0)
    net = build_generator(generator_spec("resnet_9blocks", ngf=plan.ngf))
    init_weights(net, gain=0.02)  # the official init: N(0, 0.02)
    started = time.perf_counter()
    net.to(ctx.device)
    final_l1 = (fit_colour_transform(net, plan.fit_steps, device=ctx.device)
                if plan.fit_steps else None)
    net.cpu()  # the export traces on the CPU
    fit_s = time.perf_counter() - started
    log(f"  fitted {plan.fit_steps} steps in {fit_s:.1f} s (L1 {final_l1})")
    ctx.weights = ctx.workdir / f"resnet9_ngf{plan.ngf}.pth"
    torch.save(net.state_dict(), ctx.weights)
    model = ctx.workdir / f"resnet9_ngf{plan.ngf}_fp32.onnx"
    report = export_onnx(ctx.weights, model, opencv_check=False)
    log("  " + report.summary().replace("\n", "\n  "))
    if not report.ok:
        raise RuntimeError(f"the export's verification failed: {report.summary()}")
    ctx.model = model
    ctx.net = net.to(ctx.device).eval()
    return {"generator": "resnet_9blocks", "ngf": plan.ngf, "fit_steps": plan.fit_steps,
            "fit_final_l1": None if final_l1 is None else round(final_l1, 4),
            "fit_s": round(fit_s, 1), "export_s": round(report.seconds, 1),
            "model_bytes": report.size_bytes, "export": report.summary().splitlines()}


def part_session(ctx: Context) -> dict[str, Any]:
    """The Translator every inference part uses, loaded as ``cyclegan-run`` loads it."""
    from runtime import Translator

    if ctx.model is None:
        raise SkipPart("no model (setup failed)")
    started = time.perf_counter()
    ctx.translator = Translator(ctx.model, providers=ctx.providers, precision="auto",
                                max_batch=ctx.plan.batch)
    described = session_description(ctx.translator)
    log(f"  {described['repr']}")
    return {"asked": {"providers": ctx.providers, "precision": "auto",
                      "max_batch": ctx.plan.batch},
            "load_s": round(time.perf_counter() - started, 2), **described}


def part_compare(ctx: Context) -> dict[str, Any]:
    """Item 2: onnxruntime against PyTorch eager, batch ``plan.batch`` at ``compare_side``."""
    import torch

    plan = ctx.plan
    side = plan.compare_side
    images = bgr_images(plan.batch, side, side, seed=40)
    runners: dict[str, Callable[[], float]] = {}
    described: dict[str, Any] = {}
    errors: dict[str, str] = {}
    outputs: dict[str, np.ndarray] = {}

    def add(name: str, build: Callable[[], Callable[[], float]]) -> None:
        try:
            runners[name] = build()
        except Exception as exc:  # noqa: BLE001 - the other runners still run
            errors[name] = f"{type(exc).__name__}: {exc}".strip()
            log(f"  {name}: not measured: {errors[name]}")

    def eager() -> Callable[[], float]:
        if ctx.net is None:
            raise SkipPart("no PyTorch model (setup failed)")
        cuda = ctx.device == "cuda"
        torch.backends.cudnn.benchmark = True
        dtype = torch.float16 if cuda else torch.float32  # fp16 convolutions are a GPU's
        net = ctx.net.to(dtype)  # in place: later parts need only ctx.weights, not ctx.net
        x = (torch.from_numpy(np.ascontiguousarray(images[..., ::-1])).permute(0, 3, 1, 2)
             .to(ctx.device, dtype) / 127.5 - 1)
        sync = torch.cuda.synchronize if cuda else None

        def call() -> object:
            with torch.inference_mode():
                return net(x)

        for _ in range(3):  # cudnn.benchmark picks its algorithms on the first call
            call()
        if sync:
            sync()
        described["pytorch_eager"] = {"precision": "fp16" if cuda else "fp32",
                                      "how": ".half(), cudnn.benchmark, inference_mode, "
                                             "synchronize after each call" if cuda else
                                             "fp32 on the CPU (no fp16 convolutions there)",
                                      "input": "already on the device"}
        return ms_per_call(call, plan, sync=sync)

    def onnxruntime(translator: Any, name: str) -> Callable[[], float]:
        feed = model_feed(translator, images)
        for _ in range(3):
            out = translator.backend.run(feed)
        outputs[name] = out
        described[name] = {**session_description(translator), "feed": f"{feed.dtype} "
                           f"{'x'.join(map(str, feed.shape))}, from host memory (IO binding "
                           "copies it in and the output out)" if ctx.device == "cuda" else
                           f"{feed.dtype} {'x'.join(map(str, feed.shape))}"}
        return ms_per_call(lambda: translator.backend.run(feed), plan)

    add("pytorch_eager", eager)
    if ctx.translator is None:
        errors["onnxruntime"] = "no session (the session part failed)"
    else:
        add("onnxruntime", lambda: onnxruntime(ctx.translator, "onnxruntime"))
    model = ctx.model
    if ctx.device == "cuda" and model is not None:
        from runtime import Translator

        add("onnxruntime_cuda_graph", lambda: onnxruntime(
            Translator(model, providers=ctx.providers, precision="auto",
                       max_batch=plan.batch, cuda_graph=True), "onnxruntime_cuda_graph"))
    if not runners:
        raise RuntimeError(f"nothing to measure: {errors}")
    values = alternate(runners, plan, ctx.part_deadline(SHARES["compare"]))
    result: dict[str, Any] = {"batch": plan.batch, "height": side, "width": side,
                              "per_round": "mean ms per call within the round",
                              "errors": errors}
    for name, ms in values.items():
        result[name] = {**described.get(name, {}), **summary(ms, "ms")}
    for name in ("onnxruntime", "onnxruntime_cuda_graph"):
        if name in values and "pytorch_eager" in values:
            key = ("onnxruntime_vs_pytorch" if name == "onnxruntime"
                   else "onnxruntime_cuda_graph_vs_pytorch")
            paired = ratios(values[name], values["pytorch_eager"])
            result[f"{key}_median"] = paired["ratio_median"]
            result[f"{key}_rounds"] = paired["ratios"]
    try:
        result.update(_check_outputs(ctx, images, outputs))
    except Exception as exc:  # noqa: BLE001 - the timings stand without the check
        result["psnr_error"] = f"{type(exc).__name__}: {exc}"
    return result


def _check_outputs(ctx: Context, images: np.ndarray,
                   outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """PSNR of each onnxruntime output against PyTorch fp32's on the same images (uint8, 255):
    a wrong fp16 graph would be fast for nothing."""
    if ctx.weights is None or not outputs:
        return {}
    import torch

    from runtime.metrics import psnr
    from runtime.transforms import from_model_output, to_model_input
    from training.networks import build_generator, generator_spec

    net = build_generator(generator_spec("resnet_9blocks", ngf=ctx.plan.ngf))
    net.load_state_dict(torch.load(ctx.weights, weights_only=True))
    net.to(ctx.device).eval()
    with torch.inference_mode():
        x = torch.from_numpy(to_model_input(images, "BGR")).to(ctx.device)
        reference = from_model_output(net(x).float().cpu().numpy(), "BGR")
    found: dict[str, Any] = {}
    for name, out in outputs.items():
        pixels = out if out.dtype == np.uint8 else from_model_output(out, "BGR")
        pixels = pixels[:, :images.shape[1], :images.shape[2]]
        found[f"{name}_psnr_vs_pytorch_fp32_db"] = round(psnr(reference, pixels, 255.0), 2)
    return found


def part_frame(ctx: Context) -> dict[str, Any]:
    """Item 3: one large frame through ``Translator.translate`` against the backend call alone
    on the prepared input."""
    translator = ctx.translator
    if translator is None:
        raise SkipPart("no session (the session part failed)")
    plan = ctx.plan
    height, width = plan.frame_size
    frame = bgr_images(1, height, width, seed=30)[0]
    feed = model_feed(translator, frame[None])
    for _ in range(3):
        translator.translate(frame)
        translator.backend.run(feed)

    values = alternate({"model": ms_per_call(lambda: translator.backend.run(feed), plan,
                                             np.median),
                        "translate": ms_per_call(lambda: translator.translate(frame), plan,
                                                 np.median)},
                       plan, ctx.part_deadline(SHARES["frame"]))
    return {"height": height, "width": width, "feed": f"{feed.dtype} "
            f"{'x'.join(map(str, feed.shape))}", "model": summary(values["model"], "ms"),
            "translate": summary(values["translate"], "ms"),
            **ratios(values["translate"], values["model"]),
            "per_round": "median ms per call within the round"}


def part_pipeline(ctx: Context) -> dict[str, Any]:
    """Item 1: a folder of JPEGs and a video through ``cyclegan-run``'s pipeline against the
    model alone at the same size and batch."""
    translator = ctx.translator
    if translator is None:
        raise SkipPart("no session (the session part failed)")
    from runtime.media.outputs import plan_outputs
    from runtime.media.pipeline import translate_files  # needs PyAV
    from runtime.media.sources import expand_inputs
    from runtime.media.video import AtomicVideoWriter
    plan = ctx.plan
    work = ctx.workdir / "pipeline"
    side, (video_h, video_w), batch = plan.folder_side, plan.video_size, plan.batch
    started = time.perf_counter()
    photos = bgr_images(plan.folder_images, side, side, seed=10)
    clip = bgr_images(plan.video_frames, video_h, video_w, seed=20)

    def write_folder(folder: Path, frames: np.ndarray) -> Path:
        import cv2

        folder.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(frames):
            cv2.imwrite(str(folder / f"image_{index:04d}.jpg"), image)
        return folder

    def write_video(path: Path, frames: np.ndarray) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with AtomicVideoWriter(path, 30.0, (frames.shape[2], frames.shape[1])) as writer:
            for frame in frames:
                writer.write(frame)
        return path

    inputs = {"folder": write_folder(work / "images", photos),
              "video": write_video(work / "clip.mp4", clip)}
    warm = {"folder": write_folder(work / "warm_images", photos[:2 * batch]),
            "video": write_video(work / "warm.mp4", clip[:2 * batch])}
    inputs_s = time.perf_counter() - started
    log(f"  wrote {plan.folder_images} {side}x{side} JPEGs and a {plan.video_frames}-frame "
        f"{video_w}x{video_h} video in {inputs_s:.1f} s")
    runs = [0]

    def end_to_end(source: Path, kind: str) -> Callable[[], float]:
        def run() -> float:
            runs[0] += 1
            out = work / (f"out_{runs[0]}" if kind == "folder" else f"out_{runs[0]}.mp4")
            found = expand_inputs([str(source)])
            done = translate_files(translator, plan_outputs(found.files, out), batch_size=batch)
            if done.failed or not done.frames:
                reason = done.failed[0].reason if done.failed else "no frames"
                raise RuntimeError(f"the {kind} run failed: {reason}")
            shutil.rmtree(out) if out.is_dir() else out.unlink()
            return done.frames / done.seconds
        return run

    def model_only(frames: np.ndarray) -> Callable[[], float]:
        feed = model_feed(translator, frames[:batch])
        for _ in range(3):
            translator.backend.run(feed)
        ms = ms_per_call(lambda: translator.backend.run(feed), plan)
        return lambda: 1000.0 * batch / ms()

    model_folder, model_video = model_only(photos), model_only(clip)
    for kind, source in warm.items():  # decoders, encoders, threads, per-shape setup
        end_to_end(source, kind)()
    values = alternate({"model_folder": model_folder,
                        "folder": end_to_end(inputs["folder"], "folder"),
                        "model_video": model_video,
                        "video": end_to_end(inputs["video"], "video")},
                       plan, ctx.part_deadline(SHARES["pipeline"]))
    result: dict[str, Any] = {"batch": batch, "inputs_s": round(inputs_s, 1),
                              "how": "runtime.media.pipeline.translate_files (what "
                                     "cyclegan-run runs), model-only rounds alternated"}
    for kind, size, count in (("folder", (side, side), plan.folder_images),
                              ("video", plan.video_size, plan.video_frames)):
        result[kind] = {"height": size[0], "width": size[1], "frames": count,
                        **summary(values[kind], "end_to_end"),
                        **summary(values[f"model_{kind}"], "model_only"),
                        **ratios(values[kind], values[f"model_{kind}"]), "unit": "img/s"}
    return result


def part_train(ctx: Context) -> dict[str, Any]:
    """Item 4: ``train_throughput.py`` in its own process, its rounds cut to the time left."""
    plan = ctx.plan
    rounds, steps = train_size(plan, ctx.left())
    out = ctx.workdir / "train_throughput.json"
    command = [sys.executable, str(HERE / "train_throughput.py"), "--device", ctx.device,
               "--profile", plan.train_profile, "--images", str(plan.train_images),
               "--rounds", str(rounds), "--steps", str(steps), "--warmup",
               str(plan.train_warmup), "--workers", str(plan.train_workers),
               "--data", str(ctx.workdir / "train_data"), "--label", "gpu_check",
               "--out", str(out)]
    for item in plan.train_set:
        command += ["--set", item]
    timeout = max(60.0, ctx.left() + 0.25 * plan.budget_s)
    log(f"  {rounds} rounds of {steps} steps (about {train_cost(plan, rounds, steps):.0f} s "
        f"expected; stopped after {timeout:.0f} s)")
    tail = run_logged(command, timeout, prefix="  train | ")
    if not out.is_file():
        raise RuntimeError("train_throughput.py wrote no result: " + " | ".join(tail[-5:]))
    entry = json.loads(out.read_text(encoding="utf-8"))["runs"]["gpu_check"]
    keep = ("end_to_end_median", "ceiling_median", "ratio_median", "ratio_min", "ratio_max",
            "end_to_end_steps_per_s", "ceiling_steps_per_s", "pair_ratios", "rounds",
            "steps_per_round", "warmup_steps", "lead_in_steps", "images_per_domain",
            "image_size", "wall_s", "torch", "load_average_before_after")
    config = entry.get("config", {})
    return {**{key: entry[key] for key in keep if key in entry},
            "config": {key: config.get(key) for key in (
                "generator", "ngf", "discriminator", "ndf", "load_size", "crop_size",
                "batch_size", "num_workers", "device", "bf16", "channels_last", "compile")},
            "command": " ".join(command[1:])}


def train_cost(plan: Plan, rounds: int, steps: int) -> float:
    """The training part's expected seconds, from the plan's guesses."""
    from train_throughput import lead_in_steps  # beside this file (see sys.path above)

    lead_in = lead_in_steps(plan.train_workers)
    return plan.train_fixed_s + plan.train_step_s * (
        2 * plan.train_warmup + rounds * (lead_in + 2 * steps))


def train_size(plan: Plan, left_s: float) -> tuple[int, int]:
    """The plan's training rounds and steps, cut (rounds to 3, then steps to 20) until the
    expected time fits in ``left_s``."""
    rounds, steps = plan.train_rounds, plan.train_steps
    while train_cost(plan, rounds, steps) > left_s and rounds > min(3, plan.train_rounds):
        rounds -= 1
    while train_cost(plan, rounds, steps) > left_s and steps > min(20, plan.train_steps):
        steps = max(min(20, plan.train_steps), steps - 10)
    return rounds, steps


def run_logged(command: list[str], timeout: float, prefix: str) -> list[str]:
    """Run ``command``, echoing its output lines with ``prefix``; kill it after ``timeout``
    seconds. Returns its last lines; raises on a non-zero exit or a timeout."""
    lines: list[str] = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)

    def echo() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
            del lines[:-40]
            print(prefix + line.rstrip(), flush=True)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(f"stopped after {timeout:.0f} s (over the budget)") from None
    finally:
        reader.join(timeout=5)
    if code != 0:
        raise RuntimeError(f"exit status {code}: {lines[-1] if lines else 'no output'}")
    return lines


def part_tensorrt(ctx: Context) -> dict[str, Any]:
    """Extra: onnxruntime TensorRT fp16 at item 2's batch and size, when it can run."""
    from runtime.backends import available_providers
    from runtime.gpu import tensorrt_library

    if ctx.device != "cuda":
        raise SkipPart("not on a GPU")
    if ctx.model is None:
        raise SkipPart("no model (setup failed)")
    if "TensorrtExecutionProvider" not in available_providers():
        raise SkipPart("this onnxruntime build has no TensorRT provider")
    if tensorrt_library() is None:
        raise SkipPart("TensorRT's libraries do not load here (onnxruntime would fall back "
                       "to CUDA)")
    if ctx.left() < TENSORRT_MIN_LEFT_S:
        raise SkipPart(f"{ctx.left():.0f} s of the budget left; an engine build needs more")
    from runtime import Translator

    plan = ctx.plan
    started = time.perf_counter()
    translator = Translator(ctx.model, providers="tensorrt", precision="auto",
                            max_batch=plan.batch)
    load_s = time.perf_counter() - started
    feed = model_feed(translator, bgr_images(plan.batch, plan.compare_side,
                                             plan.compare_side, seed=40))
    for _ in range(3):
        translator.backend.run(feed)
    values = alternate({"tensorrt": ms_per_call(lambda: translator.backend.run(feed), plan)},
        plan, ctx.part_deadline(SHARES["tensorrt"]))
    return {"load_s": round(load_s, 1), **session_description(translator),
            "batch": plan.batch, "height": plan.compare_side, "width": plan.compare_side,
            **summary(values["tensorrt"], "ms")}


PARTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "setup": part_setup,
    "session": part_session,
    "compare": part_compare,
    "frame": part_frame,
    "pipeline": part_pipeline,
    "train": part_train,
    "tensorrt": part_tensorrt,
}


# ---- report ---------------------------------------------------------------------------------


def versions() -> dict[str, Any]:
    """Versions of what ran, read from the modules imported (onnxruntime-gpu may sit on
    PYTHONPATH beside a CPU onnxruntime that the installed metadata would name)."""
    import cv2
    import onnxruntime as ort

    found: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                             "onnxruntime": ort.__version__, "onnxruntime_device": ort.get_device(),
                             "onnxruntime_from": str(Path(ort.__file__).parent),
                             "opencv": cv2.__version__}
    try:
        import torch

        found.update(torch=torch.__version__, cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version())
    except ImportError:
        found["torch"] = None
    try:
        import av

        found["av"] = av.__version__
    except ImportError:
        found["av"] = None
    return found


def markdown(data: dict[str, Any]) -> str:
    """The result file's table of targets, then each part's time, status and key facts."""
    lines = [f"# GPU check: {data['machine_tag']}", "",
             f"Measured {data['measured']} on {data['device_name']}, ResNet-9 ngf "
             f"{data['plan']['ngf']}; budget {data['plan']['budget_s']:.0f} s, took "
             f"{data['elapsed_s']:.0f} s.", "",
             "| item | what | figure | target | passed | detail |",
             "|---|---|---|---|---|---|"]
    for row in data["targets"]:
        figure = "-" if row["figure"] is None else f"{row['figure']:.3f}"
        passed = {True: "yes", False: "**no**", None: "-"}[row["passed"]]
        lines.append(f"| {row['item']} | {row['what']} | {figure} | {row['target']} | "
                     f"{passed} | {row['detail']} |")
    lines += ["", "| part | status | seconds | notes |", "|---|---|---|---|"]
    for name, part in data["parts"].items():
        note = part.get("error") or part.get("reason") or ""
        if name == "session" and part.get("status") == "ok":
            note = f"{part['providers'][0]}, {part['precision']}, {part['io']} IO"
        elif name == "compare" and part.get("status") == "ok":
            note = ", ".join(f"{key} {part[key]['ms_median']:.2f} ms" for key in
                             ("pytorch_eager", "onnxruntime", "onnxruntime_cuda_graph")
                             if key in part)
            psnrs = [f"{k.split('_psnr')[0]} {v} dB" for k, v in part.items()
                     if k.endswith("_psnr_vs_pytorch_fp32_db")]
            if psnrs:
                note += "; PSNR vs PyTorch fp32: " + ", ".join(psnrs)
            if part.get("errors"):
                note += "; not measured: " + "; ".join(f"{k}: {v}"
                                                        for k, v in part["errors"].items())
        elif name == "frame" and part.get("status") == "ok":
            note = (f"model {part['model']['ms_median']:.2f} ms, translate "
                    f"{part['translate']['ms_median']:.2f} ms ({part['feed']})")
        elif name == "pipeline" and part.get("status") == "ok":
            note = "; ".join(f"{kind}: {part[kind]['end_to_end_median']:.1f} vs "
                             f"{part[kind]['model_only_median']:.1f} img/s"
                             for kind in ("folder", "video"))
        elif name == "train" and part.get("status") == "ok":
            note = (f"{part.get('rounds')} rounds of {part.get('steps_per_round')} steps, "
                    f"{part.get('images_per_domain')} JPEGs per domain")
        elif name == "tensorrt" and part.get("status") == "ok":
            note = f"{part['ms_median']:.2f} ms per batch"
        lines.append(f"| {name} | {part.get('status')} | {part.get('seconds')} | "
                     f"{note.replace('|', '/')} |")
    shown = ", ".join(f"{k} {v}" for k, v in data["versions"].items() if k != "onnxruntime_from")
    lines += ["", f"Versions: {shown}.", "",
              f"onnxruntime providers available: {', '.join(data['providers_available'])}.",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda (the real figures) or cpu (proves the script runs)")
    parser.add_argument("--quick", action="store_true",
                        help="ngf 8, tiny sizes, few rounds and steps (with --device cpu: "
                             "every part in about a minute)")
    parser.add_argument("--budget-s", type=float,
                        help="time budget in seconds (default 420; --quick 100); rounds and "
                             "training steps are cut to fit")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for gpu_<tag>.json/.md (default benchmarks/results)")
    parser.add_argument("--tag", help="file name stem after gpu_ (default: the machine's tag)")
    parser.add_argument("--workdir", type=Path,
                        help="keep models and inputs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    plan = PLANS["quick" if args.quick else "full"]
    if args.budget_s is not None:
        plan = replace(plan, budget_s=args.budget_s)
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")

    import torch
    from train_throughput import machine_tag

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device visible to PyTorch; use --device cpu (with --quick)")
    device = torch.device(args.device)
    tag, machine = machine_tag(device)
    name = args.tag or tag + ("-quick" if args.quick else "")
    from runtime.backends import available_providers

    header = {
        "kind": "gpu_check (issue 12)", "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine_tag": tag, "machine": machine, "device": args.device,
        "device_name": (torch.cuda.get_device_name(device) if args.device == "cuda"
                        else machine.get("cpu", "CPU")),
        "versions": versions(), "providers_available": available_providers(),
        "plan": asdict(plan), "shares": SHARES, "argv": sys.argv[1:],
        # What ../shared/gpu/README.md measured on the H200 before (ResNet-9 ngf 64).
        "earlier_h200_figures": {"pytorch_eager_fp16_b8_256_ms_cudnn_benchmark": 6.32,
                                 "onnxruntime_cuda_fp16_b8_256_ms": 10.27,
                                 "translator_1280x720_fp16_ms": 40.4,
                                 "cyclegan_run_folder_512_b8_img_s": 33,
                                 "cyclegan_run_video_640x480_fp16_fps": 87},
    }
    results = Results(args.out / f"gpu_{name}.json", plan, header)
    log(f"gpu_check on {header['device_name']}: onnxruntime {header['versions']['onnxruntime']} "
        f"({', '.join(header['providers_available'])}), torch {header['versions']['torch']}; "
        f"budget {plan.budget_s:.0f} s; writing {results.json_path}")

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = Context(plan, args.device, workdir, STARTED + plan.budget_s,
                      providers="cuda" if args.device == "cuda" else "cpu")
        for part in PARTS:
            if part in wanted:
                results.run(part, PARTS[part], ctx)
        ctx.translator = None  # its session closes before the folder goes
    results.save()
    for row in results.targets():
        figure = "-" if row["figure"] is None else f"{row['figure']:.3f}"
        verdict = {True: "PASS", False: "FAIL", None: "----"}[row["passed"]]
        print(f"{verdict} item {row['item']}: {row['what']}: {figure} (target {row['target']})"
              f"  {row['detail']}")
    print(f"took {time.perf_counter() - STARTED:.0f} s; wrote {results.json_path} and .md")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
