"""How good and how fast are distilled students? One command, committed results.

    python benchmarks/distill_quality.py                 # the full table (about an hour on 2 cores)
    python benchmarks/distill_quality.py --steps 300     # a quick look
    python benchmarks/distill_quality.py --speed-only    # re-time the committed table's models

Teacher: the bundled demo model (``runtime/demo/demo.onnx``: resnet_6blocks ngf 16, 2.42 GMAC at
256x256, photo -> blue hour), the strongest generator trained on this 2-core machine. Its
PyTorch weights are read back from the ONNX file (the exporter keeps parameter names) and
proven equal to it before anything else runs.

For the teacher and each student this measures:

- MACs at 256x256 (:func:`training.networks.count_macs`);
- latency at 256x256 and 640x480 through ``cyclegan-bench``'s engines (onnxruntime and OpenVINO,
  fp32, best of them reported), and frames/s of ``cyclegan-run --webcam clip.mp4 --max-side 320
  --no-display`` on a 640x480 clip;
- on the demo's held-out photos (never seen in training; true target = ``stylize(photo)``):
  PSNR and SSIM of the student against the teacher, and of each model against the truth beside
  the identity baseline (doing nothing).

The ablation distils the default student with each objective (L1 only; L1 + features;
L1 + features + GAN) and reports the same figures. Results: ``benchmarks/results/
distill_quality.json`` and ``.md``, and a grid ``distill_grid.png`` (photo | teacher | student |
truth).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime import Translator  # noqa: E402
from runtime.bench.benchmark import Timing, run_benchmark  # noqa: E402
from runtime.demo import demo_model_path  # noqa: E402
from runtime.metrics import psnr  # noqa: E402
from runtime.synthetic import natural_images  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def recover_teacher(onnx_path: Path, out: Path) -> tuple[Path, float]:
    """Write the PyTorch state_dict held in ``onnx_path``'s initializers; returns the file and
    the max abs difference of the rebuilt network against onnxruntime on a seeded image."""
    import onnx
    from onnx import numpy_helper

    from runtime.metadata import read_metadata
    from training.networks import GeneratorSpec, build_generator

    meta = read_metadata(onnx_path)
    spec = GeneratorSpec.from_dict({k: v for k, v in meta.generator.items() if v is not None})
    net = build_generator(spec).eval()
    wanted = net.state_dict()
    graph = onnx.load(str(onnx_path)).graph
    found = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
             for i in graph.initializer if i.name in wanted}
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise SystemExit(f"{onnx_path}: cannot recover {len(missing)} weights, e.g. {missing[0]}")
    net.load_state_dict(found)
    torch.save(net.state_dict(), out)
    image = natural_images(1, 128, 160, seed=5)[0]  # RGB
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        expected = net(x).numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return out, float(np.abs(expected - got).max())


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two HWC uint8 images (scikit-image, channels last)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))) / 255.0)


@dataclass
class Run:
    name: str
    student: str
    lambda_feat: float = 1.0
    lambda_gan: float = 0.0


def distill_student(teacher: Path, data: Path, work: Path, run: Run, steps: int,
                    cache: int) -> tuple[Path, float]:
    """Distil one student with the CLI; returns its exported ONNX and the seconds it took."""
    run_dir = work / f"run_{run.name}"
    onnx_path = work / f"{run.name}.onnx"
    timing = run_dir / "distill_seconds.txt"  # kept with the run, so a rerun reports it too
    started = time.perf_counter()
    if not (run_dir / "checkpoints" / "latest.pt").exists():
        # One thread and no loader workers: on a 2-core machine more threads only contend
        # (measured here: 10x slower steps with 2 threads while anything else ran).
        subprocess.run([sys.executable, "-m", "training.distill", str(teacher), str(data),
                        "-o", str(run_dir), "--student", run.student, "--steps", str(steps),
                        "--lambda-feat", str(run.lambda_feat), "--lambda-gan",
                        str(run.lambda_gan), "--cache-teacher", str(cache), "-q",
                        "--workers", "0", "--sample-every", str(max(steps // 4, 1))],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        timing.write_text(f"{time.perf_counter() - started:.1f}\n")
    seconds = float(timing.read_text()) if timing.exists() else float("nan")
    if not onnx_path.exists():
        subprocess.run([sys.executable, "-m", "cyclegan_export",
                        str(run_dir / "checkpoints" / "latest.pt"), str(onnx_path)],
                       check=True, stdout=subprocess.DEVNULL)
    return onnx_path, seconds


def quality(model: Path, teacher: Translator, data: Path) -> dict[str, float]:
    """Mean PSNR/SSIM/L1 on the held-out photos: against the teacher and against the truth."""
    translator = Translator(model, providers="cpu")
    rows = []
    for photo_path in sorted((data / "test" / "A").glob("*.png")):
        photo = cv2.imread(str(photo_path))
        truth = cv2.imread(str(data / "test" / "B" / photo_path.name))
        out = translator(photo)
        reference = teacher(photo)
        rows.append({"psnr_vs_teacher": psnr(out, reference, 255.0),
                     "ssim_vs_teacher": ssim(out, reference),
                     "psnr_vs_truth": psnr(out, truth, 255.0),
                     "ssim_vs_truth": ssim(out, truth), "l1_vs_truth": l1(out, truth),
                     "identity_psnr_vs_truth": psnr(photo, truth, 255.0)})
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def speed(model: Path) -> dict[str, float | str]:
    """Best fp32 model-only latency (ms) at 256x256 and 640x480 over onnxruntime and OpenVINO."""
    report = run_benchmark([model], sizes=[(256, 256), (480, 640)], batches=[1],
                           engines=["onnxruntime", "openvino"],
                           timing=Timing(warmup=3, iterations=20, psnr_images=1))
    figures: dict[str, float] = {}
    engines: dict[str, str] = {}
    for row in report.rows:
        if not row.ok or row.precision != "fp32" or row.latency_p50_ms is None:
            continue
        key = f"ms_{row.height}x{row.width}"
        if key not in figures or row.latency_p50_ms < figures[key]:
            figures[key] = row.latency_p50_ms
            engines[f"engine_{row.height}x{row.width}"] = row.label
    return {**figures, **engines}  # type: ignore[dict-item]


def live_fps(model: Path, clip: Path) -> float:
    """Frames/s of the live loop on a 640x480 clip used as the camera, at --max-side 320."""
    done = subprocess.run([sys.executable, "-m", "runtime", str(model), "--webcam", str(clip),
                           "--max-side", "320", "--no-display", "--backend", "auto"],
                          capture_output=True, text=True, check=True)
    found = re.search(r"\(([\d.]+) FPS", done.stdout)
    if found is None:
        raise SystemExit(f"no FPS figure in the live run's output: {done.stdout!r}")
    return float(found.group(1))


def make_clip(path: Path, frames: int = 120) -> Path:
    """A 640x480 pan across a natural-looking picture at 30 fps (a camera stand-in)."""
    big = natural_images(1, 480, 1280, seed=21)[0][..., ::-1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        left = int(i * (1280 - 640) / max(frames - 1, 1))
        writer.write(np.ascontiguousarray(big[:, left:left + 640]))
    writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "datasets" / "demo")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "distill_bench")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--cache", type=int, default=720,
                        help="teacher outputs cached for this many fixed crops (0: off)")
    parser.add_argument("--students", default="mobile-4,mobile-8,resnet-8")
    parser.add_argument("--ablation", default="l1,gan",
                        help="objective variants of the first student: l1 (no feature term), "
                        "gan (adds the LSGAN term); empty for none")
    parser.add_argument("--train-only", action="store_true",
                        help="distil and export, measure nothing (measure on a quiet machine)")
    parser.add_argument("--speed-only", action="store_true",
                        help="re-measure the latency and live columns of the committed results "
                        "on this machine, keeping their quality columns (an architecture's speed "
                        "does not depend on its weights: students distilled for one step)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.data / "test" / "A").is_dir():
        from training.demo_data import build

        build(args.data)
    if args.speed_only:
        remeasure_speed(args.out / "distill_quality.json", args.data, args.work / "speed_only")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    teacher_onnx = demo_model_path()
    teacher_pth, recovery_error = recover_teacher(teacher_onnx, args.work / "teacher_demo.pth")
    print(f"teacher weights recovered from {teacher_onnx.name}: max abs diff {recovery_error:.2e}")
    if recovery_error > 1e-4:
        raise SystemExit("the recovered teacher does not match its ONNX file")
    students = [s for s in args.students.split(",") if s]
    runs = [Run(s, s) for s in students]
    variants = {"l1": Run(f"{students[0]}_l1", students[0], lambda_feat=0.0),
                "gan": Run(f"{students[0]}_gan", students[0], lambda_gan=1.0)}
    runs += [variants[name] for name in args.ablation.split(",") if name]
    if args.train_only:
        for run in runs:
            onnx_path, seconds = distill_student(teacher_pth, args.data, args.work, run,
                                                 args.steps, args.cache)
            print(f"{run.name}: {onnx_path} ({seconds:.0f} s)")
        return
    clip = make_clip(args.work / "camera_640x480.mp4")
    from training.networks import build_generator, count_macs, generator_spec

    teacher = Translator(teacher_onnx, providers="cpu")
    rows = []
    for name, model, seconds, spec_name, ngf in [
            ("teacher (demo)", teacher_onnx, 0.0, "resnet_6blocks", 16),
            *[(run.name, *distill_student(teacher_pth, args.data, args.work, run, args.steps,
                                          args.cache),
               *_student_arch(run.student)) for run in runs]]:
        macs = count_macs(build_generator(generator_spec(spec_name, ngf=ngf)))
        row = {"model": name, "architecture": _arch_label(spec_name, ngf), "gmac_256": macs / 1e9,
               "distill_seconds": round(seconds, 1), **quality(model, teacher, args.data),
               **speed(model), "live_fps_640x480_max_side_320": live_fps(model, clip)}
        rows.append(row)
        print(json.dumps(row))
    result = {"teacher": "runtime/demo/demo.onnx (resnet_6blocks ngf 16)",
              "teacher_recovery_max_abs": recovery_error, "steps": args.steps,
              "cache_teacher": args.cache, "machine": platform.platform(),
              "cpu": _cpu_name(), "rows": rows,
              # other work on the machine skews latency: say how busy it was
              "load_average_1_5_15_min_at_end": list(os.getloadavg()),
              "ablation_gan_partial_log": _gan_partial(args.work)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "distill_quality.md").write_text(_markdown(result))
    print(_markdown(result))


def remeasure_speed(results: Path, data: Path, work: Path) -> None:
    """The latency and live figures of every row of ``results`` measured again on this
    machine, one model per architecture (the demo model for the teacher, students distilled for
    one step); the quality figures and the rest of the file are kept."""
    from training.distill.students import STUDENTS

    result = json.loads(results.read_text())
    work.mkdir(parents=True, exist_ok=True)
    teacher_pth, _ = recover_teacher(demo_model_path(), work / "teacher_demo.pth")
    clip = make_clip(work / "camera_640x480.mp4")
    load_before = list(os.getloadavg())
    measured: dict[str, dict[str, float | str]] = {}
    for row in result["rows"]:
        architecture = row["architecture"]
        if architecture not in measured:
            if row["model"].startswith("teacher"):
                model = demo_model_path()
            else:
                student = next(name for name in STUDENTS
                               if _arch_label(*_student_arch(name)) == architecture)
                model, _ = distill_student(teacher_pth, data, work, Run(student, student), 1, 0)
            measured[architecture] = {**speed(model),
                                      "live_fps_640x480_max_side_320": live_fps(model, clip)}
            print(architecture, json.dumps(measured[architecture]), flush=True)
        row.update(measured[architecture])
    result["speed_measured"] = {
        "when": time.strftime("%Y-%m-%d"), "cpu": _cpu_name(),
        "load_average_1_5_15_min_before": load_before,
        "load_average_1_5_15_min_after": list(os.getloadavg()),
        "how": "benchmarks/distill_quality.py --speed-only: one model per architecture (students "
               "distilled for one step; speed does not depend on the weights)"}
    results.write_text(json.dumps(result, indent=2) + "\n")
    results.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))


def _gan_partial(work: Path) -> list[dict]:
    """The loss records of a GAN-term run stopped early, when one was kept (see the README)."""
    path = work / "gan_partial_log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _arch_label(generator: str, ngf: int) -> str:
    """A row's architecture column, e.g. ``mobile_resnet_9blocks ngf 4`` (--speed-only finds
    the student back by it)."""
    return f"{generator} ngf {ngf}"


def _student_arch(name: str) -> tuple[str, int]:
    from training.distill.students import STUDENTS

    student = STUDENTS[name]
    return student.generator, student.ngf


def _cpu_name() -> str:
    from runtime.bench.machine import machine_info

    return machine_info(gemm_size=0).cpu


def _markdown(result: dict) -> str:
    load = ", ".join(f"{x:.1f}" for x in result.get("load_average_1_5_15_min_at_end", []))
    lines = [f"Teacher: {result['teacher']}; {result['steps']} distillation steps; "
             f"{result['cpu']}; load average at the end {load}."]
    speed = result.get("speed_measured")
    if speed:
        before, after = (", ".join(f"{x:.1f}" for x in speed[key]) for key in (
            "load_average_1_5_15_min_before", "load_average_1_5_15_min_after"))
        lines.append(f"Latency and live columns measured again on {speed['when']} ({speed['cpu']}; "
                     f"load average {before} before, {after} after): {speed['how']}.")
    lines += ["",
             "| model | architecture | GMAC @256 | ms @256 | ms @640x480 | live FPS (640x480, "
             "--max-side 320) | PSNR vs teacher | SSIM vs teacher | PSNR vs truth | "
             "identity vs truth |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['architecture']} | {r['gmac_256']:.2f} | "
                     f"{r.get('ms_256x256', float('nan')):.1f} | "
                     f"{r.get('ms_480x640', float('nan')):.1f} | "
                     f"{r['live_fps_640x480_max_side_320']:.1f} | "
                     f"{r['psnr_vs_teacher']:.2f} | {r['ssim_vs_teacher']:.3f} | "
                     f"{r['psnr_vs_truth']:.2f} | {r['identity_psnr_vs_truth']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
