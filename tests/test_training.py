from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from training.checkpoint import load_checkpoint
from training.cli import main as train_cli
from training.config import TrainConfig, from_dict
from training.losses import GANLoss
from training.model import CycleGANStep
from training.networks import GeneratorSpec, build_generator
from training.pool import ImagePool
from training.trainer import train


def tiny_config(dataroot: Path, **changes: object) -> TrainConfig:
    values = dict(dataroot=str(dataroot), generator="resnet_6blocks", ngf=8, ndf=8, load_size=36,
                  crop_size=32, num_workers=0, n_epochs=1, n_epochs_decay=2, log_every=1,
                  sample_every=0, checkpoint_every=0, num_samples=2, pool_size=2)
    values.update(changes)
    return from_dict(values)


def test_a_few_steps_write_a_loadable_self_describing_checkpoint(dataroot: Path,
                                                                 tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(tiny_config(dataroot, max_steps=4, sample_every=2, checkpoint_every=2), run,
                   progress=False)

    assert result.step == 4
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["step"] == 4 and state["epoch"] == 0 and state["config"]["ngf"] == 8
    assert set(state["generators"]) == {"G_AB", "G_BA"}
    assert set(state["discriminators"]) == {"D_A", "D_B"}
    assert set(state["optimizers"]) == {"G", "D"} and set(state["schedulers"]) == {"G", "D"}
    spec = GeneratorSpec.from_dict(state["generators"]["G_AB"]["spec"])
    net = build_generator(spec)
    net.load_state_dict(state["generators"]["G_AB"]["state_dict"])  # rebuilt from the file alone
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
        "latest.pt", "step_0000002.pt", "step_0000004.pt"]
    records = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"} <= set(records[0])
    grid = Image.open(run / "samples" / "step_0000004.png")
    assert grid.size == (6 * 34 + 2, 2 * 34 + 2)  # 6 tiles across, num_samples rows
    assert (run / "config.yaml").exists()


def _weights(state: dict) -> dict[str, torch.Tensor]:
    flat = {}
    for group in ("generators",):
        for name, entry in state[group].items():
            flat.update({f"{name}.{k}": v for k, v in entry["state_dict"].items()})
    for name, sd in state["discriminators"].items():
        flat.update({f"{name}.{k}": v for k, v in sd.items()})
    for name, opt in state["optimizers"].items():
        for pid, values in opt["state"].items():
            flat.update({f"opt{name}.{pid}.{k}": v for k, v in values.items()})
    return flat


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_continues_exactly(dataroot: Path, tmp_path: Path, workers: int) -> None:
    # dropout exercises the torch RNG, a small pool its own RNG, 7 steps cross an epoch (5 A's)
    # and therefore a learning-rate change; a worker process (persistent across epochs) must
    # still be handed each epoch's order and a resumed run's start inside its epoch.
    config = tiny_config(dataroot, dropout=True, num_workers=workers)
    straight = train(config.replace(max_steps=7), tmp_path / "straight", progress=False)
    train(config.replace(max_steps=3), tmp_path / "resumed", progress=False)
    first_half = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.pt")
    resumed = train(config.replace(max_steps=7), tmp_path / "resumed", first_half, progress=False)

    a = load_checkpoint(straight.checkpoint)
    b = load_checkpoint(resumed.checkpoint)
    assert (a["step"], a["epoch"], a["batch_in_epoch"]) == (b["step"], b["epoch"],
                                                            b["batch_in_epoch"]) == (7, 1, 2)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert different == []
    assert a["schedulers"] == b["schedulers"]
    ra, rb = a["rank_states"][0], b["rank_states"][0]
    assert torch.equal(ra["torch_rng"], rb["torch_rng"])
    for pool in ("fake_A", "fake_B"):
        assert ra["pools"][pool]["rng"] == rb["pools"][pool]["rng"]
        assert all(torch.equal(x, y) for x, y in zip(ra["pools"][pool]["images"],
                                                     rb["pools"][pool]["images"], strict=True))
    # and the resumed run's log continues where the first half stopped
    steps = [json.loads(line)["step"]
             for line in (tmp_path / "resumed" / "loss_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 8))


def test_worker_processes_do_not_change_the_result(dataroot: Path, tmp_path: Path) -> None:
    config = tiny_config(dataroot, max_steps=7)  # into the second epoch: persistent workers
    in_process = train(config, tmp_path / "w0", progress=False)
    with_workers = train(config.replace(num_workers=2), tmp_path / "w2", progress=False)
    wa = _weights(load_checkpoint(in_process.checkpoint))
    wb = _weights(load_checkpoint(with_workers.checkpoint))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_loader_workers_start_once_per_run_not_per_epoch(dataroot: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data import DataLoader

    started: list[int] = []
    real_get_iterator = DataLoader._get_iterator  # starts the worker processes

    def counting(self: DataLoader) -> object:
        started.append(self.num_workers)
        return real_get_iterator(self)

    monkeypatch.setattr(DataLoader, "_get_iterator", counting)
    result = train(tiny_config(dataroot, num_workers=1, max_steps=11), tmp_path / "run",
                   progress=False)
    assert (result.step, result.epoch) == (11, 2)  # 5 steps per epoch: three epochs begun
    assert started == [1]


def test_step_returns_the_losses_on_the_device_without_reading_them(dataroot: Path) -> None:
    from training.model import CycleGANNetworks, losses_to_floats

    config = tiny_config(dataroot)
    nets = CycleGANNetworks.build(config, torch.device("cpu"))
    step = CycleGANStep(config, nets, nets, torch.device("cpu"), pool_seed=0)
    batch = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    losses = step.step(batch, batch.flip(-1))
    assert all(isinstance(v, torch.Tensor) and v.shape == () and not v.requires_grad
               and v.dtype == torch.float32 for v in losses.values())
    floats = losses_to_floats(losses)
    assert list(floats) == list(losses)
    assert all(floats[k] == losses[k].item() for k in losses)


def test_logs_and_the_result_hold_the_losses_of_their_own_step(
        dataroot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.trainer as trainer_module
    from training.model import losses_to_floats

    per_step: list[dict[str, float]] = []
    reads: list[int] = []

    def record_steps(trainer: trainer_module.Trainer) -> None:
        step = trainer.step_fn.step

        def recorded(real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
            losses = step(real_a, real_b)
            per_step.append(losses_to_floats(losses))
            return losses

        trainer.step_fn.step = recorded  # type: ignore[method-assign]

    def counted(losses: dict[str, torch.Tensor]) -> dict[str, float]:
        reads.append(len(per_step))
        return losses_to_floats(losses)

    monkeypatch.setattr(trainer_module, "losses_to_floats", counted)
    monkeypatch.setattr(trainer_module, "POSTFIX_INTERVAL_S", 1e9)  # one progress readout
    result = train(tiny_config(dataroot, max_steps=7, log_every=3), tmp_path / "run",
                   progress=True, on_start=record_steps)

    records = [json.loads(line) for line in (tmp_path / "run" / "loss_log.jsonl").read_text()
               .splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    for record in records:
        assert {k: record[k] for k in per_step[0]} == pytest.approx(per_step[record["step"] - 1],
                                                                     abs=1e-6)
    assert result.last_losses == per_step[-1]
    # read on the first step (progress), at the two log steps and for the result: not per step
    assert reads == [1, 3, 6, 7]


def test_channels_last_is_refused_off_cuda(dataroot: Path) -> None:
    from training.config import ConfigError
    from training.model import CycleGANNetworks

    # Why: with torch 2.14 on the CPU, F.instance_norm(x) backward with a channels-last
    # incoming gradient at batch 1 (what a channels-last ConvTranspose2d passes back) returns an
    # input gradient off by more than its own size, so the generators trained on garbage.
    with pytest.raises(ConfigError, match="channels_last: CUDA only"):
        CycleGANNetworks.build(tiny_config(dataroot, channels_last=True), torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_channels_last_on_cuda_gives_the_gradients_of_the_plain_layout(dataroot: Path) -> None:
    from training.model import CycleGANNetworks

    cuda = torch.device("cuda")
    batch = (torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    grads = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        nets = CycleGANNetworks.build(tiny_config(dataroot, channels_last=channels_last), cuda)
        x = batch.to(cuda)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        nets.g_ab(x).abs().mean().backward()
        grads.append([p.grad.float() for p in nets.g_ab.parameters() if p.dim() == 4])
    for plain, nhwc in zip(*grads, strict=True):
        assert (plain - nhwc).abs().max() <= 1e-2 * plain.abs().max()  # TF32 convs: 1e-3 apart


def test_resuming_from_an_earlier_checkpoint_sets_the_later_files_aside(dataroot: Path,
                                                                        tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny_config(dataroot, checkpoint_every=2, sample_every=2, keep_checkpoints=2)
    train(config.replace(max_steps=8), run, progress=False)
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == [
        "step_0000006.pt", "step_0000008.pt"]
    older = load_checkpoint(run / "checkpoints" / "step_0000006.pt")
    with pytest.warns(UserWarning, match="resumed from step 6: 3 file.s. of the abandoned later "
                                         "steps .checkpoints, sample grids. moved to "
                                         "checkpoints/after_step_0000006/, "
                                         "samples/after_step_0000006/"):
        train(config.replace(max_steps=10), run, older, progress=False)
    aside = run / "checkpoints" / "after_step_0000006"
    # latest.pt of step 8 too: a --resume must not continue the abandoned steps
    assert sorted(p.name for p in aside.iterdir()) == ["latest.pt", "step_0000008.pt"]
    assert load_checkpoint(aside / "latest.pt")["step"] == 8
    assert (run / "samples" / "after_step_0000006" / "step_0000008.png").is_file()
    # the new run's history is its own: step 8 again, then 10, none pruned for the old ones
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == [
        "step_0000008.pt", "step_0000010.pt"]
    assert load_checkpoint(run / "checkpoints" / "step_0000008.pt")["step"] == 8
    # a second rewind to step 6 keeps the first one's files apart
    with pytest.warns(UserWarning, match="after_step_0000006-2/"):
        train(config.replace(max_steps=8), run, older, progress=False)
    assert (aside / "step_0000008.pt").is_file()
    assert sorted(p.name for p in (run / "checkpoints" / "after_step_0000006-2").iterdir()) == [
        "latest.pt", "step_0000008.pt", "step_0000010.pt"]


def signal_in_step(monkeypatch: pytest.MonkeyPatch, step: int, signum: int) -> None:
    """Make CycleGANStep.step raise ``signum`` as its ``step``-th call begins (handled at once,
    in this, the main, thread)."""
    real_step, calls = CycleGANStep.step, []

    def step_with_a_signal(self: CycleGANStep, real_a: torch.Tensor,
                           real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(1)
        if len(calls) == step:
            signal.raise_signal(signum)
        return real_step(self, real_a, real_b)

    monkeypatch.setattr(CycleGANStep, "step", step_with_a_signal)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_finishes_the_step_saves_and_resumes_exactly(
        dataroot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    # the signal lands as step 3 begins: the step still completes, then the run saves at
    # step 3 and stops
    config = tiny_config(dataroot, dropout=True)
    straight = train(config.replace(max_steps=6), tmp_path / "straight", progress=False)
    real_step = CycleGANStep.step
    signal_in_step(monkeypatch, 3, signum)
    before = signal.getsignal(signum)
    capsys.readouterr()
    stopped = train(config.replace(max_steps=6), tmp_path / "resumed", progress=False)
    monkeypatch.setattr(CycleGANStep, "step", real_step)
    # no progress bar (-q): no empty line before the message that ends its line
    assert capsys.readouterr().err.startswith("stopping after this step to save a checkpoint")
    assert stopped.stopped_by == signal.Signals(signum).name and stopped.step == 3
    assert signal.getsignal(signum) is before  # the previous handler is back
    half = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.pt")
    assert half["step"] == 3
    resumed = train(config.replace(max_steps=6), tmp_path / "resumed", half, progress=False)
    a, b = _weights(load_checkpoint(straight.checkpoint)), _weights(load_checkpoint(
        resumed.checkpoint))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_a_signal_in_the_last_step_leaves_a_finished_run(dataroot: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    signal_in_step(monkeypatch, 3, signal.SIGINT)  # the last of max_steps=3
    done = train(tiny_config(dataroot, max_steps=3), tmp_path / "run", progress=False)
    assert done.step == 3 and done.stopped_by == ""  # complete, not "continue with --resume"
    assert (tmp_path / "run" / "samples" / "step_0000003.png").is_file()  # its final grid


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_group_ends_cyclegan_train_with_a_checkpoint(
        dataroot: Path, tmp_path: Path, signum: int, status: int) -> None:
    # a terminal's Ctrl-C, and systemd's or Slurm's SIGTERM, reach the data workers too: they
    # must not die of it while the main process finishes its step
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "training", str(dataroot), "-o", str(run), "--generator",
         "resnet_6blocks", "--ngf", "8", "--ndf", "8", "--load-size", "36", "--crop-size", "32",
         "--workers", "1", "--log-every", "1", "--max-steps", "100000", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = run / "loss_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    os.killpg(process.pid, signum)  # to the whole group
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, (out, err)
    step = load_checkpoint(run / "checkpoints" / "latest.pt")["step"]
    name = signal.Signals(signum).name
    assert f"stopped by {name} at step {step} ({step} in this run); checkpoint saved" in err
    assert "Traceback" not in err and step >= 2


def test_resumed_optimizer_keeps_this_devices_adam_implementation(dataroot: Path) -> None:
    from training.model import CycleGANNetworks

    config = tiny_config(dataroot)
    nets = CycleGANNetworks.build(config, torch.device("cpu"))
    step = CycleGANStep(config, nets, nets, torch.device("cpu"), pool_seed=0)
    batch = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    step.step(batch, batch)
    state = step.state_dict()
    for name in ("G", "D"):  # as a CUDA run (fused Adam) writes it
        for group in state["optimizers"][name]["param_groups"]:
            group["fused"] = True
    step.load_state_dict(state)
    for opt in (step.opt_g, step.opt_d):
        assert all(group["fused"] is None for group in opt.param_groups)
    step.step(batch, batch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_uses_fused_adam_and_resumes_a_cpu_checkpoint(dataroot: Path) -> None:
    from training.model import CycleGANNetworks

    config = tiny_config(dataroot)
    batch = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu_nets = CycleGANNetworks.build(config, torch.device("cpu"))
    on_cpu = CycleGANStep(config, cpu_nets, cpu_nets, torch.device("cpu"), pool_seed=0)
    on_cpu.step(batch, batch)
    cuda = torch.device("cuda")
    nets = CycleGANNetworks.build(config, cuda)
    step = CycleGANStep(config, nets, nets, cuda, pool_seed=0)
    assert all(group["fused"] for opt in (step.opt_g, step.opt_d) for group in opt.param_groups)
    step.load_state_dict(on_cpu.state_dict())
    assert all(group["fused"] for opt in (step.opt_g, step.opt_d) for group in opt.param_groups)
    losses = step.step(batch.to(cuda), batch.to(cuda))
    assert all(v.device.type == "cuda" for v in losses.values())


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CYCLEGAN_TEST_COMPILE"),
                    reason="minutes of torch.compile on a small CPU: set CYCLEGAN_TEST_COMPILE=1")
def test_compiled_networks_train_and_checkpoint_like_plain_ones(dataroot: Path,
                                                                tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(train_cli, [
        str(dataroot), "-o", str(run), "--generator", "resnet_6blocks", "--ngf", "8", "--ndf",
        "8", "--load-size", "36", "--crop-size", "32", "--workers", "0", "--max-steps", "2",
        "--log-every", "1", "--sample-every", "0", "--device", "cpu", "--compile", "-q"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["config"]["compile"] is True and state["step"] == 2
    assert not any("_orig_mod" in key for key in state["generators"]["G_AB"]["state_dict"])
    train(from_dict({**state["config"], "compile": False}), tmp_path / "plain", progress=False)
    # Losses, not weights: Adam moves every parameter by about lr on its first steps, whatever
    # the size of its gradient, so rounding alone makes weights differ by up to 2e-4 a step.
    logs = [[json.loads(line) for line in (folder / "loss_log.jsonl").read_text().splitlines()]
            for folder in (run, tmp_path / "plain")]
    for compiled, plain in zip(*logs, strict=True):
        losses = [k for k in plain if k not in ("step", "epoch", "lr", "steps_per_s")]
        assert {k: compiled[k] for k in losses} == pytest.approx(
            {k: plain[k] for k in losses}, rel=1e-3)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_learning_rate_is_constant_then_decays_linearly(dataroot: Path) -> None:
    from training.model import CycleGANNetworks

    config = tiny_config(dataroot, n_epochs=2, n_epochs_decay=3)
    nets = CycleGANNetworks.build(config, torch.device("cpu"))
    step = CycleGANStep(config, nets, nets, torch.device("cpu"), pool_seed=0)
    rates = []
    for _ in range(5):
        rates.append(step.lr)
        step.end_epoch()
    assert rates == pytest.approx([2e-4, 2e-4, 1.5e-4, 1e-4, 0.5e-4])


def test_adam_settings_follow_the_paper(dataroot: Path) -> None:
    from training.model import CycleGANNetworks

    config = tiny_config(dataroot)
    nets = CycleGANNetworks.build(config, torch.device("cpu"))
    step = CycleGANStep(config, nets, nets, torch.device("cpu"), pool_seed=0)
    for opt in (step.opt_g, step.opt_d):
        assert opt.param_groups[0]["lr"] == 2e-4 and opt.param_groups[0]["betas"] == (0.5, 0.999)
    assert len(step.opt_g.param_groups[0]["params"]) == len(list(nets.g_ab.parameters())) * 2


@pytest.mark.parametrize(("mode", "real", "fake"),
                         [("lsgan", 0.0, 1.0), ("vanilla", 0.6931, 0.6931)])
def test_gan_loss_targets(mode: str, real: float, fake: float) -> None:
    loss = GANLoss(mode)
    ones = torch.ones(2, 1, 4, 4) if mode == "lsgan" else torch.zeros(2, 1, 4, 4)
    assert loss(ones, True).item() == pytest.approx(real, abs=1e-4)
    assert loss(ones, False).item() == pytest.approx(fake, abs=1e-4)


def test_image_pool_fills_then_mixes_history() -> None:
    pool = ImagePool(size=3, seed=0)
    for i in range(3):
        out = pool.query(torch.full((1, 1, 2, 2), float(i)))
        assert out.item() if out.numel() == 1 else out[0, 0, 0, 0].item() == float(i)
    returned = [pool.query(torch.full((1, 1, 2, 2), 100.0 + i))[0, 0, 0, 0].item()
                for i in range(40)]
    assert any(v < 100 for v in returned) and any(v >= 100 for v in returned)
    assert ImagePool(size=0).query(torch.ones(2, 1, 2, 2)).shape == (2, 1, 2, 2)


@pytest.mark.filterwarnings("ignore:bf16. this CPU has no bfloat16 units")
def test_bf16_autocast_runs(dataroot: Path, tmp_path: Path) -> None:
    result = train(tiny_config(dataroot, max_steps=1, bf16=True), tmp_path / "bf16",
                   progress=False)
    assert all(v == v for v in result.last_losses.values())  # no NaN


@pytest.mark.parametrize("units", [False, True])
def test_bf16_on_a_cpu_without_bf16_units_warns(dataroot: Path, tmp_path: Path, units: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    import training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_bf16_units", lambda: units)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_module.Trainer(tiny_config(dataroot, bf16=True, device="cpu"), tmp_path / "r",
                               progress=False)
    said = [str(w.message) for w in caught if "bfloat16 units" in str(w.message)]
    assert len(said) == (0 if units else 1)


@pytest.mark.parametrize(("name", "layers"), [("basic", 3), ("n_layers", 2), ("pixel", 3)])
def test_discriminator_min_size_is_the_smallest_side_that_trains(name: str, layers: int) -> None:
    from training.networks import build_discriminator, discriminator_min_size

    net = build_discriminator(name, 3, 4, layers).train()
    smallest = discriminator_min_size(name, layers)
    net(torch.randn(1, 3, smallest, smallest))
    with pytest.raises((RuntimeError, ValueError)):
        net(torch.randn(1, 3, smallest - 1, smallest - 1))


@pytest.mark.parametrize("preprocess", ["none", "scale_width"])
def test_images_smaller_than_the_networks_train_in_uncropped_modes(tmp_path: Path,
                                                                   preprocess: str) -> None:
    """--preprocess none / scale_width keep an image's size: an 8x8 or a 1x200 image is scaled
    up to what the discriminator takes instead of failing deep inside it."""
    root = tmp_path / "data"
    rng = np.random.default_rng(3)
    for domain, sizes in (("trainA", [(8, 8), (1, 200)]), ("trainB", [(48, 40)])):
        (root / domain).mkdir(parents=True)
        for index, (height, width) in enumerate(sizes):
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / domain / f"{index}.png")
    result = CliRunner().invoke(train_cli, [
        str(root), "-o", str(tmp_path / "run"), "--generator", "resnet_6blocks", "--ngf", "4",
        "--ndf", "4", "--preprocess", preprocess, "--load-size", "32", "--crop-size", "32",
        "--workers", "0", "--max-steps", "2", "--sample-every", "0", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 2


# ---- the command line ------------------------------------------------------------------

def test_cli_trains_with_config_file_and_overrides(dataroot: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("generator: unet_128\nngf: 4\nndf: 4\nload_size: 36\ncrop_size: 32\n"
                           "num_workers: 0\nsample_every: 0\nnum_samples: 1\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".cyclegan-train.json").write_text('{"format": "cyclegan-toolkit/run", "run_id": "x"}')
    # a requeued job's command (--resume) whose first try stopped before any checkpoint: the
    # run starts, and says so
    result = CliRunner().invoke(train_cli, [
        str(dataroot), "--out", str(run), "--config", str(config_file), "--generator",
        "resnet_6blocks", "--crop-size", "32", "--max-steps", "2", "--no-progress", "--resume"])
    assert result.exit_code == 0, result.output
    assert f"note: --resume: {run} has no checkpoint yet" in result.output
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["config"]["generator"] == "resnet_6blocks" and state["config"]["ngf"] == 4
    assert state["step"] == 2
    assert state["config"]["channels_last"] is False and state["config"]["compile"] is False

    assert "trained to step 2 (" in result.output
    again = CliRunner().invoke(train_cli, [str(dataroot), "--out", str(run), "--resume",
                                           "--max-steps", "3", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "trained to step 3, 1 in this run (" in again.output
    assert "note: resuming on" not in again.output  # the run's own data
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 3

    moved = tmp_path / "moved"
    moved.symlink_to(dataroot)
    elsewhere = CliRunner().invoke(train_cli, [str(moved / ".." / "moved"), "--out", str(run),
                                               "--resume", "--max-steps", "3", "--no-progress"])
    assert elsewhere.exit_code == 0, elsewhere.output  # the same folder by another path: quiet
    assert "note: resuming on" not in elsewhere.output
    other = tmp_path / "other"
    other.mkdir()
    for domain in ("trainA", "trainB"):
        (other / domain).symlink_to(dataroot / domain)
    note = CliRunner().invoke(train_cli, [str(other), "--out", str(run), "--resume",
                                          "--max-steps", "3", "--no-progress"])
    assert note.exit_code == 0, note.output
    assert f"note: resuming on {other}, not the run's {dataroot}" in note.output
    changed = CliRunner().invoke(train_cli, [str(dataroot), "--out", str(run), "--resume",
                                             "--ngf", "16"])
    assert changed.exit_code == 2 and "cannot change ngf when resuming" in changed.output

    # the same command again with --resume (a requeued job): the file repeats the run's own
    requeued = CliRunner().invoke(train_cli, [
        str(dataroot), "--out", str(run), "--config", str(config_file), "--generator",
        "resnet_6blocks", "--crop-size", "32", "--max-steps", "4", "--no-progress", "--resume"])
    assert requeued.exit_code == 0, requeued.output
    assert "trained to step 4, 1 in this run (" in requeued.output
    # resumed where it already ends: says so and rewrites nothing (not even --max-steps 3)
    before = {p: p.read_bytes() for p in (run / "checkpoints" / "latest.pt", run / "config.yaml")}
    done = CliRunner().invoke(train_cli, [str(dataroot), "--out", str(run), "--resume",
                                          "--max-steps", "3", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "already at step 4 (" in done.output and "nothing to train, nothing rewritten" in \
        done.output
    assert all(path.read_bytes() == data for path, data in before.items())
    config_file.write_text(config_file.read_text().replace("ngf: 4", "ngf: 8"))
    refused = CliRunner().invoke(train_cli, [
        str(dataroot), "--out", str(run), "--config", str(config_file), "--generator",
        "resnet_6blocks", "--max-steps", "5", "--resume"])
    assert refused.exit_code == 2 and "cannot change ngf when resuming" in refused.output


def test_config_file_numbers_names_and_ranges(tmp_path: Path) -> None:
    from training.cli import build_config
    from training.config import ConfigError, load_config_file

    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("lr: 2e-4\nn_epochs: 1e2\n")  # YAML 1.1 reads these as text
    assert load_config_file(config_file) == {"lr": 2e-4, "n_epochs": 100}
    config_file.write_text("epochs: 3\nlamda_a: 5\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: unknown option\(s\): epochs \(did you "
                       r"mean n_epochs\?\), lamda_a \(did you mean lambda_a\?\)"):
        load_config_file(config_file)
    config_file.write_text("lr: .inf\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: lr: must be a positive number"):
        build_config(tmp_path, config_file, {}, None)
    with pytest.raises(ConfigError, match=r"^lr: must be a positive number"):  # the flag's
        build_config(tmp_path, config_file, {"lr": -1.0}, None)
    config_file.write_text("ngf: 8\nlr: 2.0e-4\nngf: 16\n")  # PyYAML would keep 16 silently
    with pytest.raises(ConfigError, match=r"cfg\.yaml: not valid yaml: 'ngf' is given twice "
                       r"\(line 3\)"):
        load_config_file(config_file)
    as_json = tmp_path / "cfg.json"
    as_json.write_text('{"ngf": 8, "ngf": 16}')
    with pytest.raises(ConfigError, match=r"cfg\.json: not valid json: 'ngf' is given twice"):
        load_config_file(as_json)
    config_file.write_text("ngf: !!python/object/apply:os.system ['echo no']\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: not valid yaml"):  # data, never code
        load_config_file(config_file)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--generator", "resnet_12"], "generator: 'resnet_12' is not one of"),
        (["--crop-size", "300"], "crop_size 300 is larger than load_size 286"),
        (["--resume"], "latest.pt: no such file"),
        (["--config", "missing.yaml"], "missing.yaml: cannot read"),
        (["--channels-last", "--device", "cpu"], "channels_last: CUDA only"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(dataroot: Path, tmp_path: Path, args: list[str],
                                              message: str) -> None:
    result = CliRunner().invoke(train_cli, [str(dataroot), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_cli_missing_dataroot(tmp_path: Path) -> None:
    result = CliRunner().invoke(train_cli, [str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "nope: no such data folder" in result.output
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    result = CliRunner().invoke(train_cli, [str(tmp_path / "photo.jpg"), "--out",
                                            str(tmp_path / "r")])
    assert result.exit_code == 2 and "photo.jpg: is a file; give the data folder" in \
        result.output


def test_config_file_unknown_option_is_named(tmp_path: Path) -> None:
    from training.config import load_config_file

    with pytest.raises(ValueError, match="unknown option"):
        from_dict({"learning_rate": 1})
    for text, message in (("learning_rate: 1\n", "unknown option(s): learning_rate"),
                          ("lr: fast\n", "lr: expected float, got str 'fast'")):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ValueError) as info:
            load_config_file(path)
        assert str(info.value) == f"{path}: {message}"  # the file is named


def test_run_limited_only_by_max_steps_trains_at_full_rate(dataroot: Path) -> None:
    from training.model import CycleGANNetworks

    config = tiny_config(dataroot, n_epochs=0, n_epochs_decay=0, max_steps=3)
    nets = CycleGANNetworks.build(config, torch.device("cpu"))
    assert CycleGANStep(config, nets, nets, torch.device("cpu"), pool_seed=0).lr == 2e-4


def test_existing_run_folder_is_not_overwritten_without_resume(dataroot: Path,
                                                               tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(dataroot, max_steps=1), run, progress=False)
    result = CliRunner().invoke(train_cli, [str(dataroot), "--out", str(run)])
    assert result.exit_code == 2 and "already holds a run" in result.output


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"crop_size": 30}, "multiple of 4"), ({"generator": "unet_128", "crop_size": 32},
                                            "multiple of 128"),
     ({"crop_size": 30, "preprocess": "none"}, r"crop_size 30 \(the sample grids' crops\) "
                                               "does not fit resnet_6blocks"),
     ({"num_samples": 0}, "num_samples"), ({"device": "gpu"}, "not a device"),
     ({"discriminator": "n_layers", "n_layers_d": 5}, r"too small for the n_layers discrim.*"
                                                      "at least 96"),
     ({"beta1": 2.0}, r"beta1: must be in \[0, 1\), got 2.0"),
     ({"lr": float("nan")}, "lr: must be a positive number, got nan"),
     ({"init_gain": float("inf")}, "init_gain: must be a positive number"),
     ({"lambda_a": -5.0}, "lambda_a: must be a number >= 0, got -5.0"),
     ({"input_nc": 1, "output_nc": 1}, r"input_nc: only 3 \(RGB\) is trained here")],
)
def test_configs_that_would_fail_mid_run_are_refused_up_front(dataroot: Path, changes: dict,
                                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config(dataroot, **changes)


def test_loader_workers_are_capped_at_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from training import data

    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [data.loader_workers(n) for n in (0, 1, 2, 4)] == [0, 1, 2, 2]
