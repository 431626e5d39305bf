"""What this process may use of the CPU."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on: its affinity set on Linux (a container's or ``taskset``'s
    limit, which ``os.cpu_count`` ignores), else every logical core; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
