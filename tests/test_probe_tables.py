"""reproduce_tables.py on a small hand-made results file, and the results.csv writer."""
import numpy as np
import pandas as pd
import pytest

import reproduce_tables
from reproduce_tables import LVU_CLS
from util.probe_results import COLUMNS, ResultsError, bootstrap_interval, write_row

LB = "languagebind:LanguageBind_Video_FT"


def row(run_id, dataset, task, seed, value, probe="ap", backbone="lvmae", masking="semantic", depth=32,
        time="2025-01-02T00:00:00", metric="top1"):
    return {"run_id": run_id, "dataset": dataset, "task": task, "probe": probe, "backbone": backbone, "encoder": LB,
            "masking": masking if backbone == "lvmae" else "", "depth": depth if backbone == "lvmae" else "",
            "checkpoint_sha256": "abc" if backbone == "lvmae" else "", "seed": seed, "metric": metric,
            "value": value, "time": time}


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.csv"
    for i, task in enumerate(LVU_CLS):
        for seed in (0, 1):  # task i: 60 + i (seed 0), 62 + i (seed 1) -> mean 61 + i, std 1.41
            write_row(path, row(f"lvu-{task}", "lvu", task, seed, 60.0 + i + 2 * seed))
            write_row(path, row(f"lvu-{task}-lp", "lvu", task, seed, 50.0 + i, probe="lp"))
        write_row(path, row(f"raw-{task}", "lvu", task, 0, 30.0 + i, backbone="none"))
    write_row(path, row("old-genre", "lvu", "genre", 0, 1.0, time="2024-01-01T00:00:00"))  # superseded rerun
    for seed in (0, 1):
        write_row(path, row("lvu-like", "lvu", "like_ratio", seed, 0.2 + 0.02 * seed, metric="mse"))
        write_row(path, row("bf", "breakfast", "activity", seed, 90.0 + seed))
        write_row(path, row("coin", "coin", "task", seed, 91.0))
    write_row(path, row("coin", "coin", "task", 1, 93.0))  # replaces seed 1 of the same run
    return path


def test_results_rows_are_replaced_not_duplicated(results):
    df = pd.read_csv(results)
    assert list(df.columns) == COLUMNS
    assert len(df[df.run_id == "coin"]) == 2 and df[(df.run_id == "coin") & (df.seed == 1)].value.item() == 93.0
    with pytest.raises(ValueError, match="unknown results columns"):
        write_row(results, {"run_id": "x", "seed": 0, "accuracy": 1})


def test_tables_from_a_small_results_file(results, tmp_path):
    text = reproduce_tables.main([str(results), "--out", str(tmp_path / "tables.md")])
    assert (tmp_path / "tables.md").read_text() == text
    lines = text.splitlines()
    ours_t1 = next(line for line in lines if line.startswith("| LV-MAE LanguageBind (AP, semantic, depth 32) — ours"))
    cells = [c.strip() for c in ours_t1.split("|")[1:-1]]
    assert cells[2:9] == [f"{61 + i:.2f} ± 1.41" for i in range(7)]  # Dir ... Rel: mean ± sample std
    assert cells[9] == "64.00 ± 1.41"  # per-seed averages 63 and 65 (the superseded 1.0 is ignored)
    assert cells[10] == "0.210 ± 0.014" and cells[11] == "–"  # like ratio MSE; views not run
    baseline = next(line for line in lines if line.startswith("| LanguageBind-Baseline (AP, raw embeddings) — ours"))
    assert "| 30.00 | 31.00 |" in baseline
    # published cells name their source row
    assert "| 77.57 (T3 AP semantic) |" in text and "| 63.4 (T3 AP semantic) | 0.23 | 2.52 |" in text
    assert "| 91.55 (T3 AP random) | 92.42 (T3 AP random) |" in text
    assert "| 93.24 (T3 AP semantic) | 92.72 (T3 AP semantic) |" in text
    # Table 2: ours beside the published rows
    assert "| LV-MAE LanguageBind (AP, semantic, depth 32) — ours | ✓ | 90.50 ± 0.71 | 92.00 ± 1.41 |" in text
    # Table 3: the AP / semantic / LanguageBind row, paper and ours side by side
    ap_semantic = "| AP | semantic | LanguageBind | 32 | 63.41 | 64.00 ± 1.41 | 90.70 | 90.50 ± 0.71 | 91.8 |"
    assert ap_semantic + " 92.00 ± 1.41 |" in text
    assert "| LP | semantic | LanguageBind | 32 | 59.02 | 53.00 ± 0.00 | 81.97 | – | 91.54 | – |" in text
    # Table 4 and Table 8
    assert "| 32 | LanguageBind, semantic | 63.41 | 64.00 ± 1.41 | 90.70 | 90.50 ± 0.71 | 91.8 | 92.00 ± 1.41 |" \
        in text
    assert "| 16 | – | 59.73 | – |" in text
    assert "| LV-MAE LanguageBind (AP) (paper, T1 row, avg from T3) | semantic | 77.57 |" in text
    assert "| LV-MAE LanguageBind (LP, semantic, depth 32) — ours | semantic | 50.00 ± 0.00 |" in text


def test_missing_results_file_is_an_error(tmp_path):
    with pytest.raises(ResultsError, match="no results file"):
        reproduce_tables.main([str(tmp_path)])
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a probe results file"):
        reproduce_tables.main([str(tmp_path)])


def test_results_files_of_before_the_head_columns_still_render(results, tmp_path):
    old_columns = [c for c in COLUMNS if c not in ("positions", "solver", "lr", "weight_decay", "label_fraction",
                                                   "setting", "ci_low", "ci_high")]
    pd.read_csv(results, dtype=str, keep_default_na=False)[old_columns].to_csv(tmp_path / "old.csv", index=False)
    assert reproduce_tables.main([str(tmp_path / "old.csv")]) == reproduce_tables.main([str(results)])


def test_bootstrap_interval_properties():
    rng = np.random.default_rng(0)
    correct = (rng.random(400) < 0.8) * 100.0
    lo, hi = bootstrap_interval(correct)
    assert lo < correct.mean() < hi
    assert (lo, hi) == bootstrap_interval(correct)  # seeded
    # the normal approximation of a proportion: half-width 1.96 * sqrt(p (1 - p) / n)
    p = correct.mean() / 100
    half = 100 * 1.96 * np.sqrt(p * (1 - p) / 400)
    assert abs((hi - lo) / 2 - half) < 0.12 * half, (lo, hi, half)
    assert bootstrap_interval(np.full(50, 3.0)) == (3.0, 3.0)
    # seeds are scored on the same videos: one shared draw, then the mean over seeds
    assert bootstrap_interval(np.stack([correct, correct])) == (lo, hi)
    other = (rng.random(400) < 0.6) * 100.0
    assert bootstrap_interval(np.stack([correct, other])) == bootstrap_interval((correct + other) / 2)
    # more test videos, a narrower interval (here 16x the videos: ~1/4 the width)
    big = (rng.random(6400) < 0.8) * 100.0
    blo, bhi = bootstrap_interval(big)
    assert 0.18 < (bhi - blo) / (hi - lo) < 0.32


def synthetic_rows(path, task="grammar", metric="top1"):
    """Two backbones x two positional settings, plus 10% / 5% label runs, 3 seeds each."""
    base = {"dataset": "synthetic", "task": task, "encoder": "synthetic:seed0", "metric": metric, "probe": "ap",
            "time": "2025-01-02T00:00:00", "solver": "adam", "lr": 0.001}
    runs = []
    for backbone in ("none", "lvmae"):
        for positions, values in (("own", [80, 82, 84]), ("none", [40, 42, 44])):
            for fraction, shift in ((1.0, 0), (0.1, -20), (0.05, -30)):
                if positions == "none" and fraction < 1:
                    continue
                bump = 5 if backbone == "lvmae" and fraction < 1 else 0
                runs.append(({"backbone": backbone, "positions": positions, "label_fraction": fraction,
                              "masking": "random" if backbone == "lvmae" else "",
                              "depth": 4 if backbone == "lvmae" else "",
                              "checkpoint_sha256": "c" * (backbone == "lvmae"),
                              "setting": f"{positions} setting (Adam lr 0.001, γ 0.9)",
                              "n_train": int(1400 * fraction),
                              "ci_low": values[1] + shift + bump - 3, "ci_high": values[1] + shift + bump + 3},
                             [v + shift + bump for v in values]))
    for i, (extra, values) in enumerate(runs):
        for seed, value in enumerate(values):
            write_row(path, {**base, **extra, "run_id": f"r{i}", "seed": seed, "value": value})
    return runs


def test_synthetic_and_label_efficiency_tables_and_plot(tmp_path):
    path = tmp_path / "results.csv"
    synthetic_rows(path)
    for seed in range(3):  # the regression task of the raw AP sweep: no positional setting of its own
        write_row(path, {"run_id": "pace", "dataset": "synthetic", "task": "pace", "encoder": "synthetic:seed0",
                         "metric": "mse", "probe": "ap", "backbone": "none", "solver": "adam", "lr": 0.001,
                         "label_fraction": 1.0, "positions": "", "seed": seed, "value": 1.5 + 0.1 * seed,
                         "time": "2025-01-02T00:00:00", "setting": "mean + Linear, standardized (Adam lr 0.001)"})
    text = reproduce_tables.main([str(path), "--tables", "synthetic", "label_efficiency",
                                  "--plot", str(tmp_path / "le.png")])
    lines = text.splitlines()
    raw_own = next(line for line in lines if line.startswith("| raw embeddings (baseline) | AP: own setting"))
    assert "| 100% | 82.00 ± 2.00 [79.0, 85.0] | 1.600 ± 0.100 | 3 |" in raw_own
    raw_none = next(line for line in lines if line.startswith("| raw embeddings (baseline) | AP: none setting"))
    assert "| 1.600 ± 0.100 |" in raw_none  # the pace head belongs to both positional settings
    assert not any("AP: mean + Linear" in line for line in lines)  # and is no row of its own
    lvmae = "| LV-MAE (depth 4, random) | AP: "
    assert lvmae + "none setting (Adam lr 0.001, γ 0.9) | 100% | 42.00 ± 2.00 [39.0, 45.0]" in text
    assert lvmae + "own setting (Adam lr 0.001, γ 0.9) | 10% | 67.00 ± 2.00 [64.0, 70.0]" in text
    # the two backbones of one setting are adjacent rows
    i = lines.index(raw_own)
    assert lines[i + 1].startswith("| LV-MAE (depth 4, random) | AP: own setting") and "| 100% |" in lines[i + 1]
    # label efficiency: one row per curve, one column per fraction, the subset sizes below
    assert "| Backbone, probe | 5% labels | 10% labels | 100% labels |" in text
    assert "| LV-MAE (depth 4), AP: own setting (Adam lr 0.001, γ 0.9) | 57.00 ± 2.00 [54.0, 60.0] | " \
           "67.00 ± 2.00 [64.0, 70.0] | 82.00 ± 2.00 [79.0, 85.0] |" in text
    assert "| training videos | 70 | 140 | 1400 |" in text
    png = (tmp_path / "le.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
