"""Read generator weights in the official pretrained layout (``latest_net_G.pth``).

Official files are a raw ``state_dict``. Files saved by older PyTorch versions also carry
``running_mean``/``running_var``/``num_batches_tracked`` for InstanceNorm layers that have no
such buffers today, and files saved from ``DataParallel`` prefix every key with ``module.``.
The architecture is not stored, so it is read back from the key names and tensor shapes and
then proven by building the network and matching every key and shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import CheckpointError, is_training_checkpoint, load_torch_file
from training.networks import GeneratorSpec, build_generator

_NORM_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix that ``DataParallel`` adds to every key."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _norm_has_affine(state: Mapping[str, torch.Tensor], prefix: str) -> bool:
    return f"{prefix}.weight" in state and state[f"{prefix}.weight"].dim() == 1


def _infer_resnet(state: Mapping[str, torch.Tensor]) -> GeneratorSpec:
    first = state["model.1.weight"]  # c7s1 conv: (ngf, input_nc, 7, 7)
    block_keys = (re.match(r"model\.(\d+)\.conv_block", k) for k in state)
    blocks = sorted({int(m.group(1)) for m in block_keys if m})
    # With dropout the second conv moves to index 6; without it, index 6 is the second norm,
    # which for BatchNorm also has a (1-D) weight: only a 4-D weight there means dropout.
    dropout = any(k.endswith(".conv_block.6.weight") and state[k].dim() == 4 for k in state)
    last_conv = max(
        (int(m.group(1)) for k in state if (m := re.fullmatch(r"model\.(\d+)\.weight", k))),
    )
    norm = "batch" if _norm_has_affine(state, "model.2") else (
        "instance" if "model.1.bias" in state else "none")
    # A distilled mobile student: its blocks hold separable convolutions (conv.0 depthwise).
    mobile = any(re.search(r"\.conv_block\.\d+\.conv\.0\.weight$", k) for k in state)
    return GeneratorSpec(
        family="mobile_resnet" if mobile else "resnet", ngf=int(first.shape[0]),
        n_blocks=len(blocks), norm=norm,
        dropout=dropout, input_nc=int(first.shape[1]),
        output_nc=int(state[f"model.{last_conv}.weight"].shape[0]),
    )


def _infer_unet(state: Mapping[str, torch.Tensor]) -> GeneratorSpec:
    first = state["model.model.0.weight"]  # outermost downconv: (ngf, input_nc, 4, 4)
    # Every inner level has its downconv at ".model.1.weight" under a chain of submodules.
    inner = re.compile(r"model\.model\.1(\.model\.3)*\.model\.1\.weight")
    inner_levels = [k for k in state if inner.fullmatch(k)]
    out = state["model.model.3.weight"]  # outermost upconv: (ngf * 2, output_nc, 4, 4)
    norm = "batch" if _norm_has_affine(state, "model.model.1.model.2") else (
        "instance" if "model.model.1.model.1.bias" in state else "none")
    return GeneratorSpec(
        family="unet", ngf=int(first.shape[0]), num_downs=1 + len(inner_levels), norm=norm,
        input_nc=int(first.shape[1]), output_nc=int(out.shape[1]),
    )


def unreadable_fields(spec: GeneratorSpec) -> frozenset[str]:
    """Spec fields that no weights file can tell for this family.

    A U-Net's dropout adds no weights and shifts no key (its Dropout layer sits after every
    parametrised layer of its block), so :func:`infer_generator_spec` can only assume False. A
    ResNet's dropout moves the second convolution of each block, so it is read.
    """
    return frozenset({"dropout"}) if spec.family == "unet" else frozenset()


def infer_generator_spec(state: Mapping[str, torch.Tensor]) -> GeneratorSpec:
    """Read family, ngf, blocks/depth, norm, dropout and channels from an official state_dict.

    A U-Net's dropout cannot be read (see :func:`unreadable_fields`): it comes back False.

    ``state`` must already be cleaned (see :func:`clean_generator_state`). Raises ``ValueError``
    for a state_dict that is neither an official ResNet nor U-Net generator.
    """
    if "model.1.weight" in state and any(".conv_block." in k for k in state):
        return _infer_resnet(state)
    if "model.model.0.weight" in state and "model.model.3.weight" in state:
        return _infer_unet(state)
    sample = ", ".join(list(state)[:3]) or "no keys"
    raise ValueError(f"not a CycleGAN ResNet or U-Net generator (keys: {sample}, ...)")


def clean_generator_state(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` and drop stale InstanceNorm buffers; keep BatchNorm statistics.

    A ``running_mean`` belongs to a BatchNorm layer only when the same layer also has an affine
    ``weight``; otherwise it is a leftover of an old InstanceNorm and is unused.
    """
    if not isinstance(state, Mapping) or not state:
        raise ValueError("not a state_dict (expected a non-empty mapping of names to tensors)")
    flat = strip_module_prefix(state)
    bad = [k for k, v in flat.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"not a state_dict: entry {bad[0]!r} is not a tensor")
    cleaned = {}
    for key, value in flat.items():
        if key.endswith(_NORM_BUFFER_SUFFIXES):
            layer = key.rsplit(".", 1)[0]
            if not _norm_has_affine(flat, layer):
                continue
        cleaned[key] = value
    for key in [k for k in cleaned if k.endswith(".running_mean")]:
        # BatchNorm saved before PyTorch 0.4.1 has no step counter; torch's own loader adds a
        # zero one for such files too (it only matters with momentum=None).
        cleaned.setdefault(key[:-len("running_mean")] + "num_batches_tracked",
                           torch.tensor(0, dtype=torch.long))
    return cleaned


def require_colour(spec: GeneratorSpec, source: str) -> None:
    """Refuse a generator that does not map 3 channels to 3 (a colorization or gray model):
    the export's checks, the runtime and distillation all translate colour images.
    Raises :class:`CheckpointError` naming ``source`` and the channel counts."""
    if (spec.input_nc, spec.output_nc) != (3, 3):
        raise CheckpointError(f"{source}: the generator takes {spec.input_nc} channel(s) and "
                              f"gives {spec.output_nc}; this toolkit translates colour images "
                              "(3 channels in, 3 out)")


def resolve_generator(
    state: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> tuple[GeneratorSpec, dict[str, torch.Tensor]]:
    """Infer the spec of a raw generator state_dict, apply explicit overrides, prove it fits.

    Returns ``(spec, cleaned_state)``; the state loads into ``build_generator(spec)`` strictly.
    Raises ``ValueError`` naming the mismatch when the weights and the spec disagree.
    """
    cleaned = clean_generator_state(state)
    spec = infer_generator_spec(cleaned)
    if overrides:
        spec = replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    expected = build_generator(spec).state_dict()
    missing = [k for k in expected if k not in cleaned]
    unexpected = [k for k in cleaned if k not in expected]
    wrong = [k for k in expected if k in cleaned and expected[k].shape != cleaned[k].shape]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing key(s) e.g. {missing[0]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]}")
        if wrong:
            k = wrong[0]
            details.append(f"shape of {k} is {tuple(cleaned[k].shape)}, "
                           f"{spec.name} expects {tuple(expected[k].shape)}")
        raise ValueError(f"weights do not fit {spec.name} (ngf {spec.ngf}): " + "; ".join(details))
    return spec, cleaned


def load_pretrained_generator(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> tuple[torch.nn.Module, GeneratorSpec]:
    """Load an official pretrained generator file into an eval-mode network on the CPU.

    ``overrides`` (e.g. ``{"ngf": 64, "dropout": True}``) win over what the file implies. A
    ``{"state_dict": ...}`` wrapper is unwrapped (as ``cyclegan-export`` does). Raises
    :class:`CheckpointError` with the file name and the reason on any failure, a
    ``cyclegan-train`` checkpoint (two generators: see :func:`generator_from_checkpoint`)
    included.
    """
    data = load_torch_file(path)
    if is_training_checkpoint(data):
        raise CheckpointError(f"{path}: is a cyclegan-train checkpoint with two generators; "
                              "load one with generator_from_checkpoint(data, 'G_AB' or 'G_BA', "
                              "...) or cyclegan_export.load_generator(path, direction)")
    return generator_from_state(unwrap_state_dict(data), overrides, str(path))


def unwrap_state_dict(data: Any) -> Any:
    """The state_dict inside a ``{"state_dict": {...}}`` wrapper (a common way to save one);
    anything else as it is."""
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        return data["state_dict"]
    return data


def generator_from_state(
    state: Mapping[str, Any], overrides: Mapping[str, Any] | None, source: str
) -> tuple[torch.nn.Module, GeneratorSpec]:
    """Build the eval-mode generator a raw state_dict describes (see :func:`resolve_generator`).

    Raises :class:`CheckpointError` naming ``source`` when the weights fit no generator.
    """
    try:
        spec, cleaned = resolve_generator(state, overrides)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    net = build_generator(spec)
    net.load_state_dict(cleaned, strict=True)
    return net.eval(), spec


def generator_from_checkpoint(
    data: Mapping[str, Any], key: str, path: str | Path, direction: str,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[torch.nn.Module, GeneratorSpec]:
    """Build generator ``key`` (``"G_AB"`` / ``"G_BA"``) of a training checkpoint's dict.

    Its stored spec, then ``overrides``, describe it. Raises :class:`CheckpointError` naming
    ``path`` when the checkpoint lacks it (saying what it holds) or its entry is malformed.
    """
    generators = data.get("generators", {})
    if key not in generators:
        held = ", ".join(sorted(generators)) or "none"
        raise CheckpointError(f"{path}: has no {key} generator for direction {direction} "
                              f"(it holds: {held})")
    entry = generators[key]
    if not isinstance(entry, Mapping) or "state_dict" not in entry:
        raise CheckpointError(f"{path}: generator {key}: 'state_dict' missing")
    return generator_from_state(entry["state_dict"],
                                {**entry.get("spec", {}), **(overrides or {})},
                                f"{path}: generator {key}")


def student_direction(data: Mapping[str, Any], path: str | Path,
                      direction: str | None) -> tuple[str, str, str]:
    """A ``cyclegan-distill`` checkpoint's way: ``(direction, source domain, target domain)``.

    A student holds one generator (stored as ``G_AB``, from its ``domain_a`` to its
    ``domain_b``) and translates in its run's direction; a ``direction`` given that contradicts
    it raises :class:`CheckpointError` (its input domain is fixed)."""
    config = data.get("config", {})
    own = str(config.get("direction", "AtoB"))
    source, target = str(config.get("domain_a", own[0])), str(config.get("domain_b", own[-1]))
    if direction is not None and direction != own:
        raise CheckpointError(f"{path}: a distilled student translates {source} -> {target} "
                              f"only (its run's direction, {own}); leave --direction out")
    return own, source, target
