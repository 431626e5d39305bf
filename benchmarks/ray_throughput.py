"""Throughput of ``cyclegan-run --ray`` next to a local ``cyclegan-run``, on one machine.

    python benchmarks/ray_throughput.py                 # 200 images 256x256, 3 rounds
    python benchmarks/ray_throughput.py --rounds 5 --cli

A folder of ``--images`` natural-looking PNGs (:func:`runtime.synthetic.natural_images`) is
translated with the bundled demo model by

- **local**: ``cyclegan-run MODEL DIR -o OUT --threads 2`` in a subprocess (one process, the
  threaded pipeline, onnxruntime with 2 threads);
- **ray 1x1** and **ray 2x1**: :func:`runtime.distributed.translate_plan` (what ``--ray``
  runs) with 1 and 2 model workers of 1 thread each, on a local Ray cluster of ``--cpus`` CPUs
  started once for the benchmark.

Each figure is images/s while translating: frames over the run's own clock, which starts once
the model is loaded (local) or the workers have loaded it (Ray), and includes reading, writing
and, for Ray, the driver's round trips. Start-up (Ray's cluster, the workers' model load) is
reported apart, as wall time. The three kinds of run alternate within a round, in a rotated
order from round to round, so a machine that gets busier or quieter moves them alike; the
headline ratios are the medians of the per-round ratios, with their range.

The machine may be shared. Before each round, the cores that other processes keep busy are
measured over 2 s of our own idleness (``others_busy_cores``, from /proc/stat), and for the Ray
runs the workers' CPU seconds while translating are read from /proc: images per worker CPU
second, 2 workers over 1 (``cpu_efficiency_2x1_over_1x1``), is the speed-up two free cores
would give, however much of the machine other processes took meanwhile. ``--cli`` adds one
end-to-end ``cyclegan-run --ray`` (a cluster started for the run) next to a local one, wall
time.

Writes ``benchmarks/results/ray_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RATE = re.compile(r"\((\d+) frame\(s\) in ([\d.]+) s")


def make_folder(folder: Path, count: int, side: int) -> None:
    import cv2

    from runtime.synthetic import natural_images

    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, count, 20):  # in slices: 200 frames of 256x256 at once are ~40 MB
        for i, image in enumerate(natural_images(min(20, count - start), side, side,
                                                 seed=start), start):
            cv2.imwrite(str(folder / f"{i:04d}.png"), image)


def run_local(model: str, folder: Path, out: Path, threads: int) -> dict[str, float]:
    """One ``cyclegan-run`` in a subprocess; its own rate from the summary line."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runtime", model, str(folder), "-o", str(out),
                           "--threads", str(threads), "--providers", "cpu", "-q"],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    match = RATE.search(done.stdout)
    assert match, done.stdout
    frames, seconds = int(match[1]), float(match[2])
    return {"images_per_s": frames / seconds, "seconds": seconds, "wall_s": wall}


def run_ray(model: str, folder: Path, out: Path, workers: int) -> dict[str, float]:
    """One :func:`runtime.distributed.translate_plan` (what ``translate`` and ``--ray`` call),
    with the CPU seconds its workers spent while translating."""
    from runtime.distributed import WorkerSettings, translate_plan
    from runtime.media.outputs import plan_outputs
    from runtime.media.sources import expand_inputs

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    plan = plan_outputs(expand_inputs([str(folder)], exclude=out).files, out)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    summary = translate_plan(model, plan, WorkerSettings(providers="cpu", threads=1),
                             workers=workers, ready=lambda _: first.update(worker_cpu()),
                             progress=lambda _: last.update(worker_cpu()))
    wall = time.perf_counter() - started
    assert not summary.failed and summary.frames, summary.lines()
    cpu = sum(seconds - first.get(pid, 0.0) for pid, seconds in last.items())
    return {"images_per_s": summary.frames / summary.seconds, "seconds": summary.seconds,
            "wall_s": wall, "worker_cpu_s": cpu, "images_per_cpu_s": summary.frames / cpu}


def worker_cpu() -> dict[int, float]:
    """CPU seconds (user + system) so far of each model worker process on this machine."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or not (entry / "cmdline").read_bytes().startswith(
                    b"ray::TranslationWorker"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return found


def run_cli(model: str, folder: Path, out: Path, ray: bool) -> float:
    """Wall seconds of one whole command (with --ray: a local cluster started for the run)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runtime", model, str(folder), "-o", str(out), "-q",
                    "--providers", "cpu"] + (["--ray"] if ray else ["--threads", "2"]),
                   capture_output=True, text=True, check=True)
    return time.perf_counter() - started


def busy_cores(seconds: float = 2.0) -> float | None:
    """Cores kept busy by everything on the machine over ``seconds`` (None without
    /proc/stat); called while this benchmark idles, it measures the other processes."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    cores = os.cpu_count() or 1
    return cores * (1 - (idle1 - idle0) / max(1, total1 - total0))


def machine() -> dict[str, Any]:
    import onnxruntime
    import ray

    from runtime.bench.machine import machine_info

    info = machine_info(gemm_size=0)  # the CPU's name and usable cores, as cyclegan-bench reads
    return {"cpu": info.cpu, "cores_usable": info.cores_usable, "python": info.python,
            "ray": ray.__version__, "onnxruntime": onnxruntime.__version__}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--cli", action="store_true",
                        help="also time one whole `cyclegan-run --ray` (cluster start-up)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_throughput.json")
    args = parser.parse_args()

    import ray

    from runtime.demo import demo_model_path

    model = str(demo_model_path())
    work = Path(tempfile.mkdtemp(prefix="ray_throughput_"))
    try:
        folder = work / "in"
        make_folder(folder, args.images, args.size)
        report: dict[str, Any] = {
            "machine": machine(), "images": args.images, "size": args.size,
            "model": "bundled demo (resnet_6blocks)", "ray_cpus": args.cpus, "rounds": [],
            "load_average_start": os.getloadavg()[0]}
        if args.cli:  # before this process starts its own cluster
            report["cli_wall_s"] = {"local": run_cli(model, folder, work / "cli", ray=False),
                                    "ray": run_cli(model, folder, work / "cli", ray=True)}
            print(f"whole command, wall: local {report['cli_wall_s']['local']:.1f} s, --ray "
                  f"{report['cli_wall_s']['ray']:.1f} s (cluster start-up included)")
        started = time.perf_counter()
        # "local": a new cluster of --cpus CPUs, even where `ray start` left one on this machine
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
        report["ray_init_s"] = time.perf_counter() - started
        runs = {"local": lambda: run_local(model, folder, work / "out", threads=2),
                "ray_1x1": lambda: run_ray(model, folder, work / "out", workers=1),
                "ray_2x1": lambda: run_ray(model, folder, work / "out", workers=2)}
        names = list(runs)
        for index in range(args.rounds):
            order = names[index % 3:] + names[:index % 3]
            row: dict[str, Any] = {"order": order, "others_busy_cores": busy_cores()}
            for name in order:
                row[name] = runs[name]()
                row[name]["load_average"] = os.getloadavg()[0]
            row["ratio_2x1_over_1x1"] = (row["ray_2x1"]["images_per_s"]
                                         / row["ray_1x1"]["images_per_s"])
            row["ratio_2x1_over_local"] = (row["ray_2x1"]["images_per_s"]
                                           / row["local"]["images_per_s"])
            report["rounds"].append(row)
            others = row["others_busy_cores"]
            print(f"round {index + 1} (others busy: "
                  f"{'?' if others is None else f'{others:.1f}'} cores): " + ", ".join(
                f"{name} {row[name]['images_per_s']:.2f} img/s" for name in names)
                + f" (per worker CPU s: {row['ray_1x1']['images_per_cpu_s']:.2f} 1x1, "
                f"{row['ray_2x1']['images_per_cpu_s']:.2f} 2x1)"
                + f"; 2x1/1x1 {row['ratio_2x1_over_1x1']:.2f}, "
                f"2x1/local {row['ratio_2x1_over_local']:.2f}", flush=True)
        ray.shutdown()
        rounds = report["rounds"]
        report["summary"] = {
            **{f"{name}_images_per_s": spread([r[name]["images_per_s"] for r in rounds])
               for name in names},
            **{f"{name}_wall_s": spread([r[name]["wall_s"] for r in rounds]) for name in names},
            "ratio_2x1_over_1x1": spread([r["ratio_2x1_over_1x1"] for r in rounds]),
            "ratio_2x1_over_local": spread([r["ratio_2x1_over_local"] for r in rounds]),
            # images per worker CPU second, 2 workers over 1: the speed-up two free cores
            # would give, whatever the other processes took meanwhile
            "cpu_efficiency_2x1_over_1x1": spread([
                r["ray_2x1"]["images_per_cpu_s"] / r["ray_1x1"]["images_per_cpu_s"]
                for r in rounds])}
        report["load_average_end"] = os.getloadavg()[0]
        summary = report["summary"]
        for key in ("ratio_2x1_over_1x1", "ratio_2x1_over_local",
                    "cpu_efficiency_2x1_over_1x1"):
            print(f"{key}: median {summary[key]['median']:.2f} "
                  f"(range {summary[key]['min']:.2f}-{summary[key]['max']:.2f})")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
