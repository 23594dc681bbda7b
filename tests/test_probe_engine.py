"""The probing engine end to end on a small synthetic corpus: caching, epoch selection, outputs,
resume, refusals of bad input, and probe accuracy well above chance."""
import inspect
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import engine_probe
import models_lvmae
import reproduce_tables
import sweep_probes
from datasets import synthetic
from datasets.labelled import AnnotationError
from datasets.store import EmbeddingStore, StoreError
from util import feature_cache
from util.checkpoint import CheckpointError, save_checkpoint

CORPUS = ["--num_videos", "600", "--num_pretrain", "0", "--num_movies", "0", "--dim", "64", "--num_scenes", "16"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "syn"
    synthetic.main(["--out", str(out), *CORPUS])
    return out


def make_checkpoint(path, input_dim=64, seed=0, encoder="synthetic:seed0", max_len=256):
    """A randomly initialised tiny LV-MAE in the DESIGN.md checkpoint format."""
    torch.manual_seed(seed)
    model = models_lvmae.lvmae_tiny(input_dim=input_dim, max_len=max_len)
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "model_config": model.config,
                     "args": {"masking": "random", "mask_ratio": 0.5},
                     "data": {"encoder": encoder, "dim": input_dim, "normalized": True}}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(corpus):
    return make_checkpoint(corpus.parent / "lvmae.pth")


def argv(corpus, out, task="style", backbone="none", checkpoint=None, *extra):
    a = ["--dataset", "synthetic", "--annotations", str(corpus / "tasks"), "--task", task,
         "--data_path", str(corpus / "benchmark"), "--backbone", backbone, "--output_dir", str(out), "--device", "cpu"]
    return a + (["--checkpoint", str(checkpoint)] if checkpoint else []) + list(extra)


def test_cache_hit_on_rerun_and_key_changes_with_checkpoint_file(corpus, tmp_path, monkeypatch):
    # max_len 24: most videos (LVU-like lengths, mean ~27 segments) take the sliding-window path
    ckpt = make_checkpoint(tmp_path / "ckpt.pth", max_len=24)
    args = argv(corpus, tmp_path / "out", "style", "lvmae", ckpt, "--epochs", "1")
    first = engine_probe.main(args, "lp")[0]
    assert not any(c["hit"] for c in first["cache"].values())
    assert first["checkpoint"]["model_config"]["max_len"] == 24

    def no_encoding(*a, **k):
        raise AssertionError("features recomputed although cached")
    monkeypatch.setattr(engine_probe, "encode_videos", no_encoding)
    second = engine_probe.main(args, "lp")[0]
    assert all(c["hit"] for c in second["cache"].values())
    assert second["test"] == first["test"]  # same features, same seed -> same head
    monkeypatch.undo()

    make_checkpoint(ckpt, seed=1)  # same path, other weights
    third = engine_probe.main(args, "lp")[0]
    for split in ("train", "val", "test"):
        assert third["cache"][split]["key"] != first["cache"][split]["key"]
        assert not third["cache"][split]["hit"]
    assert third["run_id"] != first["run_id"]  # a different checkpoint is a different run

    entry = feature_cache.load(tmp_path / "out" / "cache", first["cache"]["val"]["key"])
    assert len(entry.video_ids) == 90 and isinstance(entry.video_ids[0], str)
    assert entry.tokens.shape == (entry.offsets[-1], 128) and entry.cls.shape == (90, 128)
    assert not list((tmp_path / "out" / "cache").glob(".*tmp*"))  # no temporary entry left behind

    store = EmbeddingStore(corpus / "benchmark")
    ids = sorted(store.video_ids)[:5]
    key, _ = feature_cache.cache_key("abc", store, ids, "lvmae", {"max_len": 32})
    assert key == feature_cache.cache_key("abc", store, ids, "lvmae", {"max_len": 32})[0]
    for other in [("abd", ids, "lvmae", {"max_len": 32}), ("abc", ids[:4], "lvmae", {"max_len": 32}),
                  ("abc", ids, "none", {"max_len": 32}), ("abc", ids, "lvmae", {"max_len": 64})]:
        assert feature_cache.cache_key(other[0], store, *other[1:])[0] != key


def test_epoch_selection_never_looks_at_test(corpus, tmp_path):
    assert "test" not in inspect.signature(engine_probe.select_epoch).parameters
    tasks = tmp_path / "tasks"
    shutil.copytree(corpus / "tasks", tasks)
    runs = []
    for permute in (False, True):
        if permute:  # scramble the test labels: selection must not move
            test = pd.read_csv(tasks / "style" / "test.csv", dtype={"video_id": str})
            test["label"] = np.random.default_rng(0).permutation(test.label.to_numpy())
            test.to_csv(tasks / "style" / "test.csv", index=False)
        a = argv(corpus, tmp_path / f"out{permute}", "style", "none", None, "--epochs", "6",
                 "--annotations", str(tasks))
        runs.append(engine_probe.main(a, "lp")[0])
    clean, scrambled = runs
    assert clean["epochs"] == scrambled["epochs"] and clean["selected_epoch"] == scrambled["selected_epoch"]
    assert clean["test"] != scrambled["test"]
    best = max(clean["epochs"], key=lambda e: (e["val_top1"], -e["val_loss"]))
    assert clean["selected_epoch"] == best["epoch"] == min(
        e["epoch"] for e in clean["epochs"] if (e["val_top1"], e["val_loss"]) == (best["val_top1"], best["val_loss"]))


def test_outputs_skipped_videos_and_resume(corpus, tmp_path, monkeypatch):
    tasks = tmp_path / "tasks"
    shutil.copytree(corpus / "tasks", tasks)
    for split, extra in (("train", ["ghost1", "ghost2"]), ("test", ["ghost3"])):
        df = pd.read_csv(tasks / "pace" / f"{split}.csv", dtype={"video_id": str})
        pd.concat([df, pd.DataFrame({"video_id": extra, "label": 0.0})]).to_csv(tasks / "pace" / f"{split}.csv",
                                                                               index=False)
    out = tmp_path / "out"
    a = argv(corpus, out, "pace", "none", None, "--epochs", "2", "--seeds", "2", "--annotations", str(tasks))
    results = engine_probe.main(a, "ap")
    run_dir = out / "runs" / results[0]["run_id"]
    assert results[0]["head"].startswith("LinearProbe") and results[0]["metric"] == "mse"  # regression protocol
    assert results[0]["counts"]["skipped"] == 3 and results[0]["counts"]["n_train"] == 420
    assert sorted(pd.read_csv(run_dir / "skipped.csv").video_id) == ["ghost1", "ghost2", "ghost3"]
    used = pd.read_csv(run_dir / "ids.csv", dtype={"video_id": str})
    assert len(used) == 600 and not used.video_id.str.startswith("ghost").any()
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 and set(table.seed) == {0, 1} and (table.metric == "mse").all()
    assert (table.skipped == 3).all() and (table.n_test == 90).all()
    saved = json.loads((run_dir / "seed1.json").read_text())
    assert {"config", "epochs", "selected_epoch", "test", "counts", "val"} <= set(saved)
    assert len(saved["epochs"]) == 2 and saved["test"]["mse"] == table.value[table.seed == 1].item()

    (run_dir / "seed1.json").unlink()  # as if killed during seed 1
    trained = []
    real = engine_probe.select_epoch
    monkeypatch.setattr(engine_probe, "select_epoch", lambda *a, **k: trained.append(a[-1]) or real(*a, **k))
    engine_probe.main(a + ["--resume"], "ap")
    assert trained == [1]  # seed 0 resumed from its JSON, only seed 1 retrained
    assert len(pd.read_csv(out / "results.csv")) == 2  # rows replaced, never duplicated
    with pytest.raises(engine_probe.ProbeError, match="belongs to a different configuration"):
        engine_probe.main(a + ["--resume", str(out / "runs" / "other")], "ap")


def test_bad_input_is_refused_before_anything_is_written(corpus, checkpoint, tmp_path):
    out = tmp_path / "out"
    cases = [
        (AnnotationError, "unknown --task 'genre'", argv(corpus, out, "genre")),
        (AnnotationError, "unknown LVU --task", ["--dataset", "lvu", "--task", "plot", "--data_path",
                                                  str(corpus / "benchmark"), "--output_dir", str(out),
                                                  "--backbone", "none"]),
        (CheckpointError, "expects 32-d segment embeddings, the store has 64-d",
         argv(corpus, out, "style", "lvmae", make_checkpoint(tmp_path / "d32.pth", input_dim=32))),
        (CheckpointError, "pretrained on 'other:enc' embeddings",
         argv(corpus, out, "style", "lvmae", make_checkpoint(tmp_path / "enc.pth", encoder="other:enc"))),
        (engine_probe.ProbeError, "needs --checkpoint", argv(corpus, out, "style", "lvmae")),
        (StoreError, "does not exist", argv(corpus, out, "style")[:-4] + ["--data_path", str(tmp_path / "nostore"),
                                                                          "--output_dir", str(out)]),
    ]
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pth")
    cases.append((CheckpointError, "not an LV-MAE checkpoint", argv(corpus, out, "style", "lvmae",
                                                                    tmp_path / "foreign.pth")))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint at all")
    cases.append((CheckpointError, "not a checkpoint this project can read", argv(corpus, out, "style", "lvmae",
                                                                                  tmp_path / "bad.pth")))
    other = tmp_path / "tasks"
    shutil.copytree(corpus / "tasks", other)
    for split in ("train", "val", "test"):  # annotated videos none of which is in the store
        pd.DataFrame({"video_id": [f"yt-{split}{i}" for i in range(3)], "label": [0, 1, 2]}).to_csv(
            other / "style" / f"{split}.csv", index=False)
    cases.append((AnnotationError, "none of the 3 annotated train videos", argv(corpus, out, "style", "none", None,
                                                                                "--annotations", str(other))))
    (other / "grammar" / "val.csv").write_text("video_id,label\nsyn000001,1\nsyn000002,seven\n")
    cases.append((AnnotationError, r"grammar/val\.csv line 3: label 'seven'",
                  argv(corpus, out, "grammar", "none", None, "--annotations", str(other))))
    for error, message, a in cases:
        with pytest.raises(error, match=message):
            engine_probe.main(a, "ap")
        assert not out.exists(), f"{message}: output written"


def test_end_to_end_probes_beat_chance_and_render_the_table(corpus, checkpoint, tmp_path):
    """Seeds 0-2 on the synthetic corpus (chance 25% on both 4-class tasks). Thresholds were set
    from measured runs with margin (measured, mean ± std over the 3 seeds: raw AP on grammar
    83.0 ± 7.4, raw LP on grammar 24.8 ± 2.6, LV-MAE AP on style 99.3 ± 0.6):
    - grammar is order-only: the raw baseline's AP, which adds positions, must beat the 50% cap of
      any order-blind statistic, and the raw LP (a mean) must stay near chance;
    - style is solvable from the content: the LV-MAE path (random-init encoder here) must beat
      chance by far, which checks features -> cache -> head -> selection end to end."""
    out = tmp_path / "probe"
    means = {}
    for task, backbone, probe in (("grammar", "none", "ap"), ("grammar", "none", "lp"), ("style", "lvmae", "ap")):
        results = engine_probe.main(argv(corpus, out, task, backbone, checkpoint, "--seeds", "3"), probe)
        assert [r["seed"] for r in results] == [0, 1, 2]
        means[task, backbone, probe] = np.mean([r["test"]["top1"] for r in results])
    assert means["grammar", "none", "ap"] > 60.0, means
    assert means["grammar", "none", "lp"] < 40.0, means
    assert means["style", "lvmae", "ap"] > 70.0, means
    text = reproduce_tables.main([str(out), "--tables", "synthetic", "--out", str(tmp_path / "t.md")])
    assert "| raw embeddings (baseline) | AP: own [CLS] + sin-cos positions (Adam lr 0.001, γ 0.9) | 100% | " in text
    assert "| LV-MAE (depth 4, random) | AP: encoder [CLS], no added positions (Adam lr 0.001, γ 0.9) | 100% | " \
        in text
    assert f"{means['grammar', 'none', 'ap']:.2f} ± " in text and "| chance |  |  | 25.00 | 25.00 |" in text


def test_sweep_runs_every_task_probe_and_backbone_in_process(corpus, checkpoint, tmp_path):
    out = tmp_path / "sweep"
    code = sweep_probes.main(["--checkpoint", str(checkpoint), "--output_dir", str(out), "--seeds", "1",
                              "--synthetic", str(corpus / "benchmark"), "--synthetic_annotations",
                              str(corpus / "tasks"), "--tasks", "style", "pace", "--epochs", "1", "--device", "cpu"])
    assert code == 0
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 8 and set(zip(table.task, table.probe, table.backbone)) == {
        (t, p, b) for t in ("style", "pace") for p in ("ap", "lp") for b in ("lvmae", "none")}
    assert "LV-MAE vs raw baseline" in (out / "tables.md").read_text()


def test_threads_are_set_only_when_asked_and_restored(corpus, tmp_path, monkeypatch):
    seen = []
    real = engine_probe.select_epoch
    monkeypatch.setattr(engine_probe, "select_epoch",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    a = argv(corpus, tmp_path / "out", "style", "none", None, "--epochs", "1")
    engine_probe.main(a, "lp")
    engine_probe.main(a + ["--num_threads", "1"], "lp")
    assert seen == [before, 1] and torch.get_num_threads() == before


def test_cli_prints_user_errors_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sys, "argv", ["test_ap.py", "--dataset", "lvu", "--task", "plot", "--backbone", "none",
                                      "--data_path", str(tmp_path), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        engine_probe.cli("ap")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: unknown LVU --task 'plot'")


# --- issue 11: positions for both backbones, the converged linear probe, standardized regression,
# label-efficiency subsets, bootstrap intervals ------------------------------------------------------
def test_fit_linear_lbfgs_matches_closed_form_ridge_and_kkt():
    """The converged probe's solver against independent solutions: ridge regression in closed
    form (numpy), and for cross-entropy the stationarity (KKT) condition of the penalized
    objective computed in numpy."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 12))
    z = (z - z.mean(0)) / z.std(0)
    t = z @ rng.standard_normal(12) + 0.5 * rng.standard_normal(300)
    t = (t - t.mean()) / t.std()
    wd = 0.03
    W, b, info = engine_probe.fit_linear_lbfgs(torch.tensor(z), torch.tensor(t), 1, True, wd, 1e-9, 1000)
    # (1/N)||Zw + b - t||^2 + wd ||w||^2 with centred Z, t: w = (Z'Z / N + wd I)^-1 Z't / N, b = 0
    ridge = np.linalg.solve(z.T @ z / 300 + wd * np.eye(12), z.T @ t / 300)
    np.testing.assert_allclose(W.numpy()[0], ridge, atol=1e-7)
    assert abs(float(b)) < 1e-7 and info["converged"]

    y = rng.integers(0, 4, 300)
    z2 = z + 0.8 * np.eye(4)[y] @ rng.standard_normal((4, 12))
    W, b, info = engine_probe.fit_linear_lbfgs(torch.tensor(z2), torch.tensor(y), 4, False, wd, 1e-8, 5000)
    W, b = W.numpy(), b.numpy()
    logits = z2 @ W.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(4)[y]
    grad_W = residual.T @ z2 / 300 + 2 * wd * W
    grad_b = residual.mean(0)
    assert info["converged"] and np.abs(grad_W).max() < 1e-7 and np.abs(grad_b).max() < 1e-7


def test_converged_linear_probe_selects_weight_decay_on_validation_only(corpus, tmp_path):
    tasks = tmp_path / "tasks"
    shutil.copytree(corpus / "tasks", tasks)
    runs = []
    for permute in (False, True):
        if permute:
            test = pd.read_csv(tasks / "style" / "test.csv", dtype={"video_id": str})
            test["label"] = np.random.default_rng(0).permutation(test.label.to_numpy())
            test.to_csv(tasks / "style" / "test.csv", index=False)
        a = argv(corpus, tmp_path / f"out{permute}", "style", "none", None, "--solver", "lbfgs", "--seeds", "2",
                 "--annotations", str(tasks))
        runs.append(engine_probe.main(a, "lp"))
    clean, scrambled = runs
    log = clean[0]["epochs"]
    assert [e["weight_decay"] for e in log] == sorted(engine_probe.LBFGS_WEIGHT_DECAYS, reverse=True)
    assert all(e["converged"] for e in log), log
    best = max(log, key=lambda e: (e["val_top1"], -e["val_loss"]))
    assert clean[0]["selected_epoch"] == log.index(best)
    assert scrambled[0]["epochs"] == log and scrambled[0]["selected_epoch"] == clean[0]["selected_epoch"]
    assert clean[0]["test"] == clean[1]["test"]  # convex, zero init: seeds give the same head
    assert clean[0]["test"]["top1"] > 90  # style: a mean solves it
    assert clean[0]["head"] == "LinearProbe (mean of segment tokens, standardized)"
    row = pd.read_csv(tmp_path / "outFalse" / "results.csv").iloc[0]
    assert row.solver == "lbfgs" and row.weight_decay == best["weight_decay"] and np.isnan(row.lr)
    grammar = engine_probe.main(argv(corpus, tmp_path / "g", "grammar", "none", None, "--solver", "lbfgs"), "lp")
    assert grammar[0]["test"]["top1"] < 40  # order-only: a mean stays near chance (25%) even converged
    with pytest.raises(engine_probe.ProbeError, match="attentive probe of the classification task"):
        engine_probe.main(argv(corpus, tmp_path / "x", "style", "none", None, "--solver", "lbfgs"), "ap")


def test_regression_head_standardizes_features_and_targets(corpus, tmp_path):
    """The mean + Linear regression head standardizes with training statistics and answers in
    the task's units: shifting every target by 100 leaves the MSE as it is, scaling them by 10
    multiplies it by 100; on raw features the head is no worse than 1.1 x the training mean.
    (Unstandardized, Adam at Table 7's lr cannot move the bias by 100 in 3 epochs.)"""
    mse = {}
    for name, (shift, scale) in {"plain": (0.0, 1.0), "shifted": (100.0, 1.0), "scaled": (0.0, 10.0)}.items():
        tasks = tmp_path / name
        shutil.copytree(corpus / "tasks", tasks)
        for split in ("train", "val", "test"):
            df = pd.read_csv(tasks / "pace" / f"{split}.csv", dtype={"video_id": str})
            df["label"] = df.label * scale + shift
            df.to_csv(tasks / "pace" / f"{split}.csv", index=False)
        result = engine_probe.main(argv(corpus, tmp_path / f"out_{name}", "pace", "none", None, "--epochs", "3",
                                        "--annotations", str(tasks)), "ap")[0]
        mse[name] = (result["test"]["mse"], result["trivial_test"])
        assert result["head"].startswith("LinearProbe (standardized")
    (plain, trivial), (shifted, _), (scaled, _) = mse["plain"], mse["shifted"], mse["scaled"]
    assert abs(shifted - plain) < 1e-3 * plain and abs(scaled - 100 * plain) < 1e-3 * 100 * plain, mse
    assert plain < 1.1 * trivial, mse


def test_probe_positions_give_lvmae_tokens_the_raw_treatment(corpus, checkpoint, tmp_path):
    out = tmp_path / "out"
    default = engine_probe.main(argv(corpus, out, "grammar", "lvmae", checkpoint, "--epochs", "1"), "ap")[0]
    explicit = engine_probe.main(argv(corpus, out, "grammar", "lvmae", checkpoint, "--epochs", "1",
                                      "--probe_positions", "none"), "ap")[0]
    own = engine_probe.main(argv(corpus, out, "grammar", "lvmae", checkpoint, "--epochs", "1",
                                 "--probe_positions", "own"), "ap")[0]
    blind = engine_probe.main(argv(corpus, out, "grammar", "none", None, "--epochs", "1",
                                   "--probe_positions", "none"), "ap")[0]
    assert default["run_id"] == explicit["run_id"] != own["run_id"]  # App. 8's head stays the default
    assert default["head"] == "AttentiveProbe (encoder [CLS])" and default["positions"] == "none"
    assert own["head"] == "AttentiveProbe (own [CLS] + sin-cos positions)" and own["positions"] == "own"
    assert blind["head"] == "AttentiveProbe (own [CLS], no positions)"
    args = engine_probe.parse_args(argv(corpus, out, "grammar", "lvmae", checkpoint, "--probe_positions", "own"))
    spec = engine_probe.load_annotations("synthetic", "grammar", str(corpus / "tasks")).spec
    encoder = {"config": {"num_heads": 4}}
    head = engine_probe.build_head(args, spec, 128, encoder)
    assert head.own_cls and head.positions and head.block.attn.num_heads == 4  # only the positions change
    args.probe_positions = None
    assert not engine_probe.build_head(args, spec, 128, encoder).own_cls
    rows = pd.read_csv(out / "results.csv")
    assert sorted(rows.positions.astype(str)) == ["none", "none", "own"]  # the default row was replaced


def test_label_fraction_subsets_same_steps_and_intervals(corpus, checkpoint, tmp_path, monkeypatch):
    """--label_fraction: a seeded stratified subset per seed (the same for both backbones),
    validation and test unchanged, as many optimizer steps as with all labels; every row carries
    the run's bootstrap interval."""
    steps = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or real_step(self, *a, **k))
    out = tmp_path / "out"
    full = engine_probe.main(argv(corpus, out, "style", "none", None, "--epochs", "2"), "lp")
    n_full = len(steps)
    assert n_full == 2 * -(-420 // 16)
    steps.clear()
    sub = {b: engine_probe.main(argv(corpus, out, "style", b, checkpoint if b == "lvmae" else None, "--epochs", "2",
                                     "--seeds", "2", "--label_fraction", "0.1"), "lp") for b in ("none", "lvmae")}
    assert len(steps) == 4 * n_full  # 2 backbones x 2 seeds, each as many steps as the full-label run
    train = pd.read_csv(corpus / "tasks" / "style" / "train.csv", dtype={"video_id": str}).set_index("video_id")
    per_class = train.label.value_counts()
    for seed in (0, 1):
        ids = sub["none"][seed]["train_ids"]
        assert ids == sub["lvmae"][seed]["train_ids"]  # the same labelled videos for both backbones
        counts = train.label[ids].value_counts()
        assert all(counts[c] == max(1, int(np.floor(0.1 * n + 0.5))) for c, n in per_class.items())
        assert sub["none"][seed]["counts"]["n_train"] == len(ids) < 60
        assert sub["none"][seed]["counts"]["n_val"] == full[0]["counts"]["n_val"] == 90  # unchanged
        assert sub["none"][seed]["counts"]["n_test"] == 90
        assert all(e["steps"] == 27 for e in sub["none"][seed]["epochs"])
    assert sub["none"][0]["train_ids"] != sub["none"][1]["train_ids"]
    assert sub["none"][0]["run_id"] != full[0]["run_id"]
    rows = pd.read_csv(out / "results.csv")
    for run_id, group in rows.groupby("run_id"):
        assert group.ci_low.nunique() == 1 and group.ci_high.nunique() == 1
        assert group.ci_low.iloc[0] <= group.value.mean() <= group.ci_high.iloc[0]
        scores = [json.loads(open(p).read())["test_scores"] for p in group.result_json]
        assert np.mean(scores) == pytest.approx(group.value.mean())  # the per-video scores make the metric
    assert set(rows.label_fraction) == {1.0, 0.1}


def test_sweep_label_fractions_and_passed_through_flags(corpus, tmp_path):
    out = tmp_path / "sweep"
    common = ["--checkpoint", "unused.pth", "--output_dir", str(out), "--seeds", "2", "--synthetic",
              str(corpus / "benchmark"), "--synthetic_annotations", str(corpus / "tasks"), "--tasks", "style",
              "--probes", "lp", "--backbones", "none", "--epochs", "1", "--device", "cpu"]
    assert sweep_probes.main(common + ["--label_fractions", "0.25", "1"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert sorted(set(table.label_fraction)) == [0.25, 1.0] and len(table) == 4
    assert "### Label efficiency — synthetic / style" in (out / "tables.md").read_text()
    assert (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    # a run flag that shares a prefix with a sweep flag reaches the runs unabbreviated
    assert sweep_probes.main(common + ["--label_fraction", "0.5", "--solver", "lbfgs"]) == 0
    table = pd.read_csv(out / "results.csv")
    assert ((table.label_fraction == 0.5) & (table.solver == "lbfgs")).sum() == 2
