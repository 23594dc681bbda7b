"""Decode one video into the prepared frames of its segment windows (runs in the decode workers).

``sample_video`` opens a video once, cuts it into windows from its timestamps and picks the
``T`` frames of every window by the profile's frame rule (``preprocessing.windows``), decodes
them in one forward pass, and runs the worker half of the encoder's transform on each sampled
frame (``preprocessing.transforms``: e.g. a uint8 resize / crop, or LanguageBind's whole float
transform). It yields, in order::

    ("meta", windows [N, 2] float64 seconds, duration_s)
    ("frames", first_segment, [n, T, *transform.shape] transform.dtype)   # chunks of consecutive segments
    ...

The transform of a sampled frame runs in a background thread while the reader decodes on
(``transform_threads``; the decoders and the transforms release the GIL), so a worker with a
spare core hides most of the transform behind the decoding. Only the frames of a few segments
(and ``IN_FLIGHT`` decoded frames) are ever held in memory, so an hours-long movie streams
through in constant memory. This module imports no torch: decode workers start in a fraction
of a second (a transform that needs torch imports it in the worker).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from preprocessing.readers import DecodeError, OpenedVideo
from preprocessing.transforms import FrameTransform
from preprocessing.windows import FRAME_RULES, plan_segments

IN_FLIGHT = 4  # decoded frames waiting for (or in) the transform thread


@dataclass(frozen=True)
class SamplingSpec:
    """How segments are cut, which frames are sampled, and how the workers prepare them."""
    segment_seconds: float = 5.0
    stride_seconds: float = 5.0
    min_last_seconds: float = 2.5
    frames_per_segment: int = 8
    frame_rule: str = "centres"     # preprocessing.windows.FRAME_RULES
    transform: FrameTransform = field(kw_only=True)  # the encoder's (encoder.transform)

    def __post_init__(self):
        if self.frame_rule not in FRAME_RULES:
            raise ValueError(f"frame_rule must be one of {tuple(FRAME_RULES)}, got {self.frame_rule!r}")
        if self.frames_per_segment < 1:
            raise ValueError("frames_per_segment must be positive")


def plan_windows(video: OpenedVideo, spec: SamplingSpec) -> tuple[np.ndarray, np.ndarray]:
    """``windows [N, 2]`` seconds and the frame indices ``[N, T]`` sampled in each."""
    windows, idx = plan_segments(video.timestamps, video.duration, spec.segment_seconds, spec.stride_seconds,
                                 spec.min_last_seconds, spec.frames_per_segment, spec.frame_rule)
    if len(windows) == 0:
        raise DecodeError(f"zero windows: the video lasts {video.duration:.2f} s, shorter than "
                          f"--min_last_seconds {spec.min_last_seconds:g}")
    return windows, idx


def prepared_frames(frames, indices: list[int], prepare, threads: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, prepare(frame))`` in order; with ``threads`` > 0 the frames are prepared in that
    many background threads while ``frames`` goes on decoding (at most ``IN_FLIGHT`` ahead)."""
    if threads <= 0:
        for u, frame in zip(indices, frames):
            yield u, prepare(frame)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="lvmae-transform") as pool:
        pending: deque = deque()
        for u, frame in zip(indices, frames):
            pending.append((u, pool.submit(prepare, frame)))
            while pending and (len(pending) >= IN_FLIGHT or pending[0][1].done()):
                u0, future = pending.popleft()
                yield u0, future.result()
        while pending:
            u0, future = pending.popleft()
            yield u0, future.result()


def sample_video(reader, path, spec: SamplingSpec, chunk_segments: int = 16,
                 transform_threads: int = 1) -> Iterator[tuple]:
    """Events ``("meta", windows, duration)`` then ``("frames", start, [n, T, *shape])``."""
    T, transform = spec.frames_per_segment, spec.transform
    shape, dtype = (T, *transform.shape), np.dtype(transform.dtype)
    with reader.open(path) as video:
        windows, idx = plan_windows(video, spec)
        yield "meta", windows, float(video.duration)
        n = len(windows)
        wanted = np.unique(idx)
        cache: dict[int, np.ndarray] = {}
        chunk = np.empty((min(chunk_segments, n), *shape), dtype)
        seg = start = 0
        for u, prepared in prepared_frames(video.frames(wanted), wanted.tolist(), transform.prepare,
                                           transform_threads):
            cache[u] = prepared
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
                    chunk = np.empty((min(chunk_segments, n - seg), *shape), dtype) if seg < n else chunk
        if seg < n:
            raise DecodeError(f"the reader returned frames for {seg} of {n} segments")
