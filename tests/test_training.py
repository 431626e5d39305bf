from __future__ import annotations

import json
from pathlib import Path

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


def test_resume_continues_exactly(dataroot: Path, tmp_path: Path) -> None:
    # dropout exercises the torch RNG, a small pool its own RNG, 7 steps cross an epoch (5 A's)
    # and therefore a learning-rate change.
    config = tiny_config(dataroot, dropout=True)
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
    config = tiny_config(dataroot, max_steps=2)
    in_process = train(config, tmp_path / "w0", progress=False)
    with_workers = train(config.replace(num_workers=2), tmp_path / "w2", progress=False)
    wa = _weights(load_checkpoint(in_process.checkpoint))
    wb = _weights(load_checkpoint(with_workers.checkpoint))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


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


def test_bf16_autocast_runs(dataroot: Path, tmp_path: Path) -> None:
    result = train(tiny_config(dataroot, max_steps=1, bf16=True), tmp_path / "bf16",
                   progress=False)
    assert all(v == v for v in result.last_losses.values())  # no NaN


# ---- the command line ------------------------------------------------------------------

def test_cli_trains_with_config_file_and_overrides(dataroot: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("generator: unet_128\nngf: 4\nndf: 4\nload_size: 36\ncrop_size: 32\n"
                           "num_workers: 0\nsample_every: 0\nnum_samples: 1\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(train_cli, [
        str(dataroot), "--out", str(run), "--config", str(config_file), "--generator",
        "resnet_6blocks", "--crop-size", "32", "--max-steps", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["config"]["generator"] == "resnet_6blocks" and state["config"]["ngf"] == 4
    assert state["step"] == 2

    again = CliRunner().invoke(train_cli, [str(dataroot), "--out", str(run), "--resume",
                                           "--max-steps", "3", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 3

    changed = CliRunner().invoke(train_cli, [str(dataroot), "--out", str(run), "--resume",
                                             "--ngf", "16"])
    assert changed.exit_code == 2 and "cannot change ngf when resuming" in changed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--generator", "resnet_12"], "generator: 'resnet_12' is not one of"),
        (["--crop-size", "300"], "crop_size 300 is larger than load_size 286"),
        (["--resume"], "latest.pt: no such file"),
        (["--config", "missing.yaml"], "missing.yaml: cannot read"),
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


def test_config_file_unknown_option_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        from_dict({"learning_rate": 1})


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
     ({"num_samples": 0}, "num_samples"), ({"device": "gpu"}, "not a device")],
)
def test_configs_that_would_fail_mid_run_are_refused_up_front(dataroot: Path, changes: dict,
                                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config(dataroot, **changes)
