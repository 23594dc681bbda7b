"""benchmarks/bench_contrastive.py prints its JSON line: every configuration measured in its own
process, the visible share of the encoder's tokens as the mask ratio says."""
from __future__ import annotations

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_contrastive  # noqa: E402


def test_bench_contrastive_json_line(capsys):
    line = bench_contrastive.main(["--device", "cpu", "--windows", "16", "--ratios", "0", "0.75", "--steps", "1",
                                   "--warmup_steps", "0", "--embed_dim", "16", "--depth", "1", "--num_heads", "2",
                                   "--batch_size", "2"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(line))
    by_ratio = {r["mask_ratio"]: r for r in line["results"]}
    assert set(by_ratio) == {0.0, 0.75} and not any("error" in r for r in line["results"])
    for r in by_ratio.values():
        assert r["window"] == 16 and r["peak_rss_mb"] >= r["rss_before_mb"] > 0 and r["tokens_per_s"] > 0
    # 16 segments at 75%: int(16 * 0.25) = 4 visible per window; at 0: all 16
    assert by_ratio[0.75]["visible_fraction"] == 0.25 and by_ratio[0.0]["visible_fraction"] == 1.0
    assert set(line["longest_window_at_0.75_in_the_unmasked_peak"]) == {"16"}
