"""benchmarks/pace_ceiling.py: the posterior mean against a brute-force integration written here,
shot lengths, and the ceilings' order on a generated corpus."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import pace_ceiling  # noqa: E402
from datasets import synthetic  # noqa: E402
from util.cli import UserError  # noqa: E402


def brute_posterior_mean(lengths, lo=1.5, hi=6.0, points=6001):
    """E[tau | lengths]: trapezoid rule over tau, torch's Poisson pmf, the censored last shot as an
    explicit tail sum."""
    tau = torch.linspace(lo, hi, points, dtype=torch.float64)
    pois = torch.distributions.Poisson(tau - 1.0)
    loglik = torch.zeros_like(tau)
    for length in lengths[:-1]:
        loglik += pois.log_prob(torch.tensor(float(length - 1), dtype=torch.float64))
    ks = torch.arange(int(lengths[-1]) - 1, 200, dtype=torch.float64)
    loglik += torch.logsumexp(torch.stack([pois.log_prob(k) for k in ks]), dim=0)
    w = torch.exp(loglik - loglik.max())
    return float(torch.trapezoid(w * tau, tau) / torch.trapezoid(w, tau))


@pytest.mark.parametrize("lengths", [[3], [1, 1, 1, 1, 1, 1, 2], [4, 7, 2, 5, 1], [9, 6, 12], [2, 3, 1, 4, 30]])
def test_posterior_mean_matches_brute_force(lengths):
    grid = np.linspace(1.5, 6.0, pace_ceiling.GRID)
    got = pace_ceiling.posterior_mean(np.array(lengths), grid)
    assert got == pytest.approx(brute_posterior_mean(lengths), abs=2e-3)
    assert 1.5 < got < 6.0


def test_short_shots_pull_the_posterior_down_and_a_censored_long_shot_up():
    grid = np.linspace(1.5, 6.0, pace_ceiling.GRID)
    assert pace_ceiling.posterior_mean(np.ones(20, dtype=int), grid) < 1.7
    # The same complete shots; a longer censored last shot can only raise the estimate.
    assert (pace_ceiling.posterior_mean(np.array([3, 4, 12]), grid)
            > pace_ceiling.posterior_mean(np.array([3, 4, 2]), grid))


def test_shot_lengths_are_the_runs():
    assert pace_ceiling.shot_lengths(np.array([5, 5, 2, 7, 7, 7, 5])).tolist() == [2, 1, 3, 1]
    assert pace_ceiling.shot_lengths(np.array([4])).tolist() == [1]


def test_ceilings_on_a_generated_corpus(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    synthetic.main(["--out", str(corpus), "--num_videos", "300", "--num_pretrain", "4", "--num_movies", "0",
                    "--dim", "16", "--num_scenes", "6"])
    out = tmp_path / "ceiling.jsonl"
    result = pace_ceiling.main(["--corpus", str(corpus), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out.splitlines()[-1])
    for split in ("val", "test"):
        r = result[split]
        assert r["videos"] > 0 and r["mean_shots"] > 1
        # The shots carry pace: the oracle is far below the trivial predictor.
        assert r["bayes_mse"] < 0.6 * r["trivial_mse"] and r["linear_rate_mse"] < r["trivial_mse"]
        assert r["bayes_ratio"] == pytest.approx(r["bayes_mse"] / r["trivial_mse"])


def test_not_a_corpus_names_the_file(tmp_path):
    with pytest.raises(UserError, match="latents.csv"):
        pace_ceiling.ceilings(tmp_path, ["test"])
