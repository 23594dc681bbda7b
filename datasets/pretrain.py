"""Pretraining data: random windows of long videos (paper Sec. 3.3, "dynamic sampling"),
their collate, and the rank-aware length-grouped batch sampler.

Windows. For every item the dataset draws a duration ``U[duration_min, duration_max]`` seconds
(Table 5 / App. 7: up to 256 tokens of 5 s = 1280 s), takes ``n = duration // seconds per
segment`` segments, capped at the video's length and at ``max_len`` (``--num_patches``) and
floored at 2 (a window of fewer segments carries no loss), and a uniform random start. The
same generator then draws the window's mask ``noise`` (``[n]``, for random masking).

Short videos (``short_videos``; the paper is silent). ``drop`` (default): videos of fewer than 2
segments are skipped. ``authors`` (``data/CombinedData.py`` of the authors' code): a video with
``n * (1 - mask_ratio) < 1`` segments is not used (their loader swaps it for a random other
video), and the window of a video of fewer than 5 segments is tiled 3 times (Python list
repetition: ``[a, b] * 3 = [a, b, a, b, a, b]``, the copies at positions after the original);
their 8x tiling of videos under 2 segments can never run, since such a video always fails the
first rule. The tiled window is capped at ``max_len``.

Paired texts (the contrastive objectives; ``texts``: video id -> row of a text database). A
video-level text pairs with the whole video: the window is all of it up to ``max_len`` segments
(a longer video: a uniform random contiguous window of ``max_len``, so its text may describe
segments outside the window -- a limitation), one-segment videos included; videos without a
text are skipped (``num_without_text``); items carry their ``text`` row. ``short_videos`` and the
random durations apply only without texts.

Reproducibility. Every random number comes from ``np.random.default_rng([seed, 0, epoch,
index])`` (validation: ``[seed, 1, index]``, fixed for the whole run): a pure function of
(seed, epoch, sample index), never of the rank, the worker or hidden global state. So a resumed
run and a run on any number of ranks see exactly the same windows and masks, and the sampler
can compute every window's length without reading a single vector.

Batches. An optimizer step consumes ``batch_size x accum_iter x world_size`` items (the
effective batch). The sampler forms the effective batches first, from a (seed, epoch)
permutation padded by repetition to a whole number of steps, grouped by window length within
mega-batches when asked; then splits each into ``accum_iter`` micro-batches of similar lengths
and each micro-batch across the ranks. The items of an optimizer step are therefore the same
whatever the world size or accumulation, every rank gets the same number of batches (DDP
never waits for a rank that ran out), and every item is seen at least once per epoch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from datasets.store import EmbeddingStore

TRAIN_STREAM, VAL_STREAM = 0, 1
SHORT_VIDEOS = ("drop", "authors")
# The authors' CombinedData: (videos with fewer than this many segments, window tiled this many times).
AUTHORS_REPEATS = ((2, 8), (5, 3))


def authors_repeats(lengths: np.ndarray) -> np.ndarray:
    """Times the authors' loader tiles the window of a video of ``lengths`` segments."""
    reps = np.ones(len(lengths), dtype=np.int64)
    for below, times in reversed(AUTHORS_REPEATS):
        reps[lengths < below] = times
    return reps


class PretrainWindows(Dataset):
    """Random windows of the videos of ``store`` (``video_ids`` selects a subset).

    ``dataset[(index, epoch)]`` is a training item, keyed by (seed, epoch, index);
    ``dataset[index]`` (or ``epoch=None``) is the fixed validation window of ``index``.
    Items are dicts: ``x`` float32 ``[n, D]``, ``noise`` float32 ``[n]``, ``index``, ``video_id``.
    Videos too short to mask are skipped (``num_skipped``); ``short_videos`` (module docstring)
    chooses the rule.
    """

    def __init__(self, store: EmbeddingStore, video_ids=None, *, seed: int = 0, duration_min: float = 10.0,
                 duration_max: float = 1280.0, max_len: int = 256, short_videos: str = "drop",
                 mask_ratio: float = 0.5, texts: dict[str, int] | None = None):
        if not 0 < duration_min <= duration_max:
            raise ValueError(f"--duration_min {duration_min} / --duration_max {duration_max}: "
                             "need 0 < duration_min <= duration_max")
        if max_len < 2:
            raise ValueError(f"--num_patches must be at least 2, got {max_len}")
        if short_videos not in SHORT_VIDEOS:
            raise ValueError(f"unknown --short_videos {short_videos!r}; choose from {SHORT_VIDEOS}")
        self.store = store
        ids = list(store.video_ids if video_ids is None else video_ids)
        lengths = store.lengths(ids)
        # As the authors' loader computes it (Python floats), when asked.
        keep = lengths * (1.0 - mask_ratio) >= 1.0 if short_videos == "authors" else lengths >= 2
        self.texts = texts
        self.num_without_text = 0
        if texts is not None:  # paired: every video with a text and a segment (module docstring)
            has_text = np.fromiter((v in texts for v in ids), dtype=bool, count=len(ids))
            self.num_without_text = int((~has_text).sum())
            keep = has_text & (lengths >= 1)
            short_videos = "drop"
        self.short_videos = short_videos
        self.num_skipped = int((~keep).sum())
        self.video_ids = [v for v, k in zip(ids, keep) if k]
        self.lengths = lengths[keep]
        self.repeats = authors_repeats(self.lengths) if short_videos == "authors" else np.ones_like(self.lengths)
        self.seed, self.duration_min, self.duration_max, self.max_len = seed, duration_min, duration_max, max_len
        # A window of t seconds spans t / stride segments (stride = segment length unless the
        # store's segments overlap).
        self.seconds_per_segment = float(store.manifest["stride_seconds"])

    def __len__(self) -> int:
        return len(self.video_ids)

    def _rng(self, index: int, epoch: int | None) -> np.random.Generator:
        key = [self.seed, VAL_STREAM, index] if epoch is None else [self.seed, TRAIN_STREAM, epoch, index]
        return np.random.default_rng(key)

    def window(self, index: int, epoch: int | None):
        """``(rng, start, n)``: the window of item ``index`` at ``epoch`` (``n`` segments read
        from the store, before any tiling); ``rng`` continues with the draws that follow (the
        mask noise)."""
        rng = self._rng(index, epoch)
        length = int(self.lengths[index])
        if self.texts is not None:  # the whole video, or a random window of max_len segments
            n = min(length, self.max_len)
            return rng, int(rng.integers(0, length - n + 1)), n
        duration = rng.uniform(self.duration_min, self.duration_max)
        n = int(duration // self.seconds_per_segment)
        n = max(2, min(n, length, self.max_len))
        start = int(rng.integers(0, length - n + 1))
        return rng, start, n

    def window_lengths(self, epoch: int | None) -> np.ndarray:
        """``[len(self)]`` tokens of every item's window at ``epoch``, tiling included (reads no
        vectors)."""
        n = np.fromiter((self.window(i, epoch)[2] for i in range(len(self))), dtype=np.int64, count=len(self))
        return np.minimum(n * self.repeats, self.max_len)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, None)
        rng, start, n = self.window(index, epoch)
        vid = self.video_ids[index]
        x = self.store.get(vid, start, start + n)
        if self.repeats[index] > 1:
            x = np.tile(x, (int(self.repeats[index]), 1))[:self.max_len]
        noise = rng.random(len(x), dtype=np.float32)
        item = {"x": torch.from_numpy(x), "noise": torch.from_numpy(noise), "index": index, "video_id": vid}
        if self.texts is not None:
            item["text"] = self.texts[vid]
        return item


def collate_windows(items: list[dict]) -> dict:
    """Pad to the batch maximum: ``x`` [B, L, D] (zeros at padding), ``lengths`` [B],
    ``noise`` [B, L], ``index`` [B], ``video_id`` list of B strings (and ``text`` [B] when the
    items have a text row)."""
    batch = {"x": pad_sequence([it["x"] for it in items], batch_first=True),
            "lengths": torch.tensor([len(it["x"]) for it in items], dtype=torch.long),
            "noise": pad_sequence([it["noise"] for it in items], batch_first=True),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
            "video_id": [it["video_id"] for it in items]}
    if items and "text" in items[0]:
        batch["text"] = torch.tensor([it["text"] for it in items], dtype=torch.long)
    return batch


class StepBatchSampler(Sampler):
    """Yields this rank's micro-batches of ``(index, epoch)`` keys, deterministic by (seed, epoch).

    ``window_lengths(epoch) -> [N]`` gives the window length of every item (for grouping).
    ``len(sampler)`` = micro-batches per rank per epoch = optimizer steps x ``accum_iter``.
    """

    def __init__(self, window_lengths, num_items: int, batch_size: int, accum_iter: int = 1, world_size: int = 1,
                 rank: int = 0, seed: int = 0, group_by_length: bool = True, mega_batch: int = 50):
        if num_items < 1:
            raise ValueError("no training video is long enough to mask (see --short_videos); nothing to pretrain on")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.window_lengths = window_lengths
        self.num_items, self.batch_size, self.accum_iter = num_items, batch_size, accum_iter
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.group_by_length, self.mega_batch = group_by_length, mega_batch
        self.step_size = batch_size * accum_iter * world_size
        self.num_steps = -(-num_items // self.step_size)
        self.epoch = 0
        self._lengths = (None, None)  # (epoch, window lengths): computed once per epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_steps * self.accum_iter

    def lengths(self, epoch: int) -> np.ndarray:
        """``[num_items]`` window lengths at ``epoch``."""
        if self._lengths[0] != epoch:
            self._lengths = (epoch, np.asarray(self.window_lengths(epoch)))
        return self._lengths[1]

    def step_lengths(self, epoch: int) -> np.ndarray:
        """``[num_steps, step_size]`` window lengths of every optimizer step's items (all ranks):
        the plan the loss normalization reads before the epoch starts."""
        return self.lengths(epoch)[self.steps(epoch)]

    def steps(self, epoch: int) -> np.ndarray:
        """``[num_steps, step_size]`` item indices of every optimizer step (all ranks)."""
        rng = np.random.default_rng([self.seed, 2, epoch])
        order = np.resize(rng.permutation(self.num_items), self.num_steps * self.step_size)
        if self.group_by_length:
            lengths = self.lengths(epoch)
            chunk = self.mega_batch * self.step_size
            for s in range(0, len(order), chunk):
                part = order[s:s + chunk]
                order[s:s + chunk] = part[np.argsort(-lengths[part], kind="stable")]
            steps = order.reshape(self.num_steps, self.step_size)
            return steps[rng.permutation(self.num_steps)]
        return order.reshape(self.num_steps, self.step_size)

    def __iter__(self):
        epoch = self.epoch
        micro = self.batch_size * self.world_size
        for step in self.steps(epoch):
            for a in range(self.accum_iter):
                # Strided split: with grouped (sorted) lengths every rank gets similar work.
                mine = step[a * micro:(a + 1) * micro][self.rank::self.world_size]
                yield [(int(i), epoch) for i in mine]


def eval_batches(lengths: np.ndarray, batch_size: int, world_size: int = 1, rank: int = 0) -> list[list[int]]:
    """This rank's share (every ``world_size``-th item, no padding: evaluation sums are reduced
    over ranks) of the fixed validation windows, in batches of similar length."""
    mine = np.arange(len(lengths))[rank::world_size]
    mine = mine[np.argsort(-lengths[mine], kind="stable")]
    return [[int(i) for i in mine[s:s + batch_size]] for s in range(0, len(mine), batch_size)]


def split_validation(video_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(train, val)``: a seeded ``fraction`` of the videos (at least one when > 0) held out."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--val_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or len(video_ids) < 2:
        return list(video_ids), []
    num_val = min(len(video_ids) - 1, max(1, round(fraction * len(video_ids))))
    held = np.zeros(len(video_ids), dtype=bool)
    held[np.random.default_rng([seed, 3]).permutation(len(video_ids))[:num_val]] = True
    return [v for v, h in zip(video_ids, held) if not h], [v for v, h in zip(video_ids, held) if h]
