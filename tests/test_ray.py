"""The Ray tests (tests/ray_cases.py), run in a pytest process of their own.

``ray.init`` leaves threads (gRPC, the core worker) in the process that called it, also after
``ray.shutdown``; a child process keeps the suite's own process clean, and its report is passed
on when it fails. (The segmentation faults once blamed on those threads came from OpenVINO: see
runtime.backends.openvino_core.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from isolated import run_cases_in_own_process

pytest.importorskip("ray")

CASES = Path(__file__).with_name("ray_cases.py")


def test_ray_cases_in_their_own_process() -> None:
    run_cases_in_own_process(CASES)
