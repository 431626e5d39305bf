"""benchmarks/gpu_check.py: the prepared one-shot GPU measurement runs end to end on the CPU
(``--device cpu --quick``) and leaves a result file with every part and every target's figure.
No assertion on speed: the CPU run only proves the script works before a GPU lease."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
# Parts with figures on a CPU; tensorrt is skipped there (no GPU), with its reason.
MEASURED = ("setup", "session", "compare", "frame", "pipeline", "train")


@pytest.mark.slow
def test_quick_cpu_run_writes_every_part(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick",
                           "--out", str(tmp_path), "--tag", "test"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_test.json").read_text(encoding="utf-8"))
    markdown = (tmp_path / "gpu_test.md").read_text(encoding="utf-8")

    for name in MEASURED:
        part = data["parts"][name]
        assert part["status"] == "ok", (name, part)
        assert part["seconds"] >= 0
    assert data["parts"]["tensorrt"]["status"] == "skipped"
    assert data["parts"]["session"]["providers"][0] == "CPUExecutionProvider"

    compare = data["parts"]["compare"]
    assert compare["pytorch_eager"]["ms_median"] > 0 and compare["onnxruntime"]["ms_median"] > 0
    psnr = compare["onnxruntime_psnr_vs_pytorch_fp32_db"]  # "inf": identical outputs
    assert psnr == "inf" or psnr > 40
    pipeline = data["parts"]["pipeline"]
    for kind in ("folder", "video"):
        row = pipeline[kind]
        assert row["end_to_end_median"] > 0 and row["model_only_median"] > 0
        assert len(row["ratios"]) == len(row["end_to_end_rounds"]) >= 2
    train = data["parts"]["train"]
    assert train["end_to_end_median"] > 0 and train["ceiling_median"] > 0

    assert [t["item"] for t in data["targets"]] == ["1", "1", "2", "3", "4"]
    for target in data["targets"]:
        assert isinstance(target["figure"], float) and target["figure"] > 0, target
        assert target["passed"] in (True, False)
        assert f"{target['figure']:.3f}" in markdown
    assert data["versions"]["onnxruntime"] and data["providers_available"]
    assert "PASS" in done.stdout or "FAIL" in done.stdout


def _gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["gpu_check"])
    return sys.modules["gpu_check"]


def test_training_is_cut_to_the_time_left() -> None:
    check = _gpu_check()
    plan = check.PLANS["full"]
    assert check.train_size(plan, 10_000.0) == (plan.train_rounds, plan.train_steps)
    rounds, steps = check.train_size(plan, 60.0)
    assert (rounds, steps) == (3, 20)  # the floor, whatever the budget
    rounds, steps = check.train_size(plan, check.train_cost(plan, 4, plan.train_steps))
    assert (rounds, steps) == (4, plan.train_steps)  # rounds go first


def test_rounds_alternate_and_stop_at_the_deadline() -> None:
    check = _gpu_check()
    plan = replace(check.PLANS["quick"], rounds=6, min_rounds=2)
    order: list[str] = []

    def runner(name: str) -> Callable[[], float]:
        def run() -> float:
            order.append(name)
            return 1.0
        return run

    runners = {name: runner(name) for name in ("a", "b")}
    values = check.alternate(runners, plan, deadline=time.perf_counter() - 1)
    assert values == {"a": [1.0, 1.0], "b": [1.0, 1.0]}  # the minimum, though past due
    assert order == ["a", "b", "a", "b"]
    values = check.alternate(runners, plan, deadline=time.perf_counter() + 60)
    assert len(values["a"]) == len(values["b"]) == 6
