"""Segment windows of a long video and the frames sampled inside them (paper Sec. 3.1, App. 9).

Everything here works on *timestamps* (seconds from the first frame), never on frame counts or
a nominal fps, so variable-frame-rate videos are cut at the right times.

- ``segment_windows``: ``[N, 2]`` start / end seconds. Windows start every ``stride`` seconds
  (``stride == segment`` means back-to-back windows; ``stride < segment`` overlaps them as in
  App. 9). Every full window is kept; the partial window that follows the last full one is kept
  when it lasts at least ``min_last`` seconds. Later windows would lie inside that one, so at
  most one partial window exists.
- ``sample_times``: ``[N, T]`` the centres of ``T`` equal sub-intervals of each window (uniform
  inside the window, never on its edges, so adjacent windows never share a sample time).
- ``frame_indices``: ``[N, T]`` the frame *displayed* at each sample time (the last frame whose
  timestamp is <= the time), clamped to the frames that exist.

Which ``T`` frames of a window a profile takes is a *frame rule* (``FRAME_RULES``), a pure
function ``rule(timestamps, windows, T) -> int64 [N, T]``; ``plan_segments`` applies one to a
video's timestamps. A faster decoder only needs these to know what to decode:

- ``centres`` (profiles ``hf``, ``legacy``): the frames on screen at ``sample_times``.
- ``linspace`` (profile ``authors``): the authors' rule. They cut every video into 5-s files
  and LanguageBind's processor took frames ``np.linspace(0, n - 1, T, dtype=int)`` of each file
  (``n`` = its frame count, both ends included); here ``n`` counts the source frames whose
  timestamps lie in ``[start, end)`` of the window. A window holding no frame start (only a
  tail or a gap of a variable-frame-rate video can) has no file in their pipeline and is dropped.
"""
from __future__ import annotations

import numpy as np

# Float noise in container timestamps (e.g. 9.999999 s for 10 s) must not drop a full window.
EPS = 1e-6


def segment_windows(duration: float, segment: float, stride: float | None = None,
                    min_last: float | None = None) -> np.ndarray:
    """float64 ``[N, 2]`` start / end seconds of the windows of a ``duration``-second video."""
    stride = segment if stride is None else stride
    min_last = segment if min_last is None else min_last
    if segment <= 0 or stride <= 0 or stride > segment:
        raise ValueError(f"need 0 < stride ({stride}) <= segment ({segment})")
    if not np.isfinite(duration) or duration <= 0:
        return np.zeros((0, 2))
    num_full = int(np.floor((duration - segment) / stride + EPS)) + 1 if duration + EPS >= segment else 0
    starts = np.arange(num_full, dtype=np.float64) * stride
    windows = np.stack([starts, starts + segment], axis=1)
    tail = num_full * stride
    rest = duration - tail
    if rest > EPS and rest + EPS >= min_last:
        windows = np.concatenate([windows, [[tail, duration]]])
    return windows


def sample_times(windows: np.ndarray, frames_per_segment: int) -> np.ndarray:
    """float64 ``[N, T]``: the centres of ``T`` equal parts of every window."""
    frac = (np.arange(frames_per_segment) + 0.5) / frames_per_segment
    return windows[:, :1] + frac[None] * (windows[:, 1:] - windows[:, :1])


def frame_indices(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """int64 ``[N, T]``: the frame on screen at each of ``times`` (timestamps sorted ascending)."""
    idx = np.searchsorted(timestamps, times + EPS, side="right") - 1
    return np.clip(idx, 0, len(timestamps) - 1)


def centre_frames(timestamps: np.ndarray, windows: np.ndarray, frames_per_segment: int) -> np.ndarray:
    """int64 ``[N, T]``: the frames on screen at the centres of ``T`` equal parts of each window."""
    return frame_indices(timestamps, sample_times(windows, frames_per_segment))


def window_frames(timestamps: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, count)`` int64 ``[N]``: the frames whose timestamps lie in ``[start, end)``."""
    first = np.searchsorted(timestamps, windows[:, 0] - EPS, side="left")
    stop = np.searchsorted(timestamps, windows[:, 1] - EPS, side="left")
    return first.astype(np.int64), (stop - first).astype(np.int64)


def linspace_frames(timestamps: np.ndarray, windows: np.ndarray, frames_per_segment: int) -> np.ndarray:
    """int64 ``[N, T]``: frames ``first + np.linspace(0, n - 1, T, dtype=int)`` of each window's
    ``n`` frames (the authors' rule); a window without frames gets the frame on screen at its start."""
    first, count = window_frames(timestamps, windows)
    idx = np.empty((len(windows), frames_per_segment), np.int64)
    for n in np.unique(count):  # numpy's own linspace per frame count, exactly as the authors called it
        rows = count == n
        offsets = np.linspace(0, n - 1, frames_per_segment, dtype=int) if n > 0 else 0
        idx[rows] = first[rows, None] + offsets
    empty = count == 0
    if empty.any():
        idx[empty] = frame_indices(timestamps, windows[empty, :1])
    return idx


FRAME_RULES = {"centres": centre_frames, "linspace": linspace_frames}
# The store manifest's ``sampling`` value for each rule.
RULE_NAMES = {"centres": "window-centres", "linspace": "linspace-endpoints"}


def plan_segments(timestamps: np.ndarray, duration: float, segment: float, stride: float, min_last: float,
                  frames_per_segment: int, rule: str = "centres") -> tuple[np.ndarray, np.ndarray]:
    """``windows [N, 2]`` seconds and the frame indices ``[N, T]`` a frame rule samples in them."""
    windows = segment_windows(duration, segment, stride, min_last)
    if rule == "linspace" and len(windows):
        windows = windows[window_frames(timestamps, windows)[1] > 0]
    return windows, FRAME_RULES[rule](timestamps, windows, frames_per_segment)
