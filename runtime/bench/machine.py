"""The machine a benchmark ran on: CPU, cores, vector units, software versions, GPUs, and its
float32 matrix-multiply rate (the yardstick the benchmark's GFLOP/s are divided by)."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.backends import available_providers
from runtime.bench.engines import run_in_fresh_process
from runtime.bench.report import MachineInfo
from runtime.cpu import usable_cores

# The CPU features the engines' kernels dispatch on (x86 vector/matrix units, Arm SIMD).
CPU_FLAG_PATTERN = re.compile(r"^(avx\w*|fma|f16c|amx\w*|asimd\w*|sve\w*|i8mm|bf16)$")
# Package -> the distributions that provide it (the first one installed is reported).
VERSION_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                    "onnxruntime-directml"),
    "opencv": ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
               "opencv-contrib-python-headless"),
    "openvino": ("openvino",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "onnx": ("onnx",),
}


def gemm_gflops(size: int = 2048, repeats: int = 5, seed: int = 0) -> float:
    """The machine's float32 matrix-multiply rate: best of ``repeats`` numpy ``size`` x ``size``
    matmuls (after one untimed), in GFLOP/s (``2 * size**3`` FLOPs each)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    np.matmul(a, b)  # starts the BLAS thread pool and pages the operands in
    best = math.inf
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        np.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9


# Thread-count variables the common BLAS builds behind numpy read when they load.
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def machine_info(gemm_size: int = 2048, isolate: bool = True,
                 gemm_threads: int | None = None) -> MachineInfo:
    """CPU model, cores, vector/matrix flags, OS, Python, package versions, GPUs and, unless
    ``gemm_size`` is 0, the fp32 GEMM rate.

    ``isolate``: measure the GEMM in a fresh process, where ``gemm_threads`` (when given, to
    match the engines' ``--threads``) limits numpy's BLAS threads; in this process the BLAS
    pool is already sized and ``gemm_threads`` is not applied (then recorded as None).
    """
    cpu, flags = _cpu_description()
    usable = usable_cores()
    rate = None
    if gemm_size > 0 and isolate:
        env = {name: str(gemm_threads) for name in BLAS_THREAD_VARIABLES} if gemm_threads else {}
        rate = run_in_fresh_process(gemm_gflops, gemm_size, env=env)
    elif gemm_size > 0:
        rate, gemm_threads = gemm_gflops(gemm_size), None
    return MachineInfo(
        cpu=cpu, cores_logical=os.cpu_count() or 1, cores_usable=usable, cpu_flags=flags,
        os=platform.platform(terse=True), python=platform.python_version(),
        versions={name: _installed_version(dists) for name, dists in VERSION_DISTRIBUTIONS.items()},
        onnxruntime_providers=available_providers(), gpus=_nvidia_gpus(),
        gemm_gflops=rate, gemm_size=max(gemm_size, 0), gemm_threads=gemm_threads)


def _cpu_description() -> tuple[str, list[str]]:
    """(model name, flags of interest) from /proc/cpuinfo, else what ``platform`` knows."""
    name = ""
    flags: list[str] = []
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if not name and key in ("model name", "hardware", "cpu model"):
            name = value.strip()
        elif not flags and key in ("flags", "features"):
            flags = sorted({f for f in value.split() if CPU_FLAG_PATTERN.match(f)})
    return name or platform.processor() or platform.machine() or "unknown CPU", flags


def _installed_version(distributions: Sequence[str]) -> str | None:
    # Read from the installed metadata: importing torch or openvino just for a version would
    # cost seconds and hundreds of MB in the parent process.
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _nvidia_gpus() -> list[str]:
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        done = subprocess.run([tool, "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]
