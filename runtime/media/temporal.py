"""Temporal stability for frame-by-frame translation, and its measure.

CycleGAN translates each frame on its own, so textures and colours that the model invents (or
amplifies from sensor noise) change from frame to frame: the video flickers. The fix here needs
no retraining: blind temporal consistency as a post-process, in the spirit of Bonneel et al.,
"Blind Video Temporal Consistency" (SIGGRAPH Asia 2015), who make a per-frame processed video
consistent using only its input, and of the warping-based filtering that Lai et al., "Learning
Blind Video Temporal Consistency" (ECCV 2018), learn. For each new frame:

1. Optical flow from the new INPUT frame to the previous one (OpenCV's DIS flow, Kroeger et al.
   ECCV 2016, on gray frames downscaled to at most :data:`FLOW_SIDE` pixels: a few ms).
2. The previous OUTPUT is warped along that flow onto the new frame (``cv2.remap``).
3. Reliability: the previous input warped the same way must match the new input. Where it does
   not (occlusions, objects the flow missed, pixels that came in at the border) the warp is not
   trusted; the error map is smoothed first so that sensor noise does not count as a mismatch.
4. Blend: ``out = new + w * reliability * (warped_previous - new)``, a recursive filter along
   the motion (``w`` = :data:`DEFAULT_WEIGHT`): flicker averages out over a few frames while
   every new detail still comes from the model.
5. Scene cuts reset it: when the warped previous input matches the new one nowhere (mean error
   above :data:`CUT_ERROR` or too few reliable pixels), the new output passes untouched and the
   history restarts, so nothing of the previous shot ghosts into the next.

The measure (:func:`warping_errors`) is the temporal warping error of Lai et al.: the mean over
reliable pixels of ``|O_t - warp(O_{t-1})|``, the flow and the occlusion mask taken from the
INPUT frames, at full resolution with a finer DIS preset and a forward-backward check (Sundaram
et al. 2010, as Lai et al. use) rather than the stabiliser's own fast flow, so the stabiliser is
not graded by the estimate it used.

Everything is numpy / OpenCV on whole frames: no per-pixel Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FLOW_SIDE = 320          # the stabiliser's flow runs on frames of at most this longer side
DEFAULT_WEIGHT = 0.6     # share of the warped previous output where the warp is reliable
ERROR_LOW = 6.0          # smoothed warped-input error (gray levels): fully reliable below...
ERROR_HIGH = 20.0        # ...and not at all above
CUT_ERROR = 30.0         # mean warped-input error of a scene cut (gray levels)
CUT_RELIABLE = 0.25      # ...or fewer reliable pixels than this share: a cut


_TO_GRAY = {("BGR", 3): cv2.COLOR_BGR2GRAY, ("BGR", 4): cv2.COLOR_BGRA2GRAY,
            ("RGB", 3): cv2.COLOR_RGB2GRAY, ("RGB", 4): cv2.COLOR_RGBA2GRAY}


def _gray(image: np.ndarray, size: tuple[int, int] | None = None,
          color_order: str = "BGR") -> np.ndarray:
    """HWC uint8 in ``color_order`` (with alpha or not) or HW uint8 -> HW uint8 gray, resized
    (INTER_AREA) to ``size`` (W, H)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, _TO_GRAY[color_order, image.shape[2]])
    if size is not None and (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def _grid(height: int, width: int) -> np.ndarray:
    """``(H, W, 2)`` float32 pixel coordinates (x, y)."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.dstack([xs, ys])


def _flow(estimator: cv2.DISOpticalFlow, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``(H, W, 2)`` float32 flow from gray ``new`` to gray ``old``: pixel (x, y) of ``new``
    shows what ``old`` had at (x, y) + flow."""
    flow: np.ndarray = estimator.calc(new, old, None)  # type: ignore[call-overload]
    return flow


def _warp(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``coords`` (H, W, 2) float32 (x, y), bilinear; outside the frame,
    the nearest edge pixel."""
    return cv2.remap(image, coords, None, cv2.INTER_LINEAR,  # type: ignore[call-overload]
                     borderMode=cv2.BORDER_REPLICATE)


def _inside(coords: np.ndarray) -> np.ndarray:
    """Where ``coords`` (H, W, 2) fall inside the frame: HW bool."""
    height, width = coords.shape[:2]
    x, y = coords[..., 0], coords[..., 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


class TemporalStabilizer:
    """Make frame-by-frame translations temporally consistent (see the module docstring).

    Call it once per frame, in order: ``stable = stabilizer(input_frame, output_frame)``, both
    HWC uint8 of one height and width (in ``color_order``, "BGR" or "RGB", for every call; 3
    or 4 channels for the output). Returns the output to show or write (uint8, the output's
    shape). The first frame, a frame of another size and the first frame after a scene cut
    come back unchanged.
    :meth:`reset` forgets the history (e.g. between videos). Not thread-safe: one per stream.

    ``weight``: 0 disables it, towards 1 flicker is smoothed harder at the cost of lag on
    changes the reliability check does not catch (0.5-0.8 sensible). ``flow_side``: longer side
    of the frames the flow is computed on.
    """

    def __init__(self, weight: float = DEFAULT_WEIGHT, *, flow_side: int = FLOW_SIDE,
                 preset: int = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                 color_order: str = "BGR") -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"weight must be in [0, 1), got {weight}")
        self.weight = weight
        self.color_order = color_order  # of the frames it is given (their gray depends on it)
        self.flow_side = flow_side
        self._flow = cv2.DISOpticalFlow.create(preset)
        self._grids: dict[tuple[int, int], np.ndarray] = {}
        self.cuts = 0                   # scene cuts seen (resets not asked for)
        self.reliable_fraction = 0.0    # of the last frame's pixels
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames: the next call starts a new shot."""
        self._previous_gray: np.ndarray | None = None
        self._previous_output: np.ndarray | None = None

    def _grid(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        if key not in self._grids:
            self._grids[key] = _grid(height, width)
        return self._grids[key]

    def __call__(self, input_frame: np.ndarray, output_frame: np.ndarray) -> np.ndarray:
        if input_frame.shape[:2] != output_frame.shape[:2]:
            raise ValueError(f"input {input_frame.shape[1]}x{input_frame.shape[0]} and output "
                             f"{output_frame.shape[1]}x{output_frame.shape[0]} differ in size")
        height, width = output_frame.shape[:2]
        scale = min(1.0, self.flow_side / max(height, width))
        small = (max(8, round(width * scale)), max(8, round(height * scale)))
        gray = _gray(input_frame, small, self.color_order)
        previous_output = self._previous_output
        if (self._previous_gray is None or previous_output is None
                or previous_output.shape != output_frame.shape):
            return self._keep(gray, output_frame)
        # Flow from the new frame to the previous one: for each new pixel, where it was.
        flow = _flow(self._flow, gray, self._previous_gray)
        coords = self._grid(small[1], small[0]) + flow
        warped_gray = _warp(self._previous_gray, coords)
        error: np.ndarray = cv2.absdiff(gray, warped_gray).astype(np.float32)
        error = cv2.GaussianBlur(error, (0, 0), 1.5)  # noise is not a mismatch; edges are
        error[~_inside(coords)] = 255.0
        reliable = np.clip((ERROR_HIGH - error) / (ERROR_HIGH - ERROR_LOW), 0.0, 1.0)
        self.reliable_fraction = float(np.mean(reliable > 0.5))
        if float(np.mean(error)) > CUT_ERROR or self.reliable_fraction < CUT_RELIABLE:
            self.cuts += 1
            return self._keep(gray, output_frame)
        # The same warp at full resolution (flow vectors scaled with the frame).
        full_flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
        full_flow *= np.float32(width / small[0]), np.float32(height / small[1])
        full_coords = self._grid(height, width) + full_flow
        warped = _warp(previous_output, full_coords)
        alpha = cv2.resize(reliable, (width, height), interpolation=cv2.INTER_LINEAR)
        alpha *= np.float32(self.weight)
        blended = cv2.blendLinear(warped, output_frame, alpha, 1.0 - alpha)
        self._previous_gray, self._previous_output = gray, blended
        return blended

    def _keep(self, gray: np.ndarray, output_frame: np.ndarray) -> np.ndarray:
        self._previous_gray, self._previous_output = gray, output_frame
        return output_frame


# ---- the measure ------------------------------------------------------------------------------

def _occlusion_free(forward: np.ndarray, backward: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Forward-backward consistency (Sundaram et al. 2010): where following ``backward`` (new ->
    previous) and then ``forward`` (previous -> new) comes back to the start. HW bool."""
    coords = grid + backward
    forward_there = _warp(forward, coords)
    loop = backward + forward_there
    bound = 0.01 * (np.sum(backward ** 2, axis=2) + np.sum(forward_there ** 2, axis=2)) + 0.5
    return (np.sum(loop ** 2, axis=2) < bound) & _inside(coords)


Frames = Sequence[np.ndarray] | np.ndarray  # a list of frames or one (N, H, W, C) array


def warping_errors(inputs: Frames, sequences: Sequence[Frames]) -> list[float]:
    """Temporal warping error (Lai et al., ECCV 2018) of each output sequence of ``inputs``.

    ``inputs``: the frames translated, HWC uint8 BGR (a list, or an ``(N, H, W, 3)`` array);
    ``sequences``: one or more output
    sequences of the same length and frame size (uint8, 3 or 4 channels). For each pair of
    consecutive frames, the flow and the occlusion mask come from the inputs (DIS, medium
    preset, full resolution, forward-backward check); the error is the mean over the mask's
    pixels and the channels of ``|O_t - warp(O_{t-1})|`` in gray levels (0-255), averaged over
    the pairs. (Lai et al. square the difference; the mean absolute value used here reads in
    levels.) Flows are computed once for all sequences. Lower is steadier; 0 for fewer than two
    frames.
    """
    if any(len(sequence) != len(inputs) for sequence in sequences):
        raise ValueError("every output sequence must have one frame per input frame")
    if len(inputs) < 2:
        return [0.0 for _ in sequences]
    estimator = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    height, width = inputs[0].shape[:2]
    grid = _grid(height, width)
    totals = [0.0 for _ in sequences]
    pairs = 0
    previous = _gray(inputs[0])
    for index in range(1, len(inputs)):
        current = _gray(inputs[index])
        backward = _flow(estimator, current, previous)
        forward = _flow(estimator, previous, current)
        mask = _occlusion_free(forward, backward, grid)
        previous = current
        if not mask.any():
            continue  # a cut: nothing to compare
        pairs += 1
        coords = grid + backward
        for which, sequence in enumerate(sequences):
            warped = _warp(sequence[index - 1], coords)
            difference = cv2.absdiff(sequence[index], warped)
            totals[which] += float(np.mean(difference[mask]))
    return [total / pairs if pairs else 0.0 for total in totals]


def warping_error(inputs: Frames, outputs: Frames) -> float:
    """:func:`warping_errors` of one output sequence."""
    return warping_errors(inputs, [outputs])[0]
