"""The training loop: data, steps, logs, sample grids and checkpoints in a run folder.

Run folder layout::

    RUN_DIR/config.yaml               the resolved configuration
    RUN_DIR/loss_log.jsonl            one JSON record per ``log_every`` steps
    RUN_DIR/samples/step_XXXXXXX.png  sample grids
    RUN_DIR/checkpoints/latest.pt     newest checkpoint (always complete: atomic writes)
    RUN_DIR/checkpoints/step_XXXXXXX.pt  periodic history
    RUN_DIR/.cyclegan-train.json      marks the run folder, names the run (training/run_dir.py)
    RUN_DIR/.cyclegan-train.lock      locked while a trainer uses the folder

Under ``torchrun`` every process trains on its shard; only rank 0 locks the folder and writes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from training import __version__
from training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    atomic_torch_save,
    checkpoint_step,
)
from training.config import TrainConfig, save_config
from training.data import (
    Preprocess,
    UnpairedDataset,
    UnpairedSampler,
    batches_into_epoch,
    loader_workers,
)
from training.distributed import DistContext, barrier, gather_objects, init_distributed, shutdown
from training.graceful_stop import GracefulStop, ignore_interrupts_in_worker
from training.loss_log import append_record
from training.model import CycleGANNetworks, CycleGANStep, losses_to_floats
from training.networks import discriminator_min_size
from training.run_dir import RunFolder, rewind_to
from training.samples import load_fixed_views, sample_grid, save_png_atomic


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    checkpoint: Path | None
    last_losses: dict[str, float] = field(default_factory=dict)
    stopped_by: str = ""  # "SIGINT" / "SIGTERM": stopped early, the checkpoint saved first


# Seconds between progress-bar loss readouts: each one waits for the device (see run()).
POSTFIX_INTERVAL_S = 1.0


@dataclass
class _Position:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def _wrap_ddp(nets: CycleGANNetworks, ctx: DistContext) -> CycleGANNetworks:
    if not ctx.enabled:
        return nets
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None

    def wrap(net: torch.nn.Module) -> torch.nn.Module:
        return DistributedDataParallel(net, device_ids=device_ids)

    return CycleGANNetworks(wrap(nets.g_ab), wrap(nets.g_ba), wrap(nets.d_a), wrap(nets.d_b),
                            nets.spec_ab, nets.spec_ba)


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX), where bf16
    autocast can pay; elsewhere PyTorch emulates it, far slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: look first
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


class Trainer:
    """Owns one training run; ``run()`` trains until the schedule or ``max_steps`` ends."""

    def __init__(self, config: TrainConfig, run_dir: str | Path,
                 resume_from: dict[str, Any] | None = None, progress: bool = True,
                 ctx: DistContext | None = None, run_id: str | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_id = run_id  # goes into every checkpoint: see training/run_dir.py
        self.ctx = ctx or init_distributed(config.device)
        self.progress = progress and self.ctx.is_main
        torch.manual_seed(config.seed)  # network init; data randomness has its own generators
        # Denormal floats (tiny activations and gradients early in GAN training) make x86 CPUs
        # fall back to microcode: measured 20-50x slower steps here. Flushing them to zero
        # changes no result we can measure and only affects CPUs (a no-op elsewhere).
        torch.set_flush_denormal(True)
        if self.ctx.device.type == "cuda" and "crop" in config.preprocess:
            # Every batch has the crop's size: let cuDNN time its convolution algorithms once
            # for it and keep the fastest (a size-changing mode would re-time every new size).
            torch.backends.cudnn.benchmark = True
        if config.bf16 and self.ctx.device.type == "cpu" and not cpu_has_bf16_units():
            warnings.warn("bf16: this CPU has no bfloat16 units (AVX-512 BF16 or AMX); autocast "
                          "made the training step about 15x slower than float32 on such a CPU "
                          "(benchmarks/train_throughput.py --compare bf16)", stacklevel=2)
        self.nets = CycleGANNetworks.build(config, self.ctx.device)
        # Same init on every rank (DDP also broadcasts rank 0's weights), then a per-rank
        # stream for dropout, so ranks do not drop the same units.
        torch.manual_seed(config.seed * 1000 + self.ctx.rank + 1)
        pool_seed = config.seed * 7919 + 2 * self.ctx.rank  # each rank its own pool choices
        self.step_fn = CycleGANStep(config, self.nets, _wrap_ddp(self.nets, self.ctx),
                                    self.ctx.device, pool_seed=pool_seed)
        self.pos = _Position()
        spec = self.nets.spec_ab
        # Modes that keep an image's own size (none, scale_width) scale a small one up to what
        # both networks take: the discriminator needs more than the generator.
        min_side = max(spec.min_size, discriminator_min_size(config.discriminator,
                                                             config.n_layers_d))
        self.dataset = UnpairedDataset(
            config.dataroot,
            Preprocess(config.preprocess, config.load_size, config.crop_size, not config.no_flip,
                       spec.size_multiple, min_side),
            config.max_dataset_size,
        )
        self.sampler = UnpairedSampler(len(self.dataset.files_a), len(self.dataset.files_b),
                                       seed=config.seed, rank=self.ctx.rank,
                                       world_size=self.ctx.world_size)
        if resume_from is not None:
            self._restore(resume_from)

    # ---- schedule ------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.sampler.samples_per_epoch / self.config.batch_size)

    @property
    def total_epochs(self) -> int:
        return self.config.n_epochs + self.config.n_epochs_decay

    @property
    def total_steps(self) -> int:
        """Where this run will stop, counted in steps from the current position.

        The schedule is defined in epochs (the learning rate follows epochs), so a resumed run
        with a different process count or data set still ends after ``total_epochs``.
        """
        if not self.total_epochs:
            return self.config.max_steps
        remaining = ((self.total_epochs - self.pos.epoch) * self.steps_per_epoch
                     - self.pos.batch_in_epoch)
        planned = self.pos.step + max(0, remaining)
        return min(planned, self.config.max_steps) if self.config.max_steps else planned

    def _finished(self) -> bool:
        if self.config.max_steps and self.pos.step >= self.config.max_steps:
            return True
        if not self.total_epochs:
            return False
        last = self.total_epochs - 1
        return self.pos.epoch > last or (self.pos.epoch == last
                                         and self.pos.batch_in_epoch >= self.steps_per_epoch)

    # ---- main loop -----------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.config
        latest = self.run_dir / "checkpoints" / "latest.pt"
        if self.pos.step and self._finished() and latest.is_file():
            # Resumed at its end already (--max-steps at or below the checkpoint's step, or
            # every epoch done): nothing to train, so nothing of the run is rewritten.
            return TrainResult(self.run_dir, self.pos.step, self.pos.epoch,
                               latest if self.ctx.is_main else None)
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            # resume: nothing of later steps stays (latest.pt at a later step included)
            rewind_to(self.run_dir, self.pos.step,
                      checkpoint_step(self.run_dir / "checkpoints" / "latest.pt"))
            fixed_a = load_fixed_views(self.dataset.files_a, cfg.num_samples, cfg.crop_size)
            fixed_b = load_fixed_views(self.dataset.files_b, cfg.num_samples, cfg.crop_size)
        bar = tqdm(total=self.total_steps, initial=self.pos.step, unit="step",
                   disable=not self.progress, dynamic_ncols=True, smoothing=0.1)
        # The newest step's losses, still on the device. Reading them waits for the device to
        # finish that step, so they are read only for a log record or a progress readout (at
        # most once per POSTFIX_INTERVAL_S), never per step: the device can then run ahead of
        # Python by a step or more, while the loader prepares the next batches.
        losses: dict[str, torch.Tensor] = {}
        checkpoint: Path | None = None
        saved_at = -1
        started, steps_at_start = time.perf_counter(), self.pos.step
        next_postfix = started
        for net in (self.nets.g_ab, self.nets.g_ba, self.nets.d_a, self.nets.d_b):
            net.train()
        # One loader for the whole run: with worker processes they stay alive across epochs
        # (persistent_workers) instead of being started again for every epoch.
        loader = self._loader()
        # The first Ctrl-C/SIGTERM ends the run after the step in flight, saved (one process).
        stop = GracefulStop(enabled=self.ctx.world_size == 1,
                            progress_bar=self.progress).start()
        try:
            while not self._finished() and not stop.requested:
                # The sampler runs in this process: each epoch's iterator asks it for the keys
                # of (epoch, start), whether or not the workers persist.
                self.sampler.set_epoch(self.pos.epoch, self.pos.batch_in_epoch * cfg.batch_size)
                for batch in loader:
                    real_a = batch["A"].to(self.ctx.device, non_blocking=True)
                    real_b = batch["B"].to(self.ctx.device, non_blocking=True)
                    losses = self.step_fn.step(real_a, real_b)
                    self.pos.step += 1
                    self.pos.batch_in_epoch += 1
                    bar.update(1)
                    log_due = bool(self.ctx.is_main and cfg.log_every
                                   and self.pos.step % cfg.log_every == 0)
                    postfix_due = self.progress and time.perf_counter() >= next_postfix
                    if log_due or postfix_due:
                        values = losses_to_floats(losses)
                        if postfix_due:
                            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()},
                                            refresh=False)
                            next_postfix = time.perf_counter() + POSTFIX_INTERVAL_S
                        if log_due:
                            now = time.perf_counter()
                            self._log(values, (self.pos.step - steps_at_start) / (now - started))
                    if (self.ctx.is_main and cfg.sample_every
                            and self.pos.step % cfg.sample_every == 0):
                        self._write_samples(fixed_a, fixed_b)
                    if cfg.checkpoint_every and self.pos.step % cfg.checkpoint_every == 0:
                        checkpoint = self._save(history=True)
                        saved_at = self.pos.step
                    if self._finished() or stop.requested:
                        break
                if self.pos.batch_in_epoch >= self.steps_per_epoch:
                    self.pos.epoch += 1
                    self.pos.batch_in_epoch = 0
                    self.step_fn.end_epoch()
            # a signal during the last step stops nothing: the run is complete
            stopped_by = stop.signal_name if not self._finished() else ""
            if self.ctx.is_main and not stopped_by:
                self._write_samples(fixed_a, fixed_b)
            if saved_at != self.pos.step:
                checkpoint = self._save(history=False)
        finally:
            stop.restore()
            bar.close()
            del loader  # its worker processes end here, not whenever it is collected
        barrier(self.ctx)
        return TrainResult(self.run_dir, self.pos.step, self.pos.epoch,
                           checkpoint if self.ctx.is_main else None, losses_to_floats(losses),
                           stopped_by=stopped_by)

    def _loader(self) -> DataLoader:
        """The run's DataLoader; iterate it once per epoch, after ``sampler.set_epoch``."""
        cfg = self.config
        workers = loader_workers(cfg.num_workers)
        return DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler,
            num_workers=workers,
            # Page-locked batches copy to the GPU asynchronously (the non_blocking copies in
            # run()), overlapping the previous step.
            pin_memory=self.ctx.device.type == "cuda",
            # Its own generator: creating an iterator must not consume the global torch RNG,
            # or a resumed run's dropout masks would drift from an uninterrupted run's.
            generator=torch.Generator().manual_seed(cfg.seed),
            persistent_workers=workers > 0,
            worker_init_fn=ignore_interrupts_in_worker,  # the main process decides the stop
        )

    # ---- outputs -------------------------------------------------------------------------
    def _log(self, losses: dict[str, float], rate: float) -> None:
        append_record(self.run_dir, {
            "step": self.pos.step, "epoch": self.pos.epoch, "lr": self.step_fn.lr,
            "steps_per_s": round(rate, 4), **{k: round(v, 6) for k, v in losses.items()}})

    def _write_samples(self, fixed_a: torch.Tensor, fixed_b: torch.Tensor) -> None:
        grid = sample_grid(self.nets.g_ab, self.nets.g_ba, fixed_a.to(self.ctx.device),
                           fixed_b.to(self.ctx.device))
        save_png_atomic(grid, self.run_dir / "samples" / f"step_{self.pos.step:07d}.png")

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """The checkpoint dict (see :mod:`training.checkpoint`); a collective under torchrun."""
        local = gather_objects(self.ctx, self.step_fn.local_state())
        sums = {round(state["weights_checksum"], 6) for state in local}
        if len(sums) > 1 and self.ctx.is_main:
            warnings.warn(f"replicas disagree at step {self.pos.step} (weight checksums {sums}); "
                          "DistributedDataParallel is out of sync", stacklevel=2)
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "package_version": __version__,
            "run_id": self.run_id,
            "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-safe
            "config": self.config.to_dict(),
            "step": self.pos.step,
            "epoch": self.pos.epoch,
            "batch_in_epoch": self.pos.batch_in_epoch,
            "world_size": self.ctx.world_size,
            **self.step_fn.state_dict(),
            "rank_states": local,
        }

    def _save(self, history: bool) -> Path:
        state = self.checkpoint_state()
        folder = self.run_dir / "checkpoints"
        latest = folder / "latest.pt"
        if self.ctx.is_main:
            atomic_torch_save(state, latest)
            if history:
                atomic_torch_save(state, folder / f"step_{self.pos.step:07d}.pt")
                self._prune_history(folder)
        return latest

    def _prune_history(self, folder: Path) -> None:
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        history = sorted(folder.glob("step_*.pt"),
                         key=lambda p: int(p.stem.split("_")[1]) if p.stem[5:].isdigit() else -1)
        for old in history[:-keep]:
            old.unlink(missing_ok=True)

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.step_fn.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not match this configuration ({exc})") \
                from None
        ranks = state.get("rank_states", [])
        # Another process count: the epoch, and its learning rate, go on where they were.
        batch_in_epoch = batches_into_epoch(int(state.get("batch_in_epoch", 0)),
                                            self.config.batch_size,
                                            int(state.get("world_size", len(ranks) or 1)),
                                            self.ctx.world_size)
        self.pos = _Position(int(state["step"]), int(state["epoch"]), batch_in_epoch)
        if len(ranks) == self.ctx.world_size:
            self.step_fn.load_local_state(ranks[self.ctx.rank])
        elif self.ctx.is_main:  # said once, not by every process
            # A different process count: weights, optimisers and schedule resume exactly; the
            # per-process fake pools and RNG start afresh.
            warnings.warn(f"resuming with {self.ctx.world_size} process(es) from a checkpoint of "
                          f"{len(ranks)}: the epoch goes on from the samples already used, in "
                          "another split across processes; fake-image pools restart empty",
                          stacklevel=2)


def train(config: TrainConfig, run_dir: str | Path | RunFolder,
          resume_from: dict[str, Any] | None = None, progress: bool = True,
          on_start: Callable[[Trainer], None] | None = None,
          resume_path: str | Path | None = None) -> TrainResult:
    """Train CycleGAN as configured; returns where it stopped and the newest checkpoint.

    ``run_dir`` is a folder, or a :class:`RunFolder` the caller opened and claimed (and closes).
    Given a folder, the main process locks and claims it here (:meth:`RunFolder.claim`: a new
    run, or the continuation of ``resume_from``, read from ``resume_path``) and raises
    :class:`~training.run_dir.RunDirError` when the folder cannot be used that way.
    Under ``torchrun`` call this in every process; the process group is joined and left here.
    """
    ctx = init_distributed(config.device)
    opened: RunFolder | None = None
    try:
        folder: RunFolder | None = None
        if isinstance(run_dir, RunFolder):
            folder, path = run_dir, run_dir.path
        else:
            path = Path(run_dir)
            if ctx.is_main:
                folder = opened = RunFolder.open(path)
                opened.claim(resume_from, Path(resume_path) if resume_path is not None else None)
        trainer = Trainer(config, path, resume_from, progress, ctx=ctx,
                          run_id=folder.run_id if folder is not None else None)
        if on_start is not None:
            on_start(trainer)
        return trainer.run()
    finally:
        if opened is not None:
            opened.close()
        shutdown(ctx)
