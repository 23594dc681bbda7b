"""Decode one video into the uint8 frames of its segment windows (runs in the decode workers).

``sample_video`` opens a video once, cuts it into windows from its timestamps
(``preprocessing.windows``), decodes the ``T`` sampled frames of every window in one forward
pass, and resizes / centre-crops each frame to the encoder's input size (deterministic, no
flips). It yields, in order::

    ("meta", windows [N, 2] float64 seconds, duration_s)
    ("frames", first_segment, uint8 [n, T, S, S, 3])     # chunks of consecutive segments
    ...

Only the frames of a few segments are ever held in memory, so an hours-long movie streams
through in constant memory. Normalisation (mean / std, float) happens on the encoder's device.
This module imports no torch: decode workers start in a fraction of a second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from preprocessing.readers import DecodeError, OpenedVideo
from preprocessing.windows import frame_indices, sample_times, segment_windows

CROPS = ("center", "resize")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class SamplingSpec:
    """How segments are cut and frames prepared; recorded in the store's manifest."""
    segment_seconds: float = 5.0
    stride_seconds: float = 5.0
    min_last_seconds: float = 2.5
    frames_per_segment: int = 8
    frame_size: int = 224
    crop: str = "center"            # "center": short side to frame_size, centre crop; "resize": squash
    interpolation: str = "bicubic"  # PIL filter of the resize

    def __post_init__(self):
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {tuple(_RESAMPLE)}, got {self.interpolation!r}")
        if self.frames_per_segment < 1 or self.frame_size < 1:
            raise ValueError("frames_per_segment and frame_size must be positive")


def transform_frame(frame: np.ndarray, spec: SamplingSpec) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[S, S, 3]`` (S = ``spec.frame_size``)."""
    img = Image.fromarray(frame)
    s, resample = spec.frame_size, _RESAMPLE[spec.interpolation]
    if spec.crop == "resize":
        return np.asarray(img.resize((s, s), resample, reducing_gap=3.0))
    w, h = img.size
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    img = img.resize((nw, nh), resample, reducing_gap=3.0)
    left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))  # torchvision's CenterCrop
    return np.asarray(img.crop((left, top, left + s, top + s)))


def plan_windows(video: OpenedVideo, spec: SamplingSpec) -> tuple[np.ndarray, np.ndarray]:
    """``windows [N, 2]`` seconds and the frame indices ``[N, T]`` sampled in each."""
    windows = segment_windows(video.duration, spec.segment_seconds, spec.stride_seconds, spec.min_last_seconds)
    if len(windows) == 0:
        raise DecodeError(f"zero windows: the video lasts {video.duration:.2f} s, shorter than "
                          f"--min_last_seconds {spec.min_last_seconds:g}")
    return windows, frame_indices(video.timestamps, sample_times(windows, spec.frames_per_segment))


def sample_video(reader, path, spec: SamplingSpec, chunk_segments: int = 16) -> Iterator[tuple]:
    """Events ``("meta", windows, duration)`` then ``("frames", start, uint8 [n, T, S, S, 3])``."""
    T, S = spec.frames_per_segment, spec.frame_size
    with reader.open(path) as video:
        windows, idx = plan_windows(video, spec)
        yield "meta", windows, float(video.duration)
        n = len(windows)
        wanted = np.unique(idx)
        cache: dict[int, np.ndarray] = {}
        chunk = np.empty((min(chunk_segments, n), T, S, S, 3), np.uint8)
        seg = start = 0
        for u, frame in zip(wanted.tolist(), video.frames(wanted)):
            cache[u] = transform_frame(frame, spec)
            # Window starts increase, so segment ``seg`` is complete once its last frame arrived.
            while seg < n and idx[seg, -1] <= u:
                chunk[seg - start] = np.stack([cache[i] for i in idx[seg].tolist()])
                seg += 1
                if seg < n:  # frames before the next window's first one are never needed again
                    for i in [i for i in cache if i < idx[seg, 0]]:
                        del cache[i]
                if seg - start == len(chunk) or seg == n:
                    yield "frames", start, chunk[:seg - start]
                    start = seg
                    chunk = np.empty((min(chunk_segments, n - seg), T, S, S, 3), np.uint8) if seg < n else chunk
        if seg < n:
            raise DecodeError(f"the reader returned frames for {seg} of {n} segments")
