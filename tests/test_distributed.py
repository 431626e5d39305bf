"""A real 2-process run under torchrun (gloo on CPU) through the cyclegan-train command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.checkpoint import load_checkpoint


@pytest.mark.slow
def test_two_process_gloo_run_shards_data_and_only_rank0_writes(dataroot: Path,
                                                                 tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training", str(dataroot), "--out", str(run), "--generator", "resnet_6blocks",
        # one loader worker per rank: it lives across the epoch boundary at step 3
        "--ngf", "8", "--ndf", "8", "--load-size", "36", "--crop-size", "32", "--workers", "1",
        "--max-steps", "4", "--log-every", "1", "--sample-every", "2", "--checkpoint-every", "2",
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]

    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["world_size"] == 2 and len(state["rank_states"]) == 2
    # 5 images in trainA split over 2 ranks: 3 steps per epoch, so step 4 is epoch 1, batch 1.
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    # gradients are all-reduced: both replicas hold the same weights after different data
    checksums = [r["weights_checksum"] for r in state["rank_states"]]
    assert checksums[0] == checksums[1]
    # each rank keeps its own history of fakes
    pools = [r["pools"]["fake_B"]["images"] for r in state["rank_states"]]
    assert not all(torch.equal(a, b) for a, b in zip(*pools, strict=True))
    # one writer: one record per step, one set of files
    steps = [json.loads(x)["step"] for x in (run / "loss_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_0000002.png", "step_0000004.png"]
    assert done.stdout.count("trained to step 4 ") == 1
