"""``results.csv``: one row per probe run and seed, the input of ``reproduce_tables.py``.

Rows are keyed by ``(run_id, seed)``: writing a row again (a rerun, a resumed run) replaces it,
so the file never holds duplicates. Writes go through a lock file and tmp + ``os.replace``, so
concurrent probes appending to one folder neither lose rows nor leave a torn file.

Columns: ``run_id, dataset, task, probe (ap|lp), backbone (lvmae|none), encoder (the store
manifest's encoder string), masking, mask_ratio, depth (from the checkpoint; empty for the raw
backbone), seed, metric (top1 | mse), value, selected_epoch, epochs, chance (in the metric's
units), trivial (test metric of the training majority class / mean), n_train, n_val, n_test,
skipped, checkpoint, checkpoint_sha256, result_json, time``.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from util.cli import UserError
from util.io import atomic_write_text

COLUMNS = ["run_id", "dataset", "task", "probe", "backbone", "encoder", "masking", "mask_ratio", "depth", "seed",
           "metric", "value", "selected_epoch", "epochs", "chance", "trivial", "n_train", "n_val", "n_test", "skipped",
           "checkpoint", "checkpoint_sha256", "result_json", "time"]


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
    df = read_csv(path, dtype={"run_id": str, "encoder": str, "masking": str, "checkpoint": str},
                     keep_default_na=False, na_values={"value": [""], "chance": [""], "trivial": [""]})
    missing = [c for c in ("dataset", "task", "probe", "backbone", "seed", "metric", "value") if c not in df.columns]
    if missing:
        raise ResultsError(f"{path} is not a probe results file: it lacks the columns {missing}")
    return df.reindex(columns=COLUMNS, fill_value="")


def write_row(path: str | Path, row: dict) -> None:
    """Insert or replace the row ``(row['run_id'], row['seed'])`` of ``path``."""
    path = Path(path)
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown results columns {sorted(unknown)}")
    with _locked(path):
        df = read_results(path)
        if len(df):
            df = df[~((df.run_id.astype(str) == str(row["run_id"])) & (df.seed.astype(int) == int(row["seed"])))]
        new = pd.DataFrame([{c: row.get(c, "") for c in COLUMNS}])
        df = new if not len(df) else pd.concat([df, new], ignore_index=True)
        atomic_write_text(path, df[COLUMNS].to_csv(index=False))


def has_row(path: str | Path, run_id: str, seed: int) -> bool:
    df = read_results(path)
    return bool(len(df) and ((df.run_id.astype(str) == run_id) & (df.seed.astype(int) == seed)).any())
