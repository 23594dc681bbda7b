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
