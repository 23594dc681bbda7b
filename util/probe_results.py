"""``results.csv``: one row per probe run and seed, the input of ``reproduce_tables.py``.

Rows are keyed by ``(run_id, seed)``: writing a row again (a rerun, a resumed run) replaces it,
so the file never holds duplicates. Writes go through a lock file and tmp + ``os.replace``, so
concurrent probes appending to one folder neither lose rows nor leave a torn file.

Columns: ``run_id, dataset, task, probe (ap|lp), backbone (lvmae|none), encoder (the store
manifest's encoder string), masking, mask_ratio, depth (from the checkpoint; empty for the raw
backbone), positions (attentive classification heads: own | none), solver (adam | lbfgs), lr
(Adam), weight_decay (L-BFGS: the value chosen on validation), label_fraction, setting (a
readable summary of the head settings that differ from the paper's protocol), seed, metric
(top1 | mse), value, ci_low, ci_high (95% bootstrap interval over test videos of the run's mean
over seeds: the same on every seed's row), selected_epoch, epochs, chance (in the metric's
units), trivial (test metric of the training majority class / mean), n_train (videos trained
on), n_val, n_test, skipped, checkpoint, checkpoint_sha256, result_json, time``. Files written
before a column existed read it as empty.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from util.cli import UserError
from util.io import atomic_write_text

COLUMNS = ["run_id", "dataset", "task", "probe", "backbone", "encoder", "masking", "mask_ratio", "depth",
           "positions", "solver", "lr", "weight_decay", "label_fraction", "setting", "seed",
           "metric", "value", "ci_low", "ci_high", "selected_epoch", "epochs", "chance", "trivial", "n_train", "n_val",
           "n_test", "skipped", "checkpoint", "checkpoint_sha256", "result_json", "time"]
BOOTSTRAP_RESAMPLES = 2000


class ResultsError(UserError, ValueError):
    """A results file that cannot be read; the message names it."""


def read_csv(path: Path, **kw) -> pd.DataFrame:
    """``pd.read_csv`` that names the file when it is not a CSV at all."""
    try:
        return pd.read_csv(path, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not a readable probe results CSV ({' '.join(str(e).split())[:200]}); "
                           "move it away or delete it") from None


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_results(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    df = read_csv(path, dtype={"run_id": str, "encoder": str, "masking": str, "checkpoint": str,
                               "positions": str, "solver": str, "setting": str},
                 keep_default_na=False, na_values={"value": [""], "chance": [""], "trivial": [""]})
    missing = [c for c in ("dataset", "task", "probe", "backbone", "seed", "metric", "value") if c not in df.columns]
    if missing:
        raise ResultsError(f"{path} is not a probe results file: it lacks the columns {missing}")
    return df.reindex(columns=COLUMNS, fill_value="")


def read_table(path: str | Path, columns: list[str], key=("run_id",)) -> pd.DataFrame:
    """Another results table of ``columns`` (e.g. ``engine_retrieval``'s), keyed by ``key``; all
    cells read as strings, missing columns as empty."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    df = read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    if not set(key) <= set(df.columns):
        raise ResultsError(f"{path} is not a results table of this kind: it lacks the columns {list(key)}")
    return df.reindex(columns=columns, fill_value="")


def write_row(path: str | Path, row: dict, columns: list[str] = COLUMNS, key=("run_id", "seed")) -> None:
    """Insert or replace the row of ``path`` whose ``key`` columns equal ``row``'s (default: the
    probes' ``(run_id, seed)``; other tables pass their ``columns`` and ``key``)."""
    path = Path(path)
    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"unknown results columns {sorted(unknown)}")
    with _locked(path):
        df = read_results(path) if columns is COLUMNS else read_table(path, columns, key)
        if len(df):
            same = np.ones(len(df), dtype=bool)
            for k in key:
                same &= (df[k].astype(str) == str(row[k])).to_numpy()
            df = df[~same]
        new = pd.DataFrame([{c: row.get(c, "") for c in columns}])
        df = new if not len(df) else pd.concat([df, new], ignore_index=True)
        atomic_write_text(path, df[columns].to_csv(index=False))


def has_row(path: str | Path, run_id: str, seed: int) -> bool:
    df = read_results(path)
    return bool(len(df) and ((df.run_id.astype(str) == run_id) & (df.seed.astype(int) == seed)).any())


def bootstrap_interval(scores, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds of a per-video metric.

    ``scores [seeds, videos]`` (or ``[videos]``): each seed's score of each test video (1/0
    correct, or the squared error), in the same video order for every seed. Each resample draws
    the test videos with replacement (one draw shared by all seeds, since they are scored on the
    same videos), takes every seed's metric on it and averages over seeds; the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of that average. Seeded: the same
    scores give the same interval."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    per_video = s.mean(0)  # the mean over seeds of a mean over videos is the mean of the per-video means
    n = per_video.shape[0]
    if n == 0:
        raise ValueError("no test video to bootstrap")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for start in range(0, resamples, 256):  # blocks keep the index array small for large test sets
        idx = rng.integers(0, n, size=(min(256, resamples - start), n))
        stats[start:start + len(idx)] = per_video[idx].mean(1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
