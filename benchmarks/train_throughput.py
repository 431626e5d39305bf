"""How fast ``cyclegan-train`` trains end to end, next to its pure-step ceiling, in one command.

    python benchmarks/train_throughput.py                  # profile for this device (see below)
    python benchmarks/train_throughput.py --compare bf16,channels_last   # + ceiling per option

Two figures, on a realistic data set it writes itself (``--images`` natural-looking JPEGs per
domain, 200 by default, from :func:`runtime.synthetic.natural_images`):

- **end to end**: steps/s of the real :class:`training.trainer.Trainer` loop: its DataLoader
  (decode, resize, random crop, flip in worker processes), the copy to the device, the step,
  the progress and loss-log bookkeeping. Sample grids and checkpoints are off
  (``sample_every``/``checkpoint_every`` 0): they are periodic costs, not the step's.
- **ceiling**: steps/s of the same :class:`training.model.CycleGANStep` (the trainer's own) on
  one fixed batch already on the device: no loader, no copies, no bookkeeping.

The two kinds of rounds alternate (ceiling, end to end, ceiling, end to end, ...), and each
end-to-end round is paired with the ceiling round just before it, so a machine that gets busier
or quieter during the run moves both figures of a pair alike; the headline is the median of the
per-pair ratios, with their spread. The rounds are cut out of ONE ``Trainer.run()``: the
benchmark wraps the trainer's ``step_fn.step`` (which the loop calls once per step), and at the
end of every ``--steps``-th call it closes the end-to-end round and runs a ceiling round on the
side. The loader's workers are not paused meanwhile: they fill their prefetch queue (at most
``2 x workers`` batches) and then wait, so they take no CPU from the ceiling round.

Profiles (``--profile``, default by device): ``cpu``: the demo recipe's small model
(``resnet_6blocks`` ngf 16, 1x1 ``pixel`` discriminator ndf 32, 143x143 JPEGs cropped to 128,
one loader worker); ``cuda``: the paper's (``resnet_9blocks`` ngf 64, 70x70 PatchGAN, 256x256
JPEGs resized to 286 and cropped to 256, four loader workers). Batch 1 in both.

Writes ``benchmarks/results/train_throughput_<machine-tag>.json`` (the tag as in
``run_all.py``: CPU model, usable cores, first GPU); each ``--label`` is kept as its own entry,
so a "before" and an "after" run of the same machine sit side by side in one file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

try:
    import training  # installed with pip install -e .
except ImportError:  # run from a checkout without the editable install
    sys.path.insert(0, str(HERE.parent))
    import training

from runtime.cpu import usable_cores  # noqa: E402 - os only: safe before OMP_NUM_THREADS


def _threads_from_argv(argv: list[str]) -> int:
    """``--threads N`` (or all usable cores), read before torch is imported: OpenMP sizes its
    pool from OMP_NUM_THREADS when it loads."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return usable_cores()


THREADS = _threads_from_argv(sys.argv[1:])
os.environ["OMP_NUM_THREADS"] = str(THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.config import TrainConfig, from_dict  # noqa: E402
from training.trainer import Trainer  # noqa: E402


@dataclass(frozen=True)
class Profile:
    image_size: int     # side of the JPEGs written
    config: dict[str, Any]
    steps: int          # steps per round
    warmup: int         # untimed steps before the first round (each kind)


PROFILES = {
    "cpu": Profile(image_size=143, steps=20, warmup=5, config=dict(
        generator="resnet_6blocks", ngf=16, ndf=32, discriminator="pixel", load_size=143,
        crop_size=128, num_workers=1)),
    "cuda": Profile(image_size=256, steps=60, warmup=20, config=dict(
        generator="resnet_9blocks", ngf=64, ndf=64, discriminator="basic", load_size=286,
        crop_size=256, num_workers=4)),
}


def write_dataset(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``root/trainA`` and ``root/trainB`` with ``count`` ``size`` x ``size`` JPEGs each."""
    from PIL import Image

    from runtime.synthetic import natural_images

    for index, domain in enumerate(("trainA", "trainB")):
        folder = root / domain
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(natural_images(count, size, size, seed=seed + index)):
            Image.fromarray(image).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: the end of a timed round must include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AlternatingRounds:
    """Stands in for ``trainer.step_fn.step``: passes every call through and, between the
    trainer's timed rounds, runs a ceiling round beside them.

    After each ceiling round the trainer first takes ``lead_in`` untimed steps: while the ceiling
    ran, the loader's workers filled their prefetch queue, a head start the trainer never gets
    in a real run; the lead-in spends it, so every timed round starts from the steady state.
    """

    def __init__(self, trainer: Trainer, fixed: tuple[torch.Tensor, torch.Tensor], steps: int,
                 warmup: int, rounds: int, lead_in: int) -> None:
        self.step: Callable[..., Any] = trainer.step_fn.step  # the bound method, unwrapped
        self.device = trainer.ctx.device
        self.fixed, self.steps, self.warmup, self.rounds = fixed, steps, warmup, rounds
        self.lead_in = lead_in
        self.calls = 0
        self.next_event = warmup  # the call count at which something happens next
        self.timing_since: float | None = None
        self.e2e: list[float] = []
        self.ceiling: list[float] = []

    def __call__(self, real_a: torch.Tensor, real_b: torch.Tensor) -> Any:
        losses = self.step(real_a, real_b)
        self.calls += 1
        if self.calls != self.next_event or len(self.e2e) == self.rounds:
            return losses
        synchronize(self.device)
        if self.timing_since is not None:  # a timed end-to-end round ends here
            self.e2e.append(self.steps / (time.perf_counter() - self.timing_since))
            self.timing_since = None
            if len(self.e2e) == self.rounds:
                return losses
        if len(self.ceiling) == len(self.e2e):  # the next round's ceiling partner runs first
            if not self.ceiling:  # the first time: warm the fixed-batch path up as well
                self._ceiling_round(self.warmup)
            self.ceiling.append(self._ceiling_round(self.steps))
            self.next_event = self.calls + self.lead_in
            if self.lead_in:
                return losses
        self.timing_since = time.perf_counter()  # the trainer's next fetch counts
        self.next_event = self.calls + self.steps
        return losses

    def _ceiling_round(self, steps: int) -> float:
        real_a, real_b = self.fixed
        synchronize(self.device)
        started = time.perf_counter()
        for _ in range(steps):
            self.step(real_a, real_b)
        synchronize(self.device)
        return steps / (time.perf_counter() - started)


def lead_in_steps(workers: int) -> int:
    """Steps ``workers`` loader processes can have ready before a round starts (prefetch_factor
    2 each; the pin-memory thread one more): run untimed after each ceiling round."""
    return 2 * workers + (1 if workers else 0)


def measure(config: TrainConfig, run_dir: Path, steps: int, warmup: int,
            rounds: int) -> dict[str, Any]:
    """End-to-end and ceiling rounds of one Trainer, alternated; steps/s per round."""
    lead_in = lead_in_steps(config.num_workers)
    total = warmup + rounds * (lead_in + steps)
    trainer = Trainer(config.replace(max_steps=total), run_dir, progress=False)
    keys = trainer.sampler.keys()
    sample = trainer.dataset[keys[0]]
    batch = config.batch_size
    fixed = tuple(sample[d].unsqueeze(0).repeat(batch, 1, 1, 1).to(trainer.ctx.device)
                  for d in ("A", "B"))
    rounds_fn = AlternatingRounds(trainer, (fixed[0], fixed[1]), steps, warmup, rounds, lead_in)
    trainer.step_fn.step = rounds_fn  # type: ignore[method-assign]
    started = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - started
    if len(rounds_fn.e2e) != rounds:
        raise RuntimeError(f"the trainer stopped after {trainer.pos.step} of {total} steps")
    pairs = [e / c for e, c in zip(rounds_fn.e2e, rounds_fn.ceiling, strict=True)]
    return {
        "end_to_end_steps_per_s": [round(v, 4) for v in rounds_fn.e2e],
        "ceiling_steps_per_s": [round(v, 4) for v in rounds_fn.ceiling],
        "pair_ratios": [round(v, 4) for v in pairs],
        "end_to_end_median": round(statistics.median(rounds_fn.e2e), 4),
        "ceiling_median": round(statistics.median(rounds_fn.ceiling), 4),
        "ratio_median": round(statistics.median(pairs), 4),
        "ratio_min": round(min(pairs), 4),
        "ratio_max": round(max(pairs), 4),
        "lead_in_steps": lead_in,
        "wall_s": round(wall, 1),
    }


def ceiling_of(config: TrainConfig, device: torch.device, fixed: tuple[torch.Tensor, ...],
               steps: int, warmup: int) -> Callable[[], float]:
    """A function that times ``steps`` steps of a fresh CycleGANStep built from ``config``."""
    from training.model import CycleGANNetworks, CycleGANStep

    torch.manual_seed(config.seed)
    nets = CycleGANNetworks.build(config, device)
    step = CycleGANStep(config, nets, nets, device, pool_seed=0)
    for net in (nets.g_ab, nets.g_ba, nets.d_a, nets.d_b):
        net.train()
    for _ in range(warmup):
        step.step(fixed[0], fixed[1])

    def run() -> float:
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            step.step(fixed[0], fixed[1])
        synchronize(device)
        return steps / (time.perf_counter() - started)

    return run


def compare_options(config: TrainConfig, device: torch.device, options: list[str], steps: int,
                    warmup: int, rounds: int) -> dict[str, Any]:
    """The ceiling with each speed option turned on alone, rounds alternated with the baseline;
    per option the median of its per-round ratio to the baseline."""
    from training.data import to_model_range

    side = config.crop_size
    images = torch.from_numpy(_natural(2, side)).permute(0, 3, 1, 2)
    fixed = tuple(to_model_range(images[i:i + 1]).repeat(config.batch_size, 1, 1, 1).to(device)
                  for i in range(2))
    from training.config import ConfigError

    runners = {"baseline": ceiling_of(config, device, fixed, steps, warmup)}
    refused: dict[str, str] = {}
    for option in options:
        try:
            runners[option] = ceiling_of(config.replace(**{option: True}), device, fixed, steps,
                                         warmup)
        except ConfigError as exc:  # e.g. channels_last off CUDA
            refused[option] = str(exc)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            rates[name].append(run())
    out: dict[str, Any] = {}
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates["baseline"], strict=True)]
        out[name] = {"steps_per_s": [round(v, 4) for v in values],
                     "median": round(statistics.median(values), 4),
                     "vs_baseline_median": round(statistics.median(ratios), 4)}
    out.update({name: {"refused": why} for name, why in refused.items()})
    return out


def _natural(count: int, side: int) -> np.ndarray:
    from runtime.synthetic import natural_images

    return natural_images(count, side, side, seed=7)


def machine_tag(device: torch.device) -> tuple[str, dict[str, Any]]:
    """The result file's machine tag (as ``run_all.py`` names its files) and a description."""
    from dataclasses import asdict, replace

    from runtime.bench.machine import machine_info

    info = machine_info(gemm_size=0)
    cuda_device = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    if cuda_device and not info.gpus:  # no nvidia-smi on the path: the GPU named by torch
        info = replace(info, gpus=[cuda_device])
    described = asdict(info)
    if cuda_device:
        described["cuda_device"] = cuda_device
    return info.tag, described


def save_atomic(data: dict[str, Any], path: Path) -> None:
    from runtime.media.sinks import write_bytes_atomic

    # write_bytes_atomic's temp file makes the folder
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--profile", choices=sorted(PROFILES),
                        help="model and data sizes (default: cuda on a GPU, else cpu)")
    parser.add_argument("--images", type=int, default=200, help="JPEGs per domain (200)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each kind (6)")
    parser.add_argument("--steps", type=int, help="steps per round (profile's)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (profile's)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch threads in the main process (default: usable cores); "
                             "also exported as OMP_NUM_THREADS")
    parser.add_argument("--workers", type=int, help="DataLoader workers (profile's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other TrainConfig value (YAML syntax), e.g. --set bf16=true")
    parser.add_argument("--compare", default="",
                        help="comma-separated boolean options whose ceiling to measure against "
                             "the baseline, e.g. bf16,channels_last,compile")
    parser.add_argument("--data", type=Path, help="use (and keep) this data folder; written "
                        "there when it has no trainA/")
    parser.add_argument("--label", default="run", help="name of this entry in the result file")
    parser.add_argument("--out", type=Path, help="result file (default: benchmarks/results/"
                        "train_throughput_<machine-tag>.json)")
    args = parser.parse_args(argv)

    import yaml

    from training.distributed import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    profile = PROFILES[args.profile or ("cuda" if device.type == "cuda" else "cpu")]
    steps = args.steps or profile.steps
    warmup = max(1, args.warmup if args.warmup is not None else profile.warmup)
    values: dict[str, Any] = {**profile.config, "device": str(device), "sample_every": 0,
                              "checkpoint_every": 0, "n_epochs": 100, "n_epochs_decay": 100}
    if args.workers is not None:
        values["num_workers"] = args.workers
    for item in args.set:
        key, _, text = item.partition("=")
        values[key] = yaml.safe_load(text)

    with tempfile.TemporaryDirectory(prefix="train-throughput-") as scratch:
        data = args.data or Path(scratch) / "data"
        if not (data / "trainA").is_dir():
            print(f"writing {args.images} {profile.image_size}x{profile.image_size} JPEGs per "
                  f"domain to {data}", flush=True)
            write_dataset(data, args.images, profile.image_size)
        config = from_dict({**values, "dataroot": str(data)})
        load = os.getloadavg()
        print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads "
              f"(OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}), {config.num_workers} loader "
              f"worker(s); load average {load[0]:.2f}; training from "
              f"{Path(training.__file__).parent}", flush=True)
        print(f"{args.rounds} rounds of {steps} steps each kind, {warmup} warm-up steps: "
              f"{config.generator} ngf {config.ngf}, {config.discriminator} ndf {config.ndf}, "
              f"crop {config.crop_size}", flush=True)
        result = measure(config, Path(scratch) / "run", steps, warmup, args.rounds)
        options = [o for o in args.compare.split(",") if o]
        if options:
            result["compare"] = compare_options(config, device, options, steps, warmup,
                                                args.rounds)
    result["load_average_before_after"] = [round(load[0], 2), round(os.getloadavg()[0], 2)]

    tag, machine = machine_tag(device)
    path = args.out or RESULTS / f"train_throughput_{tag}.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    entry = {
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "images_per_domain": args.images,
        "image_size": profile.image_size,
        "rounds": args.rounds, "steps_per_round": steps, "warmup_steps": warmup,
        "config": {k: v for k, v in config.to_dict().items() if k != "dataroot"},
        **result,
    }
    runs = {**previous.get("runs", {}), args.label: entry}
    save_atomic({"machine_tag": tag, "machine": machine, "runs": runs}, path)

    print(f"end to end   {result['end_to_end_median']:.3f} steps/s  "
          f"(rounds: {', '.join(f'{v:.3f}' for v in result['end_to_end_steps_per_s'])})")
    print(f"ceiling      {result['ceiling_median']:.3f} steps/s  "
          f"(rounds: {', '.join(f'{v:.3f}' for v in result['ceiling_steps_per_s'])})")
    print(f"end to end / ceiling: median {result['ratio_median']:.1%} over {args.rounds} pairs "
          f"(min {result['ratio_min']:.1%}, max {result['ratio_max']:.1%})")
    for name, row in result.get("compare", {}).items():
        if "refused" in row:
            print(f"ceiling {name:<14} not measured: {row['refused']}")
            continue
        print(f"ceiling {name:<14} {row['median']:.3f} steps/s, "
              f"{row['vs_baseline_median']:.2f}x baseline (median of per-round ratios)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
