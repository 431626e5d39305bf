"""PyTorch eager as a peer in ``cyclegan-bench``: registered through the
``cyclegan_toolkit.bench_engines`` entry point, so the runtime itself never imports torch or this
package. The benchmark loads it in the PyTorch rows' own processes, and in one more up front
to check the checkpoint (:func:`check_checkpoint`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cyclegan_export.source import load_generator
from runtime.bench.engines import EngineSession, RowSpec
from runtime.bench.report import BenchError
from training.checkpoint import CheckpointError


def pytorch_engine(spec: RowSpec, threads: int | None) -> EngineSession:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    device = torch.device(spec.provider or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("this torch build sees no CUDA device")
    net = load_generator(spec.model, spec.direction).net.to(device)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            # .cpu() waits for the GPU, so a CUDA call is timed to its end, copies included,
            # as onnxruntime's CUDA rows are.
            out: np.ndarray = net(torch.from_numpy(batch).to(device)).cpu().numpy()
            return out

    return EngineSession(run, device.type.upper(), "fp32", "float", "RGB",
                         "gpu" if device.type == "cuda" else "cpu")


def check_checkpoint(path: str, direction: str) -> dict[str, Any]:
    """The generator ``path`` holds for ``direction``, loaded as the PyTorch rows will load it:
    ``{"architecture", "ngf"}``; :class:`BenchError` naming the file when it cannot be."""
    try:
        spec = load_generator(path, direction).spec
    except CheckpointError as exc:
        raise BenchError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - anything else: still one line, naming the file
        raise BenchError(f"{path}: cannot load it ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return {"architecture": spec.name, "ngf": spec.ngf}


# cyclegan-bench asks this before any row: runtime.bench.engines.check_plugin_source
pytorch_engine.check = check_checkpoint  # type: ignore[attr-defined]

