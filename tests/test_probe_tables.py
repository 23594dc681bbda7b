"""reproduce_tables.py on a small hand-made results file, and the results.csv writer."""
import pandas as pd
import pytest

import reproduce_tables
from reproduce_tables import LVU_CLS
from util.probe_results import COLUMNS, ResultsError, write_row

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
