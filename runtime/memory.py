"""Will a frame fit in memory? An estimate made before running it, so that a 12000x12000
photo fails at once with a suggestion instead of after seconds with an allocator's message.

The estimate is empirical: onnxruntime's CPU peak for the official generators grows linearly
with the pixels, about 26 bytes per pixel per unit of ``ngf`` (measured here with
resnet_6blocks ngf 16: 416 bytes/pixel at 256x256, 512x512 and 1024x1024), plus the
float input and output (24 bytes/pixel).
"""

from __future__ import annotations

import math
import os

from runtime.metadata import ModelMetadata

BYTES_PER_PIXEL_PER_NGF = 26.0
IO_BYTES_PER_PIXEL = 24.0
HEADROOM = 0.8  # use at most this share of the available memory
DEFAULT_NGF = 64


class FrameTooLargeError(MemoryError):
    """A frame needs more memory than the machine has; the message suggests a ``max_side``."""


def frame_bytes(meta: ModelMetadata, height: int, width: int, batch: int = 1) -> int:
    """Estimated peak bytes to run ``batch`` frames of ``height`` x ``width`` through the model."""
    ngf = int(meta.generator.get("ngf") or DEFAULT_NGF)
    per_pixel = BYTES_PER_PIXEL_PER_NGF * ngf + IO_BYTES_PER_PIXEL
    return int(per_pixel * height * width * batch)


# A container's memory limit, what its processes use now, and their statistics (for the file
# cache in that use): cgroup v2, then v1. A limit of "max" (v2) or a huge number (v1's
# "unlimited") means none.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
                  "/sys/fs/cgroup/memory.stat", "inactive_file"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                  "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"))


def _read_number(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):  # absent, or "max"
        return None


def _stat_value(path: str, key: str) -> int:
    """One ``key value`` line of a cgroup ``memory.stat`` file (0 when absent)."""
    try:
        with open(path) as handle:
            for line in handle:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_room() -> int | None:
    """What the container's memory limit leaves free: the limit less the usage, less the
    inactive file cache the usage counts (the kernel drops that cache before it kills
    anything: reading a long video fills it up to the limit), as docker and the kubelet
    count; None without a limit."""
    for limit_file, usage_file, stat_file, cache_key in _CGROUP_FILES:
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is not None and limit < 2**60 and usage is not None:
            used = max(0, usage - _stat_value(stat_file, cache_key))
            return max(0, limit - used)
    return None


def available_bytes() -> int | None:
    """Memory available to a new allocation: Linux ``MemAvailable``, or less where a container
    (cgroup) limit leaves less, since the kernel kills a process that goes past that limit
    however much the machine has free; else physical memory; None where nothing can be read.
    """
    machine: int | None = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    machine = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if machine is None:
        try:
            machine = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            machine = None
    room = _cgroup_room()
    if room is None:
        return machine
    return room if machine is None else min(machine, room)


def check_fits(meta: ModelMetadata, height: int, width: int, batch: int = 1,
               available: int | None = None) -> None:
    """Raise :class:`FrameTooLargeError` when the frames will not fit, naming a ``max_side``
    (a multiple of 64) at which they would."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    needed = frame_bytes(meta, height, width, batch)
    budget = available * HEADROOM
    if needed <= budget:
        return
    scale = math.sqrt(budget / needed)
    side = max(64, int(max(height, width) * scale) // 64 * 64)
    frames = f"{batch} frames of " if batch > 1 else "a "
    raise FrameTooLargeError(
        f"{frames}{width}x{height} frame needs about {needed / 2**30:.1f} GiB to translate, "
        f"more than the {budget / 2**30:.1f} GiB it may take ({HEADROOM:.0%} of the "
        f"{available / 2**30:.1f} GiB available); translate it smaller with --max-side {side} "
        f"(Translator(max_side={side}))")
