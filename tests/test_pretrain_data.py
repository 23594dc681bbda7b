"""Pretraining windows, collate, the step batch sampler, the validation split, the lr schedule."""
import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datasets.pretrain import (PretrainWindows, StepBatchSampler, collate_windows, eval_batches,
                               split_validation)
from datasets.store import EmbeddingStore
from pretrain_fixtures import write_store
from util.lr_sched import adjust_learning_rate, cosine_lr, scheduled_lr

LENGTHS = [1, 2, 3, 7, 40, 300, 600, 1, 12, 255, 256, 257, 4]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return EmbeddingStore(write_store(tmp_path_factory.mktemp("store"), LENGTHS))


def test_short_videos_are_skipped_and_counted(store):
    ds = PretrainWindows(store)
    assert ds.num_skipped == 2 and len(ds) == len(LENGTHS) - 2
    assert "v000" not in ds.video_ids and "v007" not in ds.video_ids


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_short_videos_the_authors_way(store, ratio):
    """The authors' CombinedData: a video with n * (1 - mask_ratio) < 1 is never used (they
    draw another video instead), and the window of a video of fewer than 5 segments is the
    Python list of its segments repeated 3 times (``[a, b] * 3``), masked as one sequence."""
    ds = PretrainWindows(store, short_videos="authors", mask_ratio=ratio, seed=1)
    used = [f"v{i:03d}" for i, n in enumerate(LENGTHS) if n * (1 - ratio) >= 1]
    assert ds.video_ids == used and ds.num_skipped == len(LENGTHS) - len(used)
    for epoch in (0, None):
        lengths = ds.window_lengths(epoch)
        for i, vid in enumerate(ds.video_ids):
            item = ds[(i, epoch)] if epoch is not None else ds[i]
            _, start, n = ds.window(i, epoch)
            rows = list(store.get(vid, start, start + n))
            authors = rows * 3 if ds.lengths[i] < 5 else rows
            np.testing.assert_array_equal(item["x"].numpy(), np.stack(authors))
            assert len(item["x"]) == len(item["noise"]) == lengths[i]
    short = [i for i, n in enumerate(ds.lengths) if n < 5]
    assert short and all(ds.window_lengths(0)[i] == 3 * ds.lengths[i] for i in short)  # whole video, tiled
    # the default keeps videos of 2+ segments and never tiles
    default = PretrainWindows(store, mask_ratio=ratio)
    assert default.num_skipped == 2 and all(len(default[(i, 0)]["x"]) <= default.lengths[i] for i in range(len(default)))
    with pytest.raises(ValueError, match="--short_videos"):
        PretrainWindows(store, short_videos="repeat")


@pytest.mark.parametrize("max_len", [256, 32])
def test_window_bounds_and_caps(store, max_len):
    ds = PretrainWindows(store, seed=3, max_len=max_len)
    for epoch in range(4):
        for i in range(len(ds)):
            _, start, n = ds.window(i, epoch)
            length = ds.lengths[i]
            assert 2 <= n <= min(length, max_len)
            assert 0 <= start and start + n <= length
            item = ds[(i, epoch)]
            assert item["x"].shape == (n, 8) and item["noise"].shape == (n,)
            np.testing.assert_array_equal(item["x"].numpy(), store.get(ds.video_ids[i], start, start + n))


def test_window_duration_is_uniform_in_seconds(tmp_path):
    """n = duration // 5 s for duration ~ U[10, 1280] s on videos long enough to hold it."""
    ds = PretrainWindows(EmbeddingStore(write_store(tmp_path, [400] * 3)), seed=0, max_len=1000)
    n = np.concatenate([ds.window_lengths(e) for e in range(600)])
    assert n.min() >= 2 and n.max() <= 256
    assert abs(n.mean() - (10 + 1280) / 2 / 5) < 6  # 1800 draws: std of the mean ~1.7
    assert (n < 64).mean() == pytest.approx((64 * 5 - 10) / 1270, abs=0.05)
    narrow = PretrainWindows(ds.store, duration_min=50, duration_max=54.9)
    assert set(narrow.window_lengths(0)) == {10}
    capped = PretrainWindows(ds.store, max_len=16)
    assert capped.window_lengths(1).max() == 16


def test_window_segments_are_uniform_in_segments(tmp_path):
    """--window_sampling segments: n ~ U{2, ..., min(length, max_len)}, every length equally likely
    (the duration draw on 40-segment videos gives the whole video ~85% of the time)."""
    ds_store = EmbeddingStore(write_store(tmp_path, [40, 40, 7]))
    seg = PretrainWindows(ds_store, seed=0, window_sampling="segments")
    n = np.stack([seg.window_lengths(e) for e in range(1500)])  # [epochs, videos]
    for col, hi in ((0, 40), (2, 7)):
        counts = Counter(n[:, col].tolist())
        assert set(counts) == set(range(2, hi + 1))
        expected = len(n) / (hi - 1)
        assert max(abs(c - expected) for c in counts.values()) < 5 * math.sqrt(expected)
    assert abs(n[:, :2].mean() - 21) < 0.6  # 3000 draws, std of the mean ~0.2
    dur = np.stack([PretrainWindows(ds_store, seed=0).window_lengths(e) for e in range(200)])
    assert (dur[:, 0] == 40).mean() > 0.8 and (n[:, 0] == 40).mean() < 0.06
    capped = PretrainWindows(ds_store, seed=0, window_sampling="segments", max_len=16)
    assert set(np.concatenate([capped.window_lengths(e) for e in range(300)]).tolist()) == set(range(2, 17))
    # keyed like the duration draw: same (seed, epoch, index), same window and noise
    again = PretrainWindows(ds_store, seed=0, window_sampling="segments")
    for key in [(1, 5), (0, 0), (2, 9)]:
        assert torch.equal(seg[key]["x"], again[key]["x"]) and torch.equal(seg[key]["noise"], again[key]["noise"])
        _, start, k = seg.window(*key)
        assert 0 <= start <= ds_store.lengths([seg.video_ids[key[0]]])[0] - k
    with pytest.raises(ValueError, match="--window_sampling"):
        PretrainWindows(ds_store, window_sampling="frames")


def test_windows_are_keyed_by_seed_epoch_index(store):
    a, b = PretrainWindows(store, seed=1), PretrainWindows(store, seed=1)
    keys = [(i, e) for e in range(3) for i in range(len(a))]
    first = {k: a[k] for k in keys}
    for k in reversed(keys):  # order of access (worker, rank) does not matter
        item = b[k]
        assert torch.equal(item["x"], first[k]["x"]) and torch.equal(item["noise"], first[k]["noise"])
    assert not np.array_equal(a.window_lengths(0), a.window_lengths(1))
    assert not np.array_equal(a.window_lengths(0), PretrainWindows(store, seed=2).window_lengths(0))
    # validation windows are fixed: the same whatever the epoch, and not a training epoch's
    assert np.array_equal(a.window_lengths(None), b.window_lengths(None))
    assert torch.equal(a[4]["noise"], b[4]["noise"])


def test_collate_pads_to_batch_maximum(store):
    ds = PretrainWindows(store, duration_min=10, duration_max=60)
    items = [ds[(i, 0)] for i in range(5)]
    batch = collate_windows(items)
    lengths = [len(it["x"]) for it in items]
    assert batch["x"].shape == (5, max(lengths), 8) and batch["noise"].shape == (5, max(lengths))
    assert batch["lengths"].tolist() == lengths
    assert batch["video_id"] == [ds.video_ids[i] for i in range(5)] and batch["index"].tolist() == list(range(5))
    for b, it in enumerate(items):
        assert torch.equal(batch["x"][b, :lengths[b]], it["x"])
        assert not batch["x"][b, lengths[b]:].any()


def _epoch(lengths, batch_size, accum, world, group, seed=0, epoch=0, mega_batch=4):
    """Per rank: the list of micro-batches (index lists) of one epoch."""
    out = []
    for r in range(world):
        s = StepBatchSampler(lambda e: lengths, len(lengths), batch_size, accum, world, r, seed=seed,
                             group_by_length=group, mega_batch=mega_batch)
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        assert all(e == epoch for b in batches for _, e in b)
        out.append([[i for i, _ in b] for b in batches])
    return out


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("world,batch_size,accum", [(1, 5, 1), (2, 3, 2), (3, 4, 1), (4, 1, 3)])
def test_sampler_covers_every_item_with_equal_batches(group, world, batch_size, accum):
    lengths = np.random.default_rng(0).integers(2, 200, size=37)
    ranks = _epoch(lengths, batch_size, accum, world, group)
    assert len({len(r) for r in ranks}) == 1  # every rank the same number of batches
    assert all(len(b) == batch_size for r in ranks for b in r)
    seen = Counter(i for r in ranks for b in r for i in b)
    assert set(seen) == set(range(37))  # every item at least once per epoch
    step = batch_size * accum * world
    assert sum(seen.values()) == math.ceil(37 / step) * step  # padding only completes the last step
    assert max(seen.values()) - min(seen.values()) <= 1


@pytest.mark.parametrize("group", [True, False])
def test_step_items_do_not_depend_on_world_size_or_accumulation(group):
    """The items of each optimizer step are the same for every split of the effective batch of 8."""
    lengths = np.random.default_rng(1).integers(2, 200, size=45)
    steps = {}
    for world, batch_size, accum in [(1, 8, 1), (2, 4, 1), (1, 4, 2), (2, 2, 2), (4, 1, 2)]:
        ranks = _epoch(lengths, batch_size, accum, world, group)
        per_step = [sorted(i for r in ranks for b in r[s * accum:(s + 1) * accum] for i in b)
                    for s in range(len(ranks[0]) // accum)]
        steps[(world, batch_size, accum)] = per_step
    assert len({str(v) for v in steps.values()}) == 1


def test_sampler_is_deterministic_by_seed_and_epoch():
    lengths = np.random.default_rng(2).integers(2, 200, size=50)
    assert _epoch(lengths, 4, 1, 2, True) == _epoch(lengths, 4, 1, 2, True)
    assert _epoch(lengths, 4, 1, 2, True) != _epoch(lengths, 4, 1, 2, True, epoch=1)
    assert _epoch(lengths, 4, 1, 2, True) != _epoch(lengths, 4, 1, 2, True, seed=1)


def test_grouping_by_length_reduces_padding():
    lengths = np.random.default_rng(3).integers(2, 257, size=400)

    def padded(group):
        (batches,) = _epoch(lengths, 8, 1, 1, group, mega_batch=50)
        return sum(len(b) * lengths[b].max() for b in map(np.array, batches))
    real = lengths.sum()
    grouped, plain = padded(True), padded(False)
    assert grouped < plain
    assert (grouped - real) / grouped < 0.05 and (plain - real) / plain > 0.3


def test_eval_batches_partition_items_across_ranks():
    lengths = np.random.default_rng(4).integers(2, 100, size=23)
    parts = [eval_batches(lengths, 4, 3, r) for r in range(3)]
    flat = sorted(i for p in parts for b in p for i in b)
    assert flat == list(range(23))  # each item exactly once: no padding in evaluation
    for p in parts:
        order = [lengths[i] for b in p for i in b]
        assert order == sorted(order, reverse=True)


def test_split_validation_is_seeded_and_disjoint():
    ids = [f"v{i}" for i in range(100)]
    train, val = split_validation(ids, 0.1, seed=0)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert split_validation(ids, 0.1, seed=0) == (train, val)
    assert split_validation(ids, 0.1, seed=1)[1] != val
    assert split_validation(ids, 0.0, seed=0) == (ids, [])
    assert len(split_validation(ids[:3], 0.01, seed=0)[1]) == 1
    with pytest.raises(ValueError, match="--val_fraction"):
        split_validation(ids, 1.0, seed=0)


def test_cosine_schedule_values():
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_epochs=40, epochs=150)
    assert cosine_lr(0, **kw) == 0
    assert cosine_lr(20, **kw) == pytest.approx(5e-4)
    assert cosine_lr(40, **kw) == pytest.approx(1e-3)
    assert cosine_lr(95, **kw) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert cosine_lr(150, **kw) == pytest.approx(1e-5)
    assert cosine_lr(40.5, **kw) < cosine_lr(40.25, **kw)  # decays within an epoch
    assert cosine_lr(3, 1e-3, 0, 0, 10) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.3)))
    opt = SimpleNamespace(param_groups=[{"lr": 1.0}, {"lr": 1.0, "lr_scale": 0.5}])
    lr = adjust_learning_rate(opt, 20, SimpleNamespace(**kw))
    assert lr == pytest.approx(5e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4, 2.5e-4])


def test_constant_schedule_keeps_the_warmup_then_the_peak():
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_epochs=4, epochs=20)
    for e in (0, 1, 2.5, 3.99):
        assert scheduled_lr(e, **kw, schedule="constant") == pytest.approx(1e-3 * e / 4)
        assert scheduled_lr(e, **kw, schedule="constant") == scheduled_lr(e, **kw, schedule="cosine")
    for e in (4, 10, 19.9, 20):
        assert scheduled_lr(e, **kw, schedule="constant") == 1e-3
    assert scheduled_lr(12, **kw) == cosine_lr(12, **kw) < 1e-3
    opt = SimpleNamespace(param_groups=[{"lr": 1.0}])
    assert adjust_learning_rate(opt, 15, SimpleNamespace(**kw, lr_schedule="constant")) == 1e-3
    assert opt.param_groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="--lr_schedule"):
        scheduled_lr(1, **kw, schedule="linear")
