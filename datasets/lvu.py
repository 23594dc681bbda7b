"""LVU 1.0 (Wu & Krähenbühl, CVPR 2021): 7 classification and 2 regression tasks on movie clips.

Files (``data/lvu_1.0/<task>/{train,val,test}.csv``, shipped in this repository; format in
``data/README.md``): space-separated, header line first.

- classification: ``class_id class_name youtube_id imdb_id``; the label is the global
  ``class_id`` (never re-indexed per split; some ids occur in no split, e.g. director 2, 3).
  Class names may contain spaces or ``\\N``: the id is the first field, the two ids the last two.
- ``like_ratio``: ``like_count dislike_count youtube_id imdb_id``;
  target ``like / (like + dislike) * 10 - 9.138220535629456``.
- ``view_count``: ``view_count youtube_id imdb_id``; target ``log(view_count) - 11.76425435683139``.

The regression offsets are the constants the LVU literature (ViS4mer and its successors) uses,
so the MSEs are comparable with the paper's Table 1. Store keys are the ``youtube_id``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.labelled import SPLITS, AnnotationError, Annotations, TaskSpec

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "data" / "lvu_1.0"

# Number of classes of each classification task (the ids in the files are global).
CLASSIFICATION = {"director": 10, "genre": 4, "writer": 10, "year": 9, "scene": 6, "way_speaking": 5,
                  "relationship": 4}
REGRESSION = ("like_ratio", "view_count")
TASKS = tuple(CLASSIFICATION) + REGRESSION
LIKE_RATIO_OFFSET = 9.138220535629456
VIEW_COUNT_OFFSET = 11.76425435683139

HEADERS = {"like_ratio": ["like_count", "dislike_count", "youtube_id", "imdb_id"],
           "view_count": ["view_count", "youtube_id", "imdb_id"]}
CLS_HEADER = ["class_id", "class_name", "youtube_id", "imdb_id"]


def spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise AnnotationError(f"unknown LVU --task {task!r}; tasks: {', '.join(TASKS)}")
    if task in CLASSIFICATION:
        return TaskSpec("lvu", task, "classification", CLASSIFICATION[task], 1.0 / CLASSIFICATION[task])
    return TaskSpec("lvu", task, "regression", 1)


def load(root: str | Path | None, task: str) -> Annotations:
    s = spec(task)
    root = Path(root) if root else DEFAULT_ROOT
    splits, sources = {}, {}
    for name in SPLITS:
        path = root / task / f"{name}.csv"
        splits[name], sources[name] = read_split(path, s), str(path)
    return Annotations(s, splits, sources)


def read_split(path: Path, s: TaskSpec) -> pd.DataFrame:
    """One LVU file -> ``video_id, label`` (+ the raw fields, for reference)."""
    if not path.is_file():
        raise AnnotationError(f"LVU annotation file {path} does not exist (--annotations is the lvu_1.0 folder)")
    lines = path.read_text().splitlines()
    header = HEADERS.get(s.name, CLS_HEADER)
    if not lines or lines[0].split() != header:
        raise AnnotationError(f"{path} line 1: expected the header {' '.join(header)!r}, "
                              f"found {lines[0] if lines else '(empty file)'!r}")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        try:
            rows.append(_parse(fields, s))
        except (ValueError, IndexError) as e:
            raise AnnotationError(f"{path} line {lineno}: {e} (line: {line.strip()!r})") from None
    if not rows:
        raise AnnotationError(f"{path}: no annotation rows after the header")
    return pd.DataFrame(rows, columns=["video_id", "label", "raw"]).astype({"label": np.float64 if s.is_regression
                                                                            else np.int64})


def _parse(fields: list[str], s: TaskSpec) -> tuple[str, float | int, str]:
    if s.name == "like_ratio":
        if len(fields) != 4:
            raise ValueError(f"expected 4 fields, got {len(fields)}")
        like, dislike = _count(fields[0], "like_count"), _count(fields[1], "dislike_count")
        if like + dislike == 0:
            raise ValueError("like_count + dislike_count is 0: the like ratio is undefined")
        return fields[2], like / (like + dislike) * 10 - LIKE_RATIO_OFFSET, f"{like} {dislike}"
    if s.name == "view_count":
        if len(fields) != 3:
            raise ValueError(f"expected 3 fields, got {len(fields)}")
        views = _count(fields[0], "view_count")
        if views < 1:
            raise ValueError("view_count must be at least 1 (its log is the target)")
        return fields[1], math.log(views) - VIEW_COUNT_OFFSET, str(views)
    if len(fields) < 4:
        raise ValueError(f"expected 'class_id class_name youtube_id imdb_id', got {len(fields)} fields")
    cid = _count(fields[0], "class_id")
    if cid >= s.num_classes:
        raise ValueError(f"class_id {cid} is outside [0, {s.num_classes}) for LVU {s.name}")
    return fields[-2], cid, " ".join(fields[1:-2])


def _count(text: str, name: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{name} {text!r} is not a non-negative integer")
    return int(text)
