"""The CycleGAN training step: two generators, two discriminators, one optimiser each side.

Paper <-> code: G (X->Y) = ``g_ab``, F (Y->X) = ``g_ba``, D_Y = ``d_b`` (real vs fake B),
D_X = ``d_a`` (real vs fake A). Official code: netG_A = g_ab, netG_B = g_ba, netD_A = d_b,
netD_B = d_a.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from training.config import ConfigError, TrainConfig
from training.losses import GANLoss, cycle_loss, identity_loss
from training.networks import (
    GeneratorSpec,
    build_discriminator,
    build_generator,
    generator_spec,
    init_weights,
)
from training.pool import ImagePool


def generator_spec_from_config(config: TrainConfig, a_to_b: bool = True) -> GeneratorSpec:
    in_nc, out_nc = (config.input_nc, config.output_nc)
    if not a_to_b:
        in_nc, out_nc = out_nc, in_nc
    return generator_spec(config.generator, ngf=config.ngf, norm=config.norm,
                          dropout=config.dropout, input_nc=in_nc, output_nc=out_nc)


def set_requires_grad(nets: Iterable[nn.Module], flag: bool) -> None:
    for net in nets:
        for param in net.parameters():
            param.requires_grad_(flag)


@dataclass
class CycleGANNetworks:
    """The four networks, initialised with N(0, init_gain), on ``device`` (in channels-last
    memory format when the config asks for it: same values, NHWC strides; CUDA only)."""

    g_ab: nn.Module
    g_ba: nn.Module
    d_a: nn.Module
    d_b: nn.Module
    spec_ab: GeneratorSpec
    spec_ba: GeneratorSpec

    @classmethod
    def build(cls, config: TrainConfig, device: torch.device) -> CycleGANNetworks:
        if config.channels_last and device.type != "cuda":
            # Measured with torch 2.14: F.instance_norm's input gradient is wrong (off by more
            # than its own size) when the incoming gradient is channels-last at batch size 1,
            # as it is behind every channels-last ConvTranspose2d here. Silent, so refused.
            raise ConfigError(f"channels_last: CUDA only (on {device.type}, PyTorch's "
                              "instance-norm backward returns wrong gradients for it)")
        spec_ab = generator_spec_from_config(config, a_to_b=True)
        spec_ba = generator_spec_from_config(config, a_to_b=False)
        nets = [
            build_generator(spec_ab),
            build_generator(spec_ba),
            build_discriminator(config.discriminator, config.input_nc, config.ndf,
                                config.n_layers_d, config.norm),
            build_discriminator(config.discriminator, config.output_nc, config.ndf,
                                config.n_layers_d, config.norm),
        ]
        for net in nets:
            init_weights(net, config.init_gain)
            net.to(device)
            if config.channels_last:
                net.to(memory_format=torch.channels_last)
        return cls(nets[0], nets[1], nets[2], nets[3], spec_ab, spec_ba)

    def compiled(self) -> CycleGANNetworks:
        """The same networks behind ``torch.compile`` (shared parameters; the originals keep
        their state-dict keys, so checkpoints do not depend on compilation)."""
        return CycleGANNetworks(compile_module(self.g_ab), compile_module(self.g_ba),
                                compile_module(self.d_a), compile_module(self.d_b),
                                self.spec_ab, self.spec_ba)


def compile_module(net: nn.Module) -> nn.Module:
    """``torch.compile(net)``: a module sharing ``net``'s parameters, compiled on first call."""
    return cast(nn.Module, torch.compile(net))


def adam_options(device: torch.device) -> dict[str, Any]:
    """Adam's implementation for ``device``: on CUDA the fused kernel (one launch updates every
    parameter, instead of several per tensor); elsewhere PyTorch's default."""
    return {"fused": True} if device.type == "cuda" else {}


def match_optimizer_to_device(optimizer: torch.optim.Optimizer) -> None:
    """After ``load_state_dict``: keep the implementation this device was given.

    A checkpoint's param groups carry the implementation flags of the machine that wrote them
    (a CUDA run's ``fused=True``, a CPU run's ``None``), and loading them would override ours.
    The fused kernel also wants its step counters on the parameters' device.
    """
    fused = optimizer.defaults.get("fused")
    for group in optimizer.param_groups:
        group["fused"] = fused
        group["foreach"] = optimizer.defaults.get("foreach")
        if not fused:
            continue
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(param.device, torch.float32)


class CycleGANStep:
    """One optimisation step: update both generators, then both discriminators.

    ``train_nets`` may be DDP-wrapped copies of ``nets`` (they receive the gradient sync);
    the discriminators are called unwrapped during the generator update, where they are frozen.
    With ``config.compile`` both are called through ``torch.compile``.
    """

    def __init__(self, config: TrainConfig, nets: CycleGANNetworks,
                 train_nets: CycleGANNetworks, device: torch.device, pool_seed: int) -> None:
        self.config = config
        self.nets = nets
        self.train = train_nets.compiled() if config.compile else train_nets
        # The discriminators as the generator update calls them (frozen, never DDP-wrapped).
        self.frozen_d_a, self.frozen_d_b = nets.d_a, nets.d_b
        if config.compile:
            same = train_nets is nets
            self.frozen_d_a = self.train.d_a if same else compile_module(nets.d_a)
            self.frozen_d_b = self.train.d_b if same else compile_module(nets.d_b)
        self.device = device
        self.gan_loss = GANLoss(config.gan_mode)
        self.pool_a = ImagePool(config.pool_size, seed=pool_seed)
        self.pool_b = ImagePool(config.pool_size, seed=pool_seed + 1)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(
            list(nets.g_ab.parameters()) + list(nets.g_ba.parameters()), lr=config.lr, betas=betas,
            **adam_options(device))
        self.opt_d = torch.optim.Adam(
            list(nets.d_a.parameters()) + list(nets.d_b.parameters()), lr=config.lr, betas=betas,
            **adam_options(device))
        # Constant for n_epochs, then linear to zero over n_epochs_decay (official "linear").
        decay = max(1, config.n_epochs_decay + 1)
        step_limited = config.n_epochs + config.n_epochs_decay == 0  # only max_steps: constant

        def lr_factor(epoch: int) -> float:
            if step_limited:
                return 1.0
            return max(0.0, 1.0 - max(0, epoch + 1 - config.n_epochs) / decay)

        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lr_factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lr_factor)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.config.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Train on one batch of each domain ``(N, C, H, W)`` in [-1, 1]; returns the losses.

        The losses are detached 0-d float32 tensors on the device, not Python floats: reading a
        value waits for the device to finish the step, so the caller does that only when it
        logs (see :func:`losses_to_floats`), and the device otherwise never waits for Python.
        """
        cfg, t, n = self.config, self.train, self.nets
        if cfg.channels_last:
            real_a = real_a.contiguous(memory_format=torch.channels_last)
            real_b = real_b.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            fake_b = t.g_ab(real_a)   # G(x)
            rec_a = t.g_ba(fake_b)    # F(G(x))
            fake_a = t.g_ba(real_b)   # F(y)
            rec_b = t.g_ab(fake_a)    # G(F(y))

        # ---- generators: fool both discriminators, close both cycles, stay identity-ish ----
        set_requires_grad([n.d_a, n.d_b], False)
        self.opt_g.zero_grad(set_to_none=True)
        with self._autocast():
            losses = {
                "G_AB": self.gan_loss(self.frozen_d_b(fake_b), True),
                "G_BA": self.gan_loss(self.frozen_d_a(fake_a), True),
                "cycle_A": cycle_loss(rec_a, real_a, cfg.lambda_a),
                "cycle_B": cycle_loss(rec_b, real_b, cfg.lambda_b),
            }
            if cfg.lambda_identity > 0:
                losses["idt_B"] = identity_loss(t.g_ab(real_b), real_b,
                                                cfg.lambda_b * cfg.lambda_identity)
                losses["idt_A"] = identity_loss(t.g_ba(real_a), real_a,
                                                cfg.lambda_a * cfg.lambda_identity)
        loss_g = sum(losses.values())
        assert isinstance(loss_g, torch.Tensor)
        loss_g.backward()
        self.opt_g.step()

        # ---- discriminators: real -> 1, fake (from the history pool) -> 0, halved ----
        set_requires_grad([n.d_a, n.d_b], True)
        self.opt_d.zero_grad(set_to_none=True)
        pooled_b = self.pool_b.query(fake_b)
        pooled_a = self.pool_a.query(fake_a)
        with self._autocast():
            losses["D_B"] = 0.5 * (self.gan_loss(t.d_b(real_b), True)
                                   + self.gan_loss(t.d_b(pooled_b), False))
            losses["D_A"] = 0.5 * (self.gan_loss(t.d_a(real_a), True)
                                   + self.gan_loss(t.d_a(pooled_a), False))
        (losses["D_A"] + losses["D_B"]).backward()
        self.opt_d.step()
        return {name: value.detach() for name, value in losses.items()}

    def end_epoch(self) -> None:
        self.sched_g.step()
        self.sched_d.step()

    @property
    def lr(self) -> float:
        return float(self.opt_g.param_groups[0]["lr"])

    # ---- checkpoint state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "generators": {
                "G_AB": {"spec": self.nets.spec_ab.to_dict(),
                         "state_dict": self.nets.g_ab.state_dict()},
                "G_BA": {"spec": self.nets.spec_ba.to_dict(),
                         "state_dict": self.nets.g_ba.state_dict()},
            },
            "discriminators": {"D_A": self.nets.d_a.state_dict(),
                               "D_B": self.nets.d_b.state_dict()},
            "optimizers": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            "schedulers": {"G": self.sched_g.state_dict(), "D": self.sched_d.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.g_ab.load_state_dict(state["generators"]["G_AB"]["state_dict"])
        self.nets.g_ba.load_state_dict(state["generators"]["G_BA"]["state_dict"])
        self.nets.d_a.load_state_dict(state["discriminators"]["D_A"])
        self.nets.d_b.load_state_dict(state["discriminators"]["D_B"])
        self.opt_g.load_state_dict(state["optimizers"]["G"])
        self.opt_d.load_state_dict(state["optimizers"]["D"])
        self.sched_g.load_state_dict(state["schedulers"]["G"])
        self.sched_d.load_state_dict(state["schedulers"]["D"])
        match_optimizer_to_device(self.opt_g)
        match_optimizer_to_device(self.opt_d)

    def local_state(self) -> dict[str, Any]:
        """What differs between processes: the fake-image pools and the torch RNG."""
        state: dict[str, Any] = {
            "pools": {"fake_A": self.pool_a.state_dict(), "fake_B": self.pool_b.state_dict()},
            "torch_rng": torch.get_rng_state(),
            # Equal on every rank when DDP keeps the replicas in sync; a cheap health check.
            "weights_checksum": self.weights_checksum(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def weights_checksum(self) -> float:
        nets = (self.nets.g_ab, self.nets.g_ba, self.nets.d_a, self.nets.d_b)
        return float(sum(p.detach().double().sum() for net in nets for p in net.parameters()))

    def load_local_state(self, state: dict[str, Any]) -> None:
        self.pool_a.load_state_dict(state["pools"]["fake_A"], self.device)
        self.pool_b.load_state_dict(state["pools"]["fake_B"], self.device)
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)


def losses_to_floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The step's loss tensors as Python floats, in one device-to-host copy (this waits for the
    step to finish on the device: call it only when the values are needed)."""
    if not losses:
        return {}
    values = torch.stack([value.float() for value in losses.values()]).tolist()
    return dict(zip(losses, values, strict=True))
