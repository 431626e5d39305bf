"""Training configuration: one dataclass with commented defaults (the paper's settings).

A config file (YAML or JSON) is parsed as data with ``yaml.safe_load``/``json.load``, never
executed. Precedence: dataclass defaults < ``--config`` file < command-line options.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from training.data import PREPROCESSORS
from training.losses import GAN_MODES
from training.networks import (
    DISCRIMINATORS,
    GENERATORS,
    NORMS,
    discriminator_min_size,
    generator_spec,
)


class ConfigError(ValueError):
    """An invalid configuration value or file; the message says which and why."""


@dataclass(frozen=True)
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    dataroot: str = ""                  # folder holding trainA/ and trainB/
    domain_a: str = "A"                 # human names of the two domains (go into ONNX metadata)
    domain_b: str = "B"
    preprocess: str = "resize_and_crop"  # resize_and_crop | crop | scale_width |
                                        # scale_width_and_crop | none
    load_size: int = 286                # resize to this (bicubic) before the random crop
    crop_size: int = 256                # random crop size fed to the networks
    no_flip: bool = False               # True disables the random horizontal flip
    batch_size: int = 1                 # per process; the paper uses 1
    num_workers: int = 4                # DataLoader worker processes (0 = load in-process)
    max_dataset_size: int = 0           # use at most this many images per domain (0 = all)
    # --- networks ---------------------------------------------------------------------------
    generator: str = "resnet_9blocks"   # resnet_9blocks | resnet_6blocks | unet_256 | unet_128
    ngf: int = 64                       # generator filters in the first conv layer
    discriminator: str = "basic"        # basic (70x70 PatchGAN) | n_layers | pixel
    ndf: int = 64                       # discriminator filters in the first conv layer
    n_layers_d: int = 3                 # only for discriminator "n_layers"
    norm: str = "instance"              # instance | batch | none
    dropout: bool = False               # dropout in the generator (official --no_dropout off)
    init_gain: float = 0.02             # weights ~ N(0, init_gain)
    input_nc: int = 3
    output_nc: int = 3
    # --- objective (paper names: G = G_AB, F = G_BA, D_X = D_A, D_Y = D_B) -------------------
    gan_mode: str = "lsgan"             # lsgan (least squares) | vanilla (BCE with logits)
    lambda_a: float = 10.0              # cycle loss weight A -> B -> A
    lambda_b: float = 10.0              # cycle loss weight B -> A -> B
    lambda_identity: float = 0.5        # identity loss weight, relative to lambda_a/lambda_b
    pool_size: int = 50                 # history of generated images shown to D (0 = none)
    # --- optimisation -----------------------------------------------------------------------
    lr: float = 2e-4                    # Adam learning rate for G and for D
    beta1: float = 0.5
    beta2: float = 0.999
    n_epochs: int = 100                 # epochs at the initial learning rate
    n_epochs_decay: int = 100           # epochs of linear decay to zero
    max_steps: int = 0                  # stop after this many optimisation steps (0 = no cap)
    # --- run --------------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    bf16: bool = False                  # bfloat16 autocast for the forward passes
    channels_last: bool = False         # NHWC memory format for networks and batches (CUDA)
    compile: bool = False               # torch.compile the networks: minutes of compiling
                                        # first, then faster steps (for long runs on a GPU)
    log_every: int = 100                # steps between JSONL loss records
    sample_every: int = 500             # steps between sample grids (0 = only at the end)
    num_samples: int = 4                # images per domain in a sample grid
    checkpoint_every: int = 1000        # steps between history checkpoints (0 = only latest)
    keep_checkpoints: int = 5           # history checkpoints kept (0 = all)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return validate(replace(self, **changes))


# Options that may change when a run is resumed; everything else is fixed by the checkpoint.
RESUMABLE_OPTIONS = frozenset({
    "dataroot", "n_epochs", "n_epochs_decay", "max_steps", "device", "num_workers", "log_every",
    "sample_every", "checkpoint_every", "keep_checkpoints", "num_samples", "bf16",
    "channels_last", "compile",
})


def validate(config: TrainConfig) -> TrainConfig:
    """Raise :class:`ConfigError` for the first invalid value; return the config unchanged."""
    choices: dict[str, Mapping[str, Any]] = {
        "generator": GENERATORS, "discriminator": DISCRIMINATORS, "norm": NORMS,
        "gan_mode": GAN_MODES, "preprocess": PREPROCESSORS,
    }
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    positive = ("ngf", "ndf", "load_size", "crop_size", "batch_size", "input_nc", "output_nc")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name}: must be positive, got {getattr(config, name)}")
    for name in ("input_nc", "output_nc"):  # the loader reads every image as RGB
        if getattr(config, name) != 3:
            raise ConfigError(f"{name}: only 3 (RGB) is trained here, got {getattr(config, name)}")
    # What torch would refuse deep inside (naming neither key nor file), or train into NaNs.
    for name in ("lr", "init_gain"):
        if not math.isfinite(getattr(config, name)) or getattr(config, name) <= 0:
            raise ConfigError(f"{name}: must be a positive number, got {getattr(config, name)}")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ConfigError(f"{name}: must be in [0, 1), got {getattr(config, name)}")
    for name in ("lambda_a", "lambda_b", "lambda_identity"):
        if not math.isfinite(getattr(config, name)) or getattr(config, name) < 0:
            raise ConfigError(f"{name}: must be a number >= 0, got {getattr(config, name)}")
    non_negative = ("num_workers", "n_epochs", "n_epochs_decay", "max_steps", "pool_size",
                    "max_dataset_size", "log_every", "sample_every", "checkpoint_every",
                    "keep_checkpoints")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ConfigError(f"{name}: must be >= 0, got {getattr(config, name)}")
    if config.n_epochs + config.n_epochs_decay == 0 and config.max_steps == 0:
        raise ConfigError("nothing to train: n_epochs, n_epochs_decay and max_steps are all 0")
    if config.preprocess == "resize_and_crop" and config.crop_size > config.load_size:
        raise ConfigError(
            f"crop_size {config.crop_size} is larger than load_size {config.load_size}")
    spec = generator_spec(config.generator)
    # Every mode's sample grids are crop_size crops, even where training does not crop.
    if config.crop_size % spec.size_multiple or config.crop_size < spec.min_size:
        used = "" if "crop" in config.preprocess else " (the sample grids' crops)"
        raise ConfigError(f"crop_size {config.crop_size}{used} does not fit {config.generator}: "
                          f"use a multiple of {spec.size_multiple}, at least {spec.min_size}")
    floor = discriminator_min_size(config.discriminator, config.n_layers_d)
    if "crop" in config.preprocess and config.crop_size < floor:
        raise ConfigError(f"crop_size {config.crop_size} is too small for the "
                          f"{config.discriminator} discriminator (n_layers_d "
                          f"{config.n_layers_d}): at least {floor}")
    if config.num_samples < 1:
        raise ConfigError("num_samples must be >= 1 (images per domain in a sample grid)")
    if config.device != "auto":
        try:
            torch.device(config.device)
        except RuntimeError:
            raise ConfigError(f"device: {config.device!r} is not a device (auto, cpu, cuda, "
                              "cuda:N, ...)") from None
    if config.batch_size > 1 and config.preprocess in ("scale_width", "none"):
        raise ConfigError(
            f"preprocess {config.preprocess!r} keeps each image's own size, so batch_size must be "
            "1; use a cropping mode (resize_and_crop, crop, scale_width_and_crop) to batch")
    if config.lambda_identity > 0 and config.input_nc != config.output_nc:
        raise ConfigError("lambda_identity > 0 needs input_nc == output_nc (set it to 0)")
    return config


def from_dict(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Build a config from plain values (unknown keys and wrong types are errors)."""
    return validate(replace(base or TrainConfig(), **_typed(values)))


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ints taken as floats where a float is due; :class:`ConfigError` for an
    unknown key or a value of the wrong type."""
    types = {f.name: type(f.default) for f in fields(TrainConfig)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError("unknown option(s): " + ", ".join(
            name + _did_you_mean(name, types) for name in unknown))
    converted: dict[str, Any] = {}
    for key, value in values.items():
        expected = types[key]
        if expected in (int, float) and isinstance(value, str):
            value = _number(value, expected)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
        converted[key] = value
    return converted


# Command-line names whose config key differs (--epochs is n_epochs in a file).
_FLAG_NAMES = {"epochs": "n_epochs", "epochs_decay": "n_epochs_decay", "workers": "num_workers"}


def _did_you_mean(name: str, known: dict[str, type]) -> str:
    """`` (did you mean n_epochs?)`` for a misspelt or command-line name, else nothing."""
    key = name.replace("-", "_").lstrip("_")
    if key in _FLAG_NAMES:
        return f" (did you mean {_FLAG_NAMES[key]}?)"
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _number(text: str, expected: type) -> Any:
    """A number written as text, as YAML 1.1 (PyYAML) reads ``2e-4`` and ``1e3``: taken as
    the number it spells; other text stays text (and is refused as the wrong type)."""
    try:
        number = float(text)
    except ValueError:
        return text
    if expected is int:
        return int(number) if number.is_integer() else text
    return number


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (plain data only), refusing a key given twice in one
    mapping: PyYAML would keep the last silently, so ``ngf: 8`` then ``ngf: 16`` trains 16."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: the same refusal of a key given twice."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"{twice[0]!r} is given twice")
    return dict(pairs)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file as plain data (YAML's safe loader: no objects, no code;
    a key given twice is an error)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = (json.loads(text, object_pairs_hook=_unique_keys)
                if path.suffix.lower() == ".json" else yaml.load(text, _UniqueKeyLoader))
    except (ValueError, yaml.YAMLError) as exc:  # json.JSONDecodeError is a ValueError
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {first}") \
            from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    try:
        return _typed(data)  # names and types, said with the file's name
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomic: temp file then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
