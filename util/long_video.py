"""Frozen LV-MAE features of videos of any length (the sliding-window policy).

The encoder attends over at most ``max_len`` segments. A longer video is covered by windows of
``max_len`` segments every ``stride`` segments (default ``max_len // 2``; the last window is
aligned to the video's end). Every segment is *owned* by exactly one window, the one whose
centre is nearest to it (ties: the earlier window), and takes its token from that window, so
in the aggregate every segment appears exactly once and far from a window edge whenever
possible. The video's ``[CLS]`` is the mean of its windows' ``[CLS]`` tokens weighted by the
number of segments each window owns. Videos within ``max_len`` use one window: their features
are exactly ``model.forward_features``.

Windows of all videos are batched together, sorted by length so padding stays low.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm


def window_starts(n: int, max_len: int, stride: int | None = None) -> np.ndarray:
    """Start indices of the windows covering ``n`` segments."""
    if n <= max_len:
        return np.zeros(1, dtype=np.int64)
    stride = stride or max(1, max_len // 2)
    if not 0 < stride <= max_len:
        raise ValueError(f"window stride must be in [1, {max_len}], got {stride}")
    starts = np.arange(0, n - max_len + 1, stride, dtype=np.int64)
    if starts[-1] != n - max_len:
        starts = np.append(starts, n - max_len)
    return starts


def segment_owners(n: int, starts: np.ndarray, max_len: int) -> np.ndarray:
    """``[n]`` index of the window owning each segment: the covering window with the nearest
    centre (argmin picks the earlier window on ties)."""
    seg = np.arange(n)[:, None]
    width = np.minimum(max_len, n)
    centre = starts[None] + (width - 1) / 2.0
    covers = (seg >= starts[None]) & (seg < starts[None] + width)
    dist = np.where(covers, np.abs(seg - centre), np.inf)
    return dist.argmin(axis=1)


@dataclass
class VideoFeatures:
    """Features of a list of videos. ``tokens`` holds every segment's token back to back
    (``offsets[i]:offsets[i+1]`` belong to video ``i``); ``cls`` is ``[V, E]`` (zeros for the raw
    backbone, which has no ``[CLS]``)."""
    video_ids: list[str]
    cls: np.ndarray
    tokens: np.ndarray
    offsets: np.ndarray

    def tokens_of(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def mean(self) -> np.ndarray:
        """``[V, E]`` mean over each video's segment tokens (never ``[CLS]``, never padding)."""
        lengths = np.diff(self.offsets)
        sums = np.add.reduceat(self.tokens, self.offsets[:-1], axis=0) if len(lengths) else self.tokens[:0]
        return sums / np.maximum(lengths, 1)[:, None]


@torch.no_grad()
def encode_videos(model, store, video_ids, batch_size: int = 64, device="cpu", stride: int | None = None,
                  amp_dtype: torch.dtype | None = None, progress: bool = True) -> VideoFeatures:
    """LV-MAE features of ``video_ids`` from ``store`` (``model`` is used frozen, in eval mode)."""
    model.eval()
    max_len = model.max_len
    video_ids = list(video_ids)
    lengths = store.lengths(video_ids)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    windows = []  # (video index, start, stop, window index)
    owners = []
    for v, n in enumerate(lengths):
        starts = window_starts(int(n), max_len, stride)
        owners.append(segment_owners(int(n), starts, max_len))
        windows.extend((v, int(s), int(min(s + max_len, n)), w) for w, s in enumerate(starts))
    order = sorted(range(len(windows)), key=lambda i: windows[i][2] - windows[i][1])
    E = model.embed_dim
    cls_acc = np.zeros((len(video_ids), E), dtype=np.float64)
    tokens = np.zeros((int(offsets[-1]), E), dtype=np.float32)
    device_type = torch.device(device).type
    bar = tqdm(total=len(order), desc="LV-MAE features", unit="win", disable=None if progress else True,
               leave=False)  # bars on a terminal only, never in a redirected log
    for b in range(0, len(order), batch_size):
        batch = [windows[i] for i in order[b:b + batch_size]]
        L = max(stop - start for _, start, stop, _ in batch)
        x = np.zeros((len(batch), L, store.dim), dtype=np.float32)
        for j, (v, start, stop, _) in enumerate(batch):
            x[j, :stop - start] = store.get(video_ids[v], start, stop)
        lens = torch.tensor([stop - start for _, start, stop, _ in batch])
        with torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            out, _ = model.forward_features(torch.from_numpy(x).to(device), lens.to(device))
        out = out.float().cpu().numpy()
        for j, (v, start, stop, w) in enumerate(batch):
            own = owners[v][start:stop] == w
            tokens[offsets[v] + start + np.flatnonzero(own)] = out[j, 1:1 + stop - start][own]
            cls_acc[v] += own.sum() * out[j, 0]
        bar.update(len(batch))
    bar.close()
    cls = (cls_acc / np.maximum(lengths, 1)[:, None]).astype(np.float32)
    return VideoFeatures(video_ids, cls, tokens, offsets)


def raw_features(store, video_ids) -> VideoFeatures:
    """The raw segment embeddings as ``VideoFeatures`` (the paper's "Baseline" rows)."""
    video_ids = list(video_ids)
    lengths = store.lengths(video_ids)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.zeros((int(offsets[-1]), store.dim), dtype=np.float32)
    for v, vid in enumerate(video_ids):
        tokens[offsets[v]:offsets[v + 1]] = store.get(vid)
    return VideoFeatures(video_ids, np.zeros((len(video_ids), store.dim), np.float32), tokens, offsets)
