"""Proof that the demo model learned: held-out photos, true targets known.

For each held-out photo x (never seen in training) with true target y = stylize(x):

- model:    G(x) against y          (what the demo model makes of the photo)
- identity: x against y             (doing nothing: the baseline to beat)
- cycle:    F(G(x)) against x       (reconstruction through both generators)

L1 is the mean absolute error in 8-bit levels / 255 (lower is better), PSNR in dB (higher is
better). Writes ``benchmarks/results/demo_quality.json`` and the before/after grid
``benchmarks/results/demo_grid.png`` (photo | demo model | true target).

    python benchmarks/demo_quality.py                       # builds datasets/demo if missing
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import cv2
import numpy as np

from runtime import Translator
from runtime.demo import demo_model_path
from runtime.metrics import psnr

RESULTS = Path(__file__).resolve().parent / "results"


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))) / 255.0)


def evaluate(data: Path) -> dict:
    forward = Translator(demo_model_path(), providers="cpu")
    reverse = Translator(demo_model_path(reverse=True), providers="cpu")
    rows = []
    grid_rows = []
    for photo_path in sorted((data / "test" / "A").glob("*.png")):
        photo = cv2.imread(str(photo_path))
        target = cv2.imread(str(data / "test" / "B" / photo_path.name))
        output = forward(photo)
        cycled = reverse(output)
        rows.append({
            "image": photo_path.stem, "size": list(photo.shape[:2]),
            "model_l1": l1(output, target), "model_psnr": psnr(output, target, 255.0),
            "identity_l1": l1(photo, target), "identity_psnr": psnr(photo, target, 255.0),
            "cycle_l1": l1(cycled, photo), "cycle_psnr": psnr(cycled, photo, 255.0),
        })
        width = 300
        height = round(photo.shape[0] * width / photo.shape[1])
        tiles = [cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
                 for img in (photo, output, target)]
        grid_rows.append(np.hstack([np.pad(t, ((4, 4), (4, 4), (0, 0)), constant_values=255)
                                    for t in tiles]))
    if not rows:
        raise SystemExit(f"{data}/test/A: no held-out photos; build the data set first")
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]
            if key not in ("image", "size")}
    width = max(r.shape[1] for r in grid_rows)
    grid = np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                      for r in grid_rows])
    return {"rows": rows, "mean": mean, "grid": grid,
            "model": str(demo_model_path().name), "providers": forward.providers,
            "machine": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("datasets/demo"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.data / "test" / "A").is_dir():
        from training.demo_data import build

        build(args.data)
    result = evaluate(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "demo_grid.png"), result.pop("grid"))
    (args.out / "demo_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'image':<22}{'model L1':>10}{'PSNR':>8}{'identity L1':>13}{'PSNR':>8}"
          f"{'cycle L1':>10}{'PSNR':>8}")
    for row in [*result["rows"], {"image": "mean", **result["mean"]}]:
        print(f"{row['image']:<22}{row['model_l1']:>10.4f}{row['model_psnr']:>8.2f}"
              f"{row['identity_l1']:>13.4f}{row['identity_psnr']:>8.2f}"
              f"{row['cycle_l1']:>10.4f}{row['cycle_psnr']:>8.2f}")
    print(f"wrote {args.out / 'demo_quality.json'} and {args.out / 'demo_grid.png'}")


if __name__ == "__main__":
    main()
