"""Weighted dataset mixes (--data_path STORE:WEIGHT, or a weight column in a .txt list): each
epoch's draws follow the weights whatever the stores' sizes, are a pure function of (seed, epoch),
key every draw's window by its position (a video drawn twice gets two windows), are recorded in
config.json and the log, and resume exactly. DDP = one process: tests/test_pretrain_ddp.py."""
import json
import shutil

import numpy as np
import pytest
import torch

import main_pretrain
import util.dist as dist_util
from datasets.pretrain import WeightedMix
from datasets.store import StoreError, weighted_data_paths
from pretrain_fixtures import TINY_MODEL, write_store

SMALL, LARGE = 6, 30  # videos per store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(1)
    a = write_store(root / "a", [int(n) for n in rng.integers(8, 40, size=SMALL)], seed=1)
    b = write_store(root / "b", [int(n) for n in rng.integers(8, 40, size=LARGE)], seed=2)
    return root, a, b


def run(out, data_path, *extra, epochs=2):
    return main_pretrain.main(["--data_path", *map(str, data_path), "--output_dir", str(out), *TINY_MODEL,
                               "--epochs", str(epochs), "--warmup_epochs", "1", "--blr", "5e-2", "--batch_size", "6",
                               "--num_workers", "0", "--no_progress", "--duration_max", "150", "--val_fraction", "0",
                               "--device", "cpu", *extra])


def test_weights_from_flags_and_from_a_list_file(stores):
    root, a, b = stores
    (root / "mix.txt").write_text("a 3   # movies\nb\n")
    assert weighted_data_paths([f"{a}:3", str(b)]) == ([a, b], [3.0, 1.0])
    assert weighted_data_paths([root / "mix.txt"]) == ([a, b], [3.0, 1.0])
    assert weighted_data_paths([str(a), str(b)]) == ([a, b], None)  # no weight: no mix, today's epochs
    with pytest.raises(StoreError, match=r"store weight '-1' of .*a must be a number > 0"):
        weighted_data_paths([f"{a}:-1"])


def test_realized_shares_follow_the_weights_not_the_sizes(stores):
    """Counted on the items the training loader actually yields (the loader, not the mix's own
    bookkeeping), over 20 epochs of 36 draws: 720 draws, share 0.75 has a standard deviation of
    0.016; tolerance 0.05."""
    root, a, b = stores
    args = main_pretrain.get_args_parser().parse_args(
        ["--data_path", f"{a}:3", f"{b}:1", *TINY_MODEL, "--num_workers", "0", "--val_fraction", "0",
         "--batch_size", "6", "--duration_max", "150", "--short_videos", "drop",
         "--window_sampling", "duration"])
    info = dist_util.DistInfo(0, 1, 0, torch.device("cpu"), False)
    store, train_set, _, sampler, loader, _ = main_pretrain.build_data(args, info)
    assert len(train_set) == SMALL + LARGE  # draws per epoch: as many as the training videos
    in_a = set(store.video_ids[:SMALL])
    assert {store.entry(v).store for v in in_a} == {0}
    counts = np.zeros(2)
    windows = {}
    for epoch in range(20):
        sampler.set_epoch(epoch)
        for batch in loader:
            for vid, n in zip(batch["video_id"], batch["lengths"].tolist()):
                counts[0 if vid in in_a else 1] += 1
                windows.setdefault((epoch, vid), set()).add(n)
    share = counts / counts.sum()
    assert share[0] == pytest.approx(0.75, abs=0.05), share  # by size it would be 6 / 36 = 0.17
    # the small store's videos are drawn several times an epoch, each draw its own window
    assert np.mean([len(w) > 1 for (e, v), w in windows.items() if v in in_a]) > 0.5
    summary = train_set.mix.summary(range(20))
    assert summary[str(a)]["weight"] == 3 and summary[str(a)]["probability"] == 0.75
    assert summary[str(a)]["realized_share"] == pytest.approx(0.75, abs=0.05)


def test_draws_are_a_function_of_seed_and_epoch_and_cycle_within_a_store():
    store_of = np.array([0] * 4 + [1] * 20)
    mix = WeightedMix(store_of, [1.0, 1.0], seed=7)
    again = WeightedMix(store_of, [1.0, 1.0], seed=7)
    assert np.array_equal(mix.draws(3), again.draws(3))
    assert not np.array_equal(mix.draws(3), mix.draws(4))
    assert not np.array_equal(mix.draws(3), WeightedMix(store_of, [1.0, 1.0], seed=8).draws(3))
    for epoch in range(5):  # store 0 drawn ~12 times: each of its 4 videos 3 times, give or take one
        counts = np.bincount(mix.draws(epoch)[store_of[mix.draws(epoch)] == 0], minlength=4)
        assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="weighted store 2 has no training video"):
        WeightedMix(store_of, [1.0, 1.0, 1.0])


def test_config_and_log_record_the_shares_and_resume_is_exact(stores, tmp_path):
    root, a, b = stores
    data = [f"{a}:3", f"{b}:1"]
    full = run(tmp_path / "full", data, "--keep_every", "1", epochs=3)
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    mix = config["mix"]
    assert mix[str(a)]["weight"] == 3 and mix[str(b)]["videos"] == LARGE
    log = [json.loads(line) for line in (tmp_path / "full" / "log.txt").read_text().splitlines()]
    shares = [row["mix_share"][str(a)] for row in log]
    assert mix[str(a)]["realized_share"] == pytest.approx(np.mean(shares))
    assert all(0.5 < s < 0.95 for s in shares)

    (tmp_path / "cut").mkdir()
    shutil.copy(tmp_path / "full" / "checkpoint-0.pth", tmp_path / "cut" / "checkpoint-last.pth")
    (tmp_path / "cut" / "log.txt").write_text((tmp_path / "full" / "log.txt").read_text().splitlines()[0] + "\n")
    resumed = run(tmp_path / "cut", data, "--num_workers", "1", epochs=3)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"][1:]]
    x, y = (torch.load(tmp_path / r / "checkpoint-last.pth", weights_only=True)["model"] for r in ("full", "cut"))
    assert all(torch.equal(x[k], y[k]) for k in x)
    # and the mix changes what is trained on: the unweighted run of the same stores differs
    plain = run(tmp_path / "plain", [a, b], epochs=1)
    assert plain["history"][0]["train_loss"] != full["history"][0]["train_loss"]
    assert "mix_share" not in plain["history"][0]


def test_weights_are_refused_where_they_mean_nothing(stores, tmp_path):
    root, a, b = stores
    from datasets.store import EmbeddingStore
    with pytest.raises(StoreError, match="apply to pretraining"):
        EmbeddingStore([f"{a}:2", str(b)])
    short = write_store(tmp_path / "short", [1, 1, 1])  # every video too short to mask
    with pytest.raises(main_pretrain.ConfigError, match=r"--data_path: weighted store .*short has no training video"):
        run(tmp_path / "x", [f"{short}:2", b])
    assert not (tmp_path / "x").exists()
