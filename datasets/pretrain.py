"""Pretraining data: random windows of long videos (paper Sec. 3.3, "dynamic sampling"),
their collate, and the rank-aware length-grouped batch sampler.

Windows. For every item the dataset draws a duration ``U[duration_min, duration_max]`` seconds
(Table 5 / App. 7: up to 256 tokens of 5 s = 1280 s), takes ``n = duration // seconds per
segment`` segments, capped at the video's length and at ``max_len`` (``--num_patches``) and
floored at 2 (a window of fewer segments carries no loss), and a uniform random start. The
same generator then draws the window's mask ``noise`` (``[n]``, for random masking).
``window_sampling="segments"`` draws the number of segments instead, ``n ~ U{2, ..., min(length,
max_len)}`` (integers): every window length a video allows is equally likely. With ``duration``
(default) a draw longer than the video is capped at it, so on videos much shorter than
``duration_max`` most windows are the whole video; ``segments`` keeps crops of every size.

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

Weighted mixes (``WeightedMix``; ``--data_path stores/movies:2 stores/finevideo:1``). Without
weights an epoch's items are the training videos, each once, so a store's share is its share of
the videos. With weights an epoch's items are as many draws as there are training videos, each
from store ``s`` with probability ``w_s / sum(w)`` and, within it, the next video of a (seed,
epoch) random order of the store's videos; item ``i``'s window and mask noise are keyed by
(seed, epoch, ``i``), the draw's position, so a video drawn twice gets two windows.

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
MIX_STREAM = 4  # (2: the sampler's permutation, 3: the validation split)
SHORT_VIDEOS = ("drop", "authors")
WINDOW_SAMPLINGS = ("duration", "segments")
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
                 mask_ratio: float = 0.5, window_sampling: str = "duration",
                 texts: dict[str, int] | None = None):
        if not 0 < duration_min <= duration_max:
            raise ValueError(f"--duration_min {duration_min} / --duration_max {duration_max}: "
                             "need 0 < duration_min <= duration_max")
        if max_len < 2:
            raise ValueError(f"--num_patches must be at least 2, got {max_len}")
        if short_videos not in SHORT_VIDEOS:
            raise ValueError(f"unknown --short_videos {short_videos!r}; choose from {SHORT_VIDEOS}")
        if window_sampling not in WINDOW_SAMPLINGS:
            raise ValueError(f"unknown --window_sampling {window_sampling!r}; choose from {WINDOW_SAMPLINGS}")
        self.window_sampling = window_sampling
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

    # A weighted mix (``WeightedMix``) replaces the epoch's items, one per video, by its draws:
    # training item ``index`` of ``epoch`` is draw ``index``, whose video is ``mix.draws(epoch)``'s.
    mix: "WeightedMix | None" = None

    def __len__(self) -> int:
        return len(self.video_ids) if self.mix is None else self.mix.num_draws

    def video_index(self, index: int, epoch: int | None) -> int:
        """The video of training item ``index`` at ``epoch`` (itself without a mix, and always
        for the validation windows, ``epoch=None``)."""
        if self.mix is None or epoch is None:
            return index
        return int(self.mix.draws(epoch)[index])

    def _rng(self, index: int, epoch: int | None) -> np.random.Generator:
        key = [self.seed, VAL_STREAM, index] if epoch is None else [self.seed, TRAIN_STREAM, epoch, index]
        return np.random.default_rng(key)

    def window(self, index: int, epoch: int | None):
        """``(rng, start, n)``: the window of item ``index`` at ``epoch`` (``n`` segments read
        from the store, before any tiling); ``rng`` continues with the draws that follow (the
        mask noise)."""
        rng = self._rng(index, epoch)  # keyed by the draw, not the video: a video drawn twice gets two windows
        length = int(self.lengths[self.video_index(index, epoch)])
        if self.texts is not None:  # the whole video, or a random window of max_len segments
            n = min(length, self.max_len)
            return rng, int(rng.integers(0, length - n + 1)), n
        if self.window_sampling == "segments":
            n = int(rng.integers(2, max(2, min(length, self.max_len)) + 1))
        else:
            duration = rng.uniform(self.duration_min, self.duration_max)
            n = int(duration // self.seconds_per_segment)
        n = max(2, min(n, length, self.max_len))
        start = int(rng.integers(0, length - n + 1))
        return rng, start, n

    def window_lengths(self, epoch: int | None) -> np.ndarray:
        """``[len(self)]`` tokens of every item's window at ``epoch``, tiling included (reads no
        vectors)."""
        n = np.fromiter((self.window(i, epoch)[2] for i in range(len(self))), dtype=np.int64, count=len(self))
        videos = np.arange(len(self)) if self.mix is None or epoch is None else self.mix.draws(epoch)
        return np.minimum(n * self.repeats[videos], self.max_len)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, None)
        rng, start, n = self.window(index, epoch)
        video = self.video_index(index, epoch)
        vid = self.video_ids[video]
        x = self.store.get(vid, start, start + n)
        if self.repeats[video] > 1:
            x = np.tile(x, (int(self.repeats[video]), 1))[:self.max_len]
        noise = rng.random(len(x), dtype=np.float32)
        item = {"x": torch.from_numpy(x), "noise": torch.from_numpy(noise), "index": index, "video_id": vid}
        if self.texts is not None:
            item["text"] = self.texts[vid]
        return item


class WeightedMix:
    """A weighted mix of stores: each epoch draws ``num_draws`` training items (default: as many
    as the training videos of all stores), each from store ``s`` with probability
    ``weights[s] / sum(weights)`` (independently per draw), whatever the stores' sizes. Within a
    store the videos come in a random order, cycled when the store is drawn more often than it
    has videos (every video of a store is drawn once before any is drawn twice).

    The draws are a pure function of (seed, epoch) (``np.random.default_rng([seed, MIX_STREAM,
    epoch])``), never of the rank or worker, like every other draw of the run; each draw's window
    and mask noise are keyed by its position in the epoch (``PretrainWindows``).
    ``store_of [N]``: the store index of each video (``PretrainWindows.video_ids`` order).
    """

    def __init__(self, store_of: np.ndarray, weights, seed: int = 0, num_draws: int | None = None,
                 names=None):
        self.store_of = np.asarray(store_of, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.weights))]
        if not (np.isfinite(self.weights).all() and (self.weights > 0).all()):
            raise ValueError(f"store weights must be numbers > 0, got {self.weights.tolist()}")
        self.groups = [np.flatnonzero(self.store_of == s) for s in range(len(self.weights))]
        empty = [self.names[s] for s, g in enumerate(self.groups) if not len(g)]
        if empty:
            raise ValueError(f"weighted store {', '.join(empty)} has no training video (all too short to mask, or "
                             "held out for validation); drop it from --data_path")
        self.probabilities = self.weights / self.weights.sum()
        self.num_draws = len(self.store_of) if num_draws is None else int(num_draws)
        self.seed = seed
        self._draws = (None, None)  # (epoch, draws): computed once per epoch

    def draws(self, epoch: int) -> np.ndarray:
        """``[num_draws]`` video indices of ``epoch``'s items, in draw order."""
        if self._draws[0] != epoch:
            rng = np.random.default_rng([self.seed, MIX_STREAM, epoch])
            which = rng.choice(len(self.weights), size=self.num_draws, p=self.probabilities)
            out = np.empty(self.num_draws, dtype=np.int64)
            for s, group in enumerate(self.groups):
                at = np.flatnonzero(which == s)
                out[at] = np.resize(rng.permutation(group), len(at))
            self._draws = (epoch, out)
        return self._draws[1]

    def shares(self, epoch: int) -> dict[str, float]:
        """Realized share of each store among ``epoch``'s draws."""
        counts = np.bincount(self.store_of[self.draws(epoch)], minlength=len(self.weights))
        return {name: float(c) / self.num_draws for name, c in zip(self.names, counts)}

    def summary(self, epochs) -> dict:
        """Per store: weight, probability, training videos and the realized share over ``epochs``."""
        shares = [self.shares(e) for e in epochs]
        return {name: {"weight": float(self.weights[s]), "probability": float(self.probabilities[s]),
                       "videos": int(len(self.groups[s])),
                       "realized_share": float(np.mean([sh[name] for sh in shares])) if shares else None}
                for s, name in enumerate(self.names)}


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
