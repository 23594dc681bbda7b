r"""How well can *anything* predict the synthetic corpus's ``pace``? (issue "Validity II": the
target "pace MSE at most 0.35 of the training mean's" is only meaningful beside this ceiling.)

A video's pace ``tau ~ U[1.5, 6]`` is the mean of its shot lengths ``1 + Poisson(tau - 1)``
(``datasets/synthetic.py``), and an LVU-length video has only a few shots (the last one cut by
the video's end), so even an oracle that sees every true shot boundary cannot know ``tau``
exactly. This script computes, from the corpus's own ground truth (``captions.csv``: the scene of
every segment; consecutive shots never share a scene, so a caption change is a shot boundary;
``latents.csv``: ``tau``, ``split``):

- ``bayes``: the posterior mean of ``tau`` given the true shot lengths (uniform prior on the
  generator's range, the Poisson likelihood of the complete shots, the survival function for the
  last, censored, one), on a grid. It minimises the expected squared error among *all*
  predictors that see the shots, so no probe of any encoder can beat it on average;
- ``linear_rate``: least squares of ``tau`` on ``[1, n_shots / n, 1 / n]`` fitted on the training
  split: a linear read-out of an ideal boundary detector's mean-pooled output, the best a mean-pool
  linear probe on "is there a cut here" features gets;
- ``trivial``: the training split's mean ``tau`` (the denominator of the issue's ratio).

Each as test (and validation) MSE and as a fraction of the trivial MSE on the same split.

    python benchmarks/pace_ceiling.py --corpus demo_out/corpus
    python benchmarks/pace_ceiling.py --corpus demo_out/corpus --splits val test --out ceiling.jsonl

One JSON line on stdout (appended to ``--out`` if given). Numpy and pandas only; seconds.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from datasets.synthetic import PACE_RANGE  # noqa: E402
from util.cli import ArgumentParser, UserError, run_cli  # noqa: E402
from util.logging import emit_json_line  # noqa: E402

GRID = 2001  # posterior grid points over PACE_RANGE


def get_args_parser():
    p = argparse.ArgumentParser("Oracle ceilings for the synthetic pace task", add_help=False)
    p.add_argument("--corpus", required=True, help="a datasets.synthetic output directory")
    p.add_argument("--splits", nargs="+", default=["val", "test"], choices=["train", "val", "test"],
                   help="splits to evaluate (the linear read-out is always fitted on train)")
    p.add_argument("--out", default=None, help="append the JSON line to this file")
    return p


def shot_lengths(scenes: np.ndarray) -> np.ndarray:
    """Lengths of the runs of equal values in ``scenes`` (in order)."""
    cuts = np.flatnonzero(np.diff(scenes) != 0) + 1
    return np.diff(np.concatenate([[0], cuts, [len(scenes)]]))


def log_poisson(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """log P(Poisson(lam) = k) for every k (rows) and lam (columns)."""
    k = np.asarray(k, dtype=np.float64).reshape(-1, 1)
    lgamma = np.array([math.lgamma(v + 1.0) for v in k[:, 0]]).reshape(-1, 1)
    return k * np.log(lam)[None, :] - lam[None, :] - lgamma


def log_poisson_sf(k: int, lam: np.ndarray) -> np.ndarray:
    """log P(Poisson(lam) >= k) for every lam: the tail summed term by term (``1 - cdf`` cancels
    for a long censored shot); lam <= 5 here, so 150 terms past k leave nothing out."""
    if k <= 0:
        return np.zeros_like(lam)
    terms = log_poisson(np.arange(k, k + 150), lam)
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0))


def posterior_mean(lengths: np.ndarray, grid: np.ndarray) -> float:
    """E[tau | shot lengths] under tau ~ U(grid range), lengths 1 + Poisson(tau - 1), the last censored."""
    lam = grid - 1.0
    loglik = log_poisson(lengths[:-1] - 1, lam).sum(axis=0) + log_poisson_sf(int(lengths[-1]) - 1, lam)
    w = np.exp(loglik - loglik.max())
    return float((w * grid).sum() / w.sum())


def ceilings(corpus: Path, splits: list[str]) -> dict:
    latents_path, captions_path = corpus / "latents.csv", corpus / "captions.csv"
    for path in (latents_path, captions_path):
        if not path.is_file():
            raise UserError(f"--corpus {corpus}: no {path.name} (not a datasets.synthetic output?)")
    latents = pd.read_csv(latents_path)
    latents = latents[latents["kind"] == "benchmark"].set_index("video_id")
    captions = pd.read_csv(captions_path)
    captions = captions[captions["video_id"].isin(latents.index)].sort_values(["video_id", "segment"])
    scene_code = pd.factorize(captions["caption"])[0]
    grid = np.linspace(*PACE_RANGE, GRID)
    rows = []
    for vid, idx in captions.groupby("video_id", sort=False).indices.items():
        lengths = shot_lengths(scene_code[idx])
        rows.append((vid, posterior_mean(lengths, grid), len(lengths), int(lengths.sum())))
    feats = pd.DataFrame(rows, columns=["video_id", "bayes", "shots", "n"]).set_index("video_id")
    table = latents.join(feats, how="inner")
    if len(table) != len(latents):
        raise UserError(f"--corpus {corpus}: {len(latents) - len(table)} benchmark videos have no captions")
    design = lambda t: np.stack([np.ones(len(t)), t["shots"] / t["n"], 1.0 / t["n"]], axis=1)  # noqa: E731
    train = table[table["split"] == "train"]
    coef, *_ = np.linalg.lstsq(design(train), train["pace"].to_numpy(), rcond=None)
    mean_train = float(train["pace"].mean())
    result = {"benchmark": "pace_ceiling", "corpus": str(corpus), "train_videos": len(train),
              "train_mean_pace": mean_train}
    for split in splits:
        t = table[table["split"] == split]
        if t.empty:
            raise UserError(f"--corpus {corpus}: no {split} videos")
        y = t["pace"].to_numpy()
        trivial = float(np.mean((y - mean_train) ** 2))
        bayes = float(np.mean((y - t["bayes"].to_numpy()) ** 2))
        linear = float(np.mean((y - design(t) @ coef) ** 2))
        result[split] = {"videos": len(t), "mean_shots": float(t["shots"].mean()), "trivial_mse": trivial,
                         "bayes_mse": bayes, "bayes_ratio": bayes / trivial,
                         "linear_rate_mse": linear, "linear_rate_ratio": linear / trivial}
    return result


def main(argv=None) -> dict:
    args = ArgumentParser(parents=[get_args_parser()], description=__doc__.split("\n\n")[0]).parse_args(argv)
    result = ceilings(Path(args.corpus), args.splits)
    emit_json_line(result, args.out)
    return result


if __name__ == "__main__":
    run_cli(main)
