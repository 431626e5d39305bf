"""Every benchmark figure of this project, from a clean checkout, in one command.

    python benchmarks/run_all.py            # ResNet-9 (ngf 64) at 256x256, batch 1
    python benchmarks/run_all.py --quick    # ngf 8 at 64x64, few iterations (what CI runs)

Steps: build the standard ``resnet_9blocks`` generator with the paper's initialisation
(weights ~ N(0, 0.02)) and fit it briefly to a colour transform (no pretrained weights can be
downloaded here; speed does not depend on the weights, but int8 and bf16 quality does, and a
randomly initialised network's activations look nothing like a trained one's); save its
state_dict; export it to fp32 ONNX and, calibrated on synthetic natural-looking images, to int8
(``cyclegan-export --precision int8 --calibration DIR``); benchmark both on every engine
installed, next to PyTorch eager (:func:`runtime.bench.run_benchmark`); measure the end-to-end
paths (:func:`runtime.bench.e2e.run_end_to_end`); write ``results/<machine-tag>.json``,
``.png`` (throughput chart) and ``.md`` (the table, for the README).

Needs the development install (``pip install -e ".[dev]"``: torch for building and exporting
the model and for the PyTorch peer; matplotlib for the chart).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
try:
    import runtime  # noqa: F401 - installed with pip install -e .
except ImportError:  # run from a checkout without the editable install
    sys.path.insert(0, str(HERE.parent))

# Nothing heavier at module level: spawned benchmark rows re-import this file as their main
# module, and torch here would count in every row's memory.
from runtime.bench.benchmark import Timing, run_benchmark  # noqa: E402
from runtime.bench.e2e import run_end_to_end  # noqa: E402
from runtime.bench.machine import machine_info  # noqa: E402
from runtime.bench.report import BenchReport, plot_report  # noqa: E402
from runtime.synthetic import natural_images  # noqa: E402

sys.path.insert(0, str(HERE))  # colour_fit, beside this file (also when imported, not run)
from colour_fit import fit_colour_transform  # noqa: E402


@dataclass(frozen=True)
class Plan:
    """One configuration of the whole run."""

    ngf: int
    size: int
    fit_steps: int
    warmup: int
    iterations: int
    gemm_size: int
    calibration_images: int
    e2e_images: int
    e2e_video_frames: int
    e2e_live_frames: int


# --quick is what the test suite runs: every step, tiny and short.
PLANS = {
    "full": Plan(ngf=64, size=256, fit_steps=200, warmup=5, iterations=30, gemm_size=2048,
                 calibration_images=16, e2e_images=32, e2e_video_frames=48, e2e_live_frames=40),
    "quick": Plan(ngf=8, size=64, fit_steps=10, warmup=1, iterations=5, gemm_size=512,
                  calibration_images=8, e2e_images=6, e2e_video_frames=8, e2e_live_frames=6),
}


def cyclegan_export(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``cyclegan-export ARGS`` as a user would (its own process), output captured."""
    command = [sys.executable, "-c", "from cyclegan_export.cli import main; main()", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stdout, end="", flush=True)
    return done


def build_models(workdir: Path, ngf: int, calibration_size: int, calibration_images: int,
                 fit_steps: int = 0, seed: int = 0) -> tuple[Path, Path, Path, list[str]]:
    """Save a freshly initialised ``resnet_9blocks`` state_dict; export fp32 and int8 ONNX.

    Returns (state_dict .pth, fp32 .onnx, int8 .onnx, notes for the report).
    """
    import cv2
    import torch

    from training.networks import build_generator, generator_spec, init_weights

    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = build_generator(generator_spec("resnet_9blocks", ngf=ngf))
    init_weights(net, gain=0.02)  # the official init: N(0, 0.02)
    fit_notes = []
    if fit_steps:
        final_l1 = fit_colour_transform(net, fit_steps, seed)
        fit_notes.append(f"weights: N(0, 0.02) init, then {fit_steps} Adam steps fitting a "
                         f"colour transform (final L1 {final_l1:.3f}); no pretrained download")
    weights = workdir / f"resnet9_ngf{ngf}.pth"
    torch.save(net.state_dict(), weights)

    calibration = workdir / "calibration"
    calibration.mkdir(exist_ok=True)
    for index, image in enumerate(natural_images(calibration_images, calibration_size,
                                                 calibration_size, seed=1000 + seed)):
        cv2.imwrite(str(calibration / f"calib_{index:03d}.png"), image[..., ::-1])

    fp32 = workdir / f"resnet9_ngf{ngf}_fp32.onnx"
    int8 = workdir / f"resnet9_ngf{ngf}_int8.onnx"
    done = cyclegan_export(str(weights), str(fp32))
    if done.returncode != 0:
        raise SystemExit(f"fp32 export failed: {done.stderr.strip()}")
    notes = fit_notes
    int8_args = (str(weights), str(int8), "--precision", "int8", "--calibration",
                 str(calibration))
    done = cyclegan_export(*int8_args)
    if done.returncode != 0 and "verification failed" in done.stderr:
        # Random weights are not a trained generator: their int8 quality can land just under
        # the exporter's 30 dB floor. Speed is what is measured here, and the table's PSNR
        # column still reports the quality, so export unverified and say so.
        reason = done.stderr.strip().splitlines()[-1].removeprefix("error: ")
        notes.append(f"int8 exported with --no-verify: {reason}")
        print(f"warning: {notes[-1]}", file=sys.stderr)
        done = cyclegan_export(*int8_args, "--no-verify")
    if done.returncode != 0:
        raise SystemExit(f"int8 export failed: {done.stderr.strip()}")
    return weights, fp32, int8, notes


def result_name(plan: Plan, tag: str | None, threads: int | None) -> str:
    """The stem of the result files: ``tag``, else the machine's tag, with ``-quick`` for the
    quick plan and ``-custom`` for any other change of a plan (its iterations, frames or
    threads), so that only a full standard run writes the file the README quotes."""
    if tag:
        return tag
    base = "quick" if plan.ngf == PLANS["quick"].ngf else "full"
    name = machine_info(gemm_size=0).tag + ("-quick" if base == "quick" else "")
    return name + ("-custom" if plan != PLANS[base] or threads is not None else "")


def check_targets(out: Path, name: str) -> None:
    """Before any work: each result file new, or one this script wrote (its record, as
    ``cyclegan-bench`` keeps it, or the project's own ``benchmarks/results``, which holds this
    script's committed results: a checkout gives them new times the record cannot know),
    never a file of someone else's."""
    from runtime.media.manifest import OutputManifest

    if out.resolve() == RESULTS.resolve():
        return
    manifest = OutputManifest(out)
    for suffix in (".json", ".md", ".png"):
        target = out / f"{name}{suffix}"
        if target.exists() and not manifest.owns(target):
            raise SystemExit(f"error: {target}: exists and was not written by this script; "
                             "choose another --out or --tag")


def run_all(out: Path, plan: Plan, workdir: Path, tag: str | None = None,
            threads: int | None = None) -> BenchReport:
    """Build, export, benchmark, measure end to end; write ``<name>.json/.png/.md`` to ``out``
    (:func:`result_name`), each recorded as written by this script."""
    from runtime.media.manifest import OutputManifest
    from runtime.media.sinks import write_bytes_atomic

    name = result_name(plan, tag, threads)
    check_targets(out, name)
    weights, fp32, int8, notes = build_models(workdir / "models", plan.ngf, plan.size,
                                              plan.calibration_images, plan.fit_steps)
    report = run_benchmark([fp32, int8], checkpoint=weights, batches=[1], sizes=[plan.size],
                           timing=Timing(warmup=plan.warmup, iterations=plan.iterations,
                                         threads=threads),
                           gemm_size=plan.gemm_size,
                           progress=lambda line: print(f"  {line}", flush=True))
    report.end_to_end.append(run_end_to_end(
        fp32, size=plan.size, batch=1, images=plan.e2e_images, video_frames=plan.e2e_video_frames,
        live_frames=plan.e2e_live_frames, threads=threads, workdir=workdir / "end_to_end",
        progress=lambda line: print(f"  {line}", flush=True)))
    report.notes += notes
    report.settings["plan"] = asdict(plan)
    claim = OutputManifest(out).claimer("report")
    report.save_json(out / f"{name}.json", claim)
    write_bytes_atomic(out / f"{name}.md", report.markdown().encode(), claim)
    try:
        plot_report(report, out / f"{name}.png", claim=claim)
    except Exception as exc:  # noqa: BLE001 - the chart is optional (matplotlib)
        print(f"warning: no chart ({exc})", file=sys.stderr)
    print(report.summary())
    print(f"wrote {out / name}.json, .md, .png")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="ngf 8, 64x64, few iterations: every step in about a minute")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="where <tag>.json/.md/.png go (default: benchmarks/results)")
    parser.add_argument("--tag", help="file name stem (default: the machine's tag)")
    parser.add_argument("--workdir", type=Path,
                        help="keep models and inputs here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, help="CPU threads per engine (default: all)")
    parser.add_argument("--iterations", type=int, help="timed runs per row (overrides the plan)")
    parser.add_argument("--e2e-frames", type=int, help="images, video frames and live frames of "
                        "the end-to-end figures (overrides the plan)")
    args = parser.parse_args(argv)
    plan = PLANS["quick" if args.quick else "full"]
    if args.iterations is not None:
        plan = replace(plan, iterations=args.iterations, warmup=min(plan.warmup, args.iterations))
    if args.e2e_frames is not None:
        plan = replace(plan, e2e_images=args.e2e_frames, e2e_video_frames=args.e2e_frames,
                       e2e_live_frames=args.e2e_frames)
    if args.workdir is not None:
        run_all(args.out, plan, args.workdir, args.tag, args.threads)
    else:
        with tempfile.TemporaryDirectory(prefix="cyclegan-bench-") as tmp:
            run_all(args.out, plan, Path(tmp), args.tag, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
