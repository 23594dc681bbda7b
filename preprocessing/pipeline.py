"""The extraction loop: decode workers feed segments, the encoder embeds them in batches that
mix videos, and each video is written to the store once all its segments are embedded.

    decode workers ──frames──▶ SegmentQueue ──batch of B segments──▶ encoder ──▶ per-video vectors
    (preprocessing.pool)        (any videos)                                       │ all N done?
                                                                                   ▼
                                                               StoreWriter.add / .fail

A video is written only after its worker reported the end of the video *and* every one of
its segments is embedded; a decode failure (or crash, or timeout) at any point drops whatever
was queued or embedded for it and records the reason instead. Memory is bounded: the main
process stops reading from the workers while a full batch is waiting, and workers block on
their pipes meanwhile. A partial batch is embedded when the decoders fall silent for
``IDLE_FLUSH_S`` (and at the end), so a slow or stuck video never holds back finished ones.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from datasets.store import StoreError, StoreWriter
from preprocessing.decode import SamplingSpec
from preprocessing.pool import DecodePool, Job

IDLE_FLUSH_S = 0.5  # a partial batch is encoded when no decoder has sent anything for this long


@dataclass
class _Video:
    job: Job
    windows: np.ndarray | None = None
    duration: float = 0.0
    vectors: np.ndarray | None = None
    encoded: int = 0
    decoded: bool = False
    failed: bool = False


@dataclass
class SegmentQueue:
    """Decoded segments waiting for the encoder, in arrival order, from any number of videos."""
    chunks: deque = field(default_factory=deque)  # (video, first segment, uint8 [n, T, S, S, 3])
    size: int = 0

    def push(self, video: _Video, start: int, frames: np.ndarray) -> None:
        self.chunks.append((video, start, frames))
        self.size += len(frames)

    def drop(self, video: _Video) -> None:
        kept = deque(c for c in self.chunks if c[0] is not video)
        self.size = sum(len(c[2]) for c in kept)
        self.chunks = kept

    def take(self, n: int) -> tuple[np.ndarray, list[tuple[_Video, int, int]]]:
        """Up to ``n`` segments: frames ``[m, T, S, S, 3]`` and ``(video, start, count)`` parts."""
        frames, parts, taken = [], [], 0
        while self.chunks and taken < n:
            video, start, chunk = self.chunks.popleft()
            k = min(n - taken, len(chunk))
            if k < len(chunk):
                self.chunks.appendleft((video, start + k, chunk[k:]))
            frames.append(chunk[:k])
            parts.append((video, start, k))
            taken += k
        self.size -= taken
        return (np.concatenate(frames) if len(frames) > 1 else frames[0]), parts


class Extraction:
    """One process's extraction of a list of videos into ``writer``."""

    def __init__(self, encoder, writer: StoreWriter, spec: SamplingSpec, reader: str, num_workers: int = 1,
                 batch_size: int = 64, commit_interval: float = 300.0, decode_timeout: float = 600.0,
                 progress: bool = True, decoder_threads: int | None = None):
        self.encoder, self.writer, self.spec, self.reader = encoder, writer, spec, reader
        self.decoder_threads = decoder_threads  # per worker; None: the cores left to each worker
        self.num_workers, self.batch_size = num_workers, batch_size
        self.commit_interval, self.decode_timeout = commit_interval, decode_timeout
        self.progress = progress
        self.counts = {"done": 0, "failed": 0, "segments": 0}

    def run(self, videos) -> dict:
        """``videos``: DataFrame with ``video_id``, ``path``. Returns the run's counts and rates."""
        if len(videos) == 0:  # everything already committed: no workers to start
            return dict(self.counts, decoder_restarts=0, seconds=0.0, videos_per_s=0.0, segments_per_s=0.0)
        jobs = (Job(i, vid, path) for i, (vid, path) in enumerate(zip(videos.video_id, videos.path)))
        self._queue = SegmentQueue()
        self._videos: dict[int, _Video] = {}
        self._last_commit = self._start = time.monotonic()
        chunk = max(1, min(self.batch_size, 16))
        with DecodePool(self.num_workers, self.reader, self.spec, chunk, self.decode_timeout,
                        self.decoder_threads) as pool, \
                tqdm(total=len(videos), unit="video", disable=None if self.progress else True,
                     dynamic_ncols=True) as bar:
            self._bar = bar
            exhausted = False
            while True:
                for worker in pool.idle():
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    self._videos[job.job_id] = _Video(job)
                    pool.submit(worker, job)
                decoding = pool.num_busy > 0
                if self._queue.size >= self.batch_size or (self._queue.size and not decoding):
                    self._encode_batch()
                elif not decoding and exhausted:
                    break
                else:
                    events = pool.events(timeout=IDLE_FLUSH_S if self._queue.size else 1.0)
                    if not events and self._queue.size:
                        # The decoders are slow (a long or stuck video): embed what is waiting
                        # rather than hold finished videos back for a full batch.
                        self._encode_batch()
                    for event in events:
                        self._handle(event)
            self.counts["decoder_restarts"] = pool.num_restarts
        elapsed = time.monotonic() - self._start
        return dict(self.counts, seconds=round(elapsed, 3),
                    videos_per_s=round((self.counts["done"] + self.counts["failed"]) / max(elapsed, 1e-9), 3),
                    segments_per_s=round(self.counts["segments"] / max(elapsed, 1e-9), 3))

    # -- events ----------------------------------------------------------------------------------
    def _handle(self, event) -> None:
        kind, job = event[0], event[1]
        video = self._videos.get(job.job_id)
        if video is None:  # already failed and forgotten
            return
        if kind == "meta":
            video.windows, video.duration = event[2], event[3]
            video.vectors = np.empty((len(video.windows), self.encoder.dim), np.float32)
        elif kind == "frames":
            self._queue.push(video, event[2], event[3])
        elif kind == "done":
            video.decoded = True
            self._maybe_finish(video)
        elif kind == "failed":
            self._fail(video, event[2])

    def _encode_batch(self) -> None:
        frames, parts = self._queue.take(self.batch_size)
        vectors = self.encoder.encode_video(frames).numpy()
        offset = 0
        for video, start, count in parts:
            video.vectors[start:start + count] = vectors[offset:offset + count]
            video.encoded += count
            offset += count
        for video in {id(v): v for v, _, _ in parts}.values():
            self._maybe_finish(video)

    # -- results ---------------------------------------------------------------------------------
    def _maybe_finish(self, video: _Video) -> None:
        if not video.decoded or video.failed or video.encoded < len(video.windows):
            return
        job = video.job
        try:
            self.writer.add(job.video_id, video.vectors, video.duration, source=job.path, times=video.windows)
        except StoreError as e:  # e.g. a non-finite embedding: recorded, never written
            self._fail(video, f"encoder output rejected: {e}")
            return
        self.counts["done"] += 1
        self.counts["segments"] += len(video.windows)
        self._forget(video)

    def _fail(self, video: _Video, reason: str) -> None:
        video.failed = True
        self._queue.drop(video)
        self.writer.fail(video.job.video_id, video.job.path, reason)
        self.counts["failed"] += 1
        if self.progress:
            tqdm.write(f"failed: {video.job.video_id} ({video.job.path}): {reason}")
        self._forget(video)

    def _forget(self, video: _Video) -> None:
        del self._videos[video.job.job_id]
        elapsed = max(time.monotonic() - self._start, 1e-9)
        self._bar.set_postfix(seg_per_s=f"{self.counts['segments'] / elapsed:.1f}", failed=self.counts["failed"],
                              refresh=False)
        self._bar.update(1)
        if time.monotonic() - self._last_commit >= self.commit_interval:
            self.writer.commit()
            self._last_commit = time.monotonic()
