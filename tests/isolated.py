"""Run a file of test cases in a pytest process of its own (see tests/test_video.py and
tests/test_ray.py for why); its report is passed on when it fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cases_in_own_process(cases: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(cases)], capture_output=True, text=True, timeout=900,
                          cwd=cases.parent.parent)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1]
