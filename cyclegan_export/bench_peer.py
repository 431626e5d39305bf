"""PyTorch eager as a peer in ``cyclegan-bench``: registered through the
``cyclegan_toolkit.bench_engines`` entry point, so the runtime itself never imports torch or this
package; the benchmark loads it only in the PyTorch row's own process."""

from __future__ import annotations

import numpy as np

from cyclegan_export.source import load_generator
from runtime.bench.engines import EngineSession, RowSpec
from runtime.bench.report import BenchError


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
