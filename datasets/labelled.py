"""Labelled long-video tasks: annotations per split, and the one dataset every probe trains on.

Each benchmark module (``datasets/lvu.py``, ``coin.py``, ``breakfast.py``) turns its official
annotation files into :class:`Annotations`: a :class:`TaskSpec` plus, per split
(``train``/``val``/``test``), a frame of ``video_id, label`` rows. The synthetic corpus and any
user dataset use the *task layout* read by :func:`read_task_layout`::

    <root>/tasks.json              {task: {"type": "classification"|"regression",
                                           "num_classes": k, "chance": x}}
    <root>/<task>/{train,val,test}.csv   video_id,label

Labels are never re-indexed per split: a class id means the same class in every split.
:class:`LabelledSequences` holds the frozen features of one split (``VideoFeatures``: tokens of
all videos back to back) with their labels and gathers padded batches with one index tensor.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Container, Iterator

import numpy as np
import pandas as pd
import torch

from util.cli import UserError
from util.long_video import VideoFeatures

SPLITS = ("train", "val", "test")
TASK_TYPES = ("classification", "regression")


class AnnotationError(UserError, ValueError):
    """Annotations that cannot be used as asked; the message names the file (and line)."""


@dataclass(frozen=True)
class TaskSpec:
    dataset: str
    name: str
    type: str  # "classification" | "regression"
    num_classes: int  # 1 for regression
    chance: float | None = None  # as published by the task's source, if any

    @property
    def is_regression(self) -> bool:
        return self.type == "regression"

    @property
    def metric(self) -> str:
        """``top1`` (accuracy in %, higher is better) or ``mse`` (lower is better)."""
        return "mse" if self.is_regression else "top1"

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_regression else self.num_classes


@dataclass
class Annotations:
    """``splits[name]``: DataFrame ``video_id`` (str), ``label`` (int64 class id or float64 target)."""
    spec: TaskSpec
    splits: dict[str, pd.DataFrame]
    sources: dict[str, str] = field(default_factory=dict)  # split -> the file it came from

    def __post_init__(self):
        for name in SPLITS:
            if name not in self.splits:
                raise AnnotationError(f"{self.spec.dataset}/{self.spec.name}: no {name!r} split")
        seen: dict[str, str] = {}
        for name in SPLITS:
            df = self.splits[name]
            dup = df.video_id[df.video_id.duplicated()]
            if len(dup):
                raise AnnotationError(f"{self.sources.get(name, name)}: video {dup.iloc[0]!r} is annotated twice "
                                      f"in the {name} split")
            for vid in df.video_id:
                if vid in seen:
                    raise AnnotationError(f"video {vid!r} is in both the {seen[vid]} split "
                                          f"({self.sources.get(seen[vid], '?')}) and the {name} split "
                                          f"({self.sources.get(name, '?')}): train/test leak")
                seen[vid] = name

    def counts(self) -> dict[str, int]:
        return {name: len(self.splits[name]) for name in SPLITS}

    def in_store(self, available: Container[str], store_name: str = "the store"
                 ) -> tuple["Annotations", dict[str, list[str]]]:
        """Keep the annotated videos present in ``available``, sorted by id (the order the
        features are cached in). Returns the kept annotations and the skipped ids per split;
        refuses a split left empty (nothing to train on / select with / report)."""
        kept, skipped = {}, {}
        for name in SPLITS:
            df = self.splits[name]
            present = df.video_id.map(lambda v: v in available).to_numpy(bool)
            skipped[name] = sorted(df.video_id[~present])
            kept[name] = df[present].sort_values("video_id", kind="stable").reset_index(drop=True)
            if not len(kept[name]):
                example = ", ".join(repr(v) for v in df.video_id[:3])
                raise AnnotationError(
                    f"{self.spec.dataset} task {self.spec.name!r}: none of the {len(df)} annotated {name} videos "
                    f"(e.g. {example}; from {self.sources.get(name, '?')}) is in {store_name}. "
                    "Is --data_path the embedding store of this dataset, keyed by the same video ids?")
        return Annotations(self.spec, kept, dict(self.sources)), skipped


# --- the task layout (synthetic corpus, user datasets) ------------------------------------------
def read_tasks_json(root: str | Path) -> dict:
    path = Path(root) / "tasks.json"
    if not path.is_file():
        raise AnnotationError(f"{path} does not exist: --annotations must be a task directory holding "
                              "tasks.json and <task>/{train,val,test}.csv")
    try:
        tasks = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(tasks, dict) or not tasks:
        raise AnnotationError(f"{path}: expected a non-empty object {{task: {{type, num_classes, chance}}}}")
    for name, spec in tasks.items():
        if not isinstance(spec, dict) or spec.get("type") not in TASK_TYPES:
            raise AnnotationError(f"{path}: task {name!r} needs \"type\": one of {TASK_TYPES}")
        if spec["type"] == "classification" and not (isinstance(spec.get("num_classes"), int)
                                                     and spec["num_classes"] >= 2):
            raise AnnotationError(f"{path}: classification task {name!r} needs an integer \"num_classes\" >= 2")
    return tasks


def read_task_layout(root: str | Path, task: str, dataset: str = "synthetic") -> Annotations:
    root = Path(root)
    tasks = read_tasks_json(root)
    if task not in tasks:
        raise AnnotationError(f"unknown --task {task!r} for {root / 'tasks.json'}; tasks: {', '.join(tasks)}")
    raw = tasks[task]
    spec = TaskSpec(dataset, task, raw["type"], int(raw.get("num_classes", 1)) if raw["type"] == "classification"
                    else 1, None if raw.get("chance") is None else float(raw["chance"]))
    splits = {name: read_label_csv(root / task / f"{name}.csv", spec) for name in SPLITS}
    return Annotations(spec, splits, {name: str(root / task / f"{name}.csv") for name in SPLITS})


def read_label_csv(path: Path, spec: TaskSpec) -> pd.DataFrame:
    """``video_id,label`` CSV -> checked frame; errors name the file and the line."""
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path} is not a readable CSV: {' '.join(str(e).split())}") from None
    missing = [c for c in ("video_id", "label") if c not in df.columns]
    if missing:
        raise AnnotationError(f"{path} lacks the columns {missing} (header: {list(df.columns)})")
    label = parse_labels(df["label"], spec, path)
    empty = np.flatnonzero(df["video_id"].str.strip().eq("").to_numpy())
    if len(empty):
        raise AnnotationError(f"{path} line {empty[0] + 2}: empty video_id")
    return pd.DataFrame({"video_id": df["video_id"].str.strip(), "label": label})


def parse_labels(values: pd.Series, spec: TaskSpec, path, first_line: int = 2) -> np.ndarray:
    """Strings -> int64 class ids in ``[0, num_classes)`` or finite float64 targets (no ``eval``).
    ``first_line`` is the file line of ``values[0]`` (2 after a header)."""
    num = pd.to_numeric(values.str.strip(), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(num)
    if not spec.is_regression:
        bad |= (num != np.round(num)) | (num < 0) | (num >= spec.num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        want = ("a finite number" if spec.is_regression
                else f"an integer class id in [0, {spec.num_classes})")
        raise AnnotationError(f"{path} line {i + first_line}: label {values.iloc[i]!r} is not {want}")
    return num if spec.is_regression else num.astype(np.int64)


def stratified_holdout(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` into (train, val): per class ``round(fraction * n)`` videos (at least one
    for classes with two or more videos, none for singletons) drawn with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    key = np.random.default_rng(seed).random(len(df))
    groups = df.assign(_key=key).groupby("label", sort=False)["_key"]
    rank = groups.rank(method="first").to_numpy() - 1
    size = groups.transform("size").to_numpy()
    take = np.where(size >= 2, np.maximum(1, np.floor(fraction * size + 0.5)), 0)
    val = rank < take
    return df[~val].reset_index(drop=True), df[val].reset_index(drop=True)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int, regression: bool = False,
                      bins: int = 10) -> np.ndarray:
    """Sorted indices of a seeded, stratified ``fraction`` of ``labels`` (the label-efficiency
    subsets): per stratum ``round(fraction * n)`` videos, at least one. Strata are the classes,
    or for regression ``bins`` quantile bins of the target. Each video gets one random key from
    ``seed`` and a stratum keeps its lowest keys, so for one seed the subsets are nested
    (5% within 10% within 25%) and do not depend on anything but the labels and the seed."""
    labels = np.asarray(labels)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(len(labels))
    if regression:
        edges = np.quantile(labels.astype(np.float64), np.linspace(0, 1, bins + 1)[1:-1])
        strata = np.searchsorted(edges, labels, side="right")
    else:
        strata = labels
    key = np.random.default_rng([seed, 0x1abe1]).random(len(labels))
    frame = pd.DataFrame({"stratum": strata, "key": key})
    groups = frame.groupby("stratum", sort=False)["key"]
    rank = groups.rank(method="first").to_numpy() - 1
    take = np.maximum(1, np.floor(fraction * groups.transform("size").to_numpy() + 0.5))
    return np.flatnonzero(rank < take)


# --- the dataset the probes train on -------------------------------------------------------------
class LabelledSequences:
    """Frozen features of one split plus labels.

    ``batch(idx)`` returns ``cls [B, E]``, ``tokens [B, L, E]`` (zero at padding, ``L`` = the
    longest video of the batch), ``pad [B, L]`` bool (True = padding) and ``y [B]``, gathered
    from the back-to-back token array with one index tensor.
    """

    def __init__(self, features: VideoFeatures, labels: np.ndarray, device="cpu"):
        if len(labels) != len(features.video_ids):
            raise ValueError(f"{len(labels)} labels for {len(features.video_ids)} videos")
        self.video_ids = list(features.video_ids)
        self.tokens = torch.as_tensor(np.ascontiguousarray(features.tokens), dtype=torch.float32, device=device)
        self.cls = torch.as_tensor(np.ascontiguousarray(features.cls), dtype=torch.float32, device=device)
        offsets = torch.as_tensor(np.asarray(features.offsets), dtype=torch.long, device=device)
        self.starts, self.lengths = offsets[:-1], offsets[1:] - offsets[:-1]
        self.labels = torch.as_tensor(np.array(labels), device=device)
        self.dim = self.tokens.shape[1]

    def __len__(self) -> int:
        return len(self.video_ids)

    def subset(self, idx) -> "LabelledSequences":
        """The videos ``idx`` (a view: the token array is shared, not copied)."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long, device=self.tokens.device)
        out = copy.copy(self)
        out.video_ids = [self.video_ids[i] for i in idx.tolist()]
        out.cls, out.starts, out.lengths, out.labels = (self.cls[idx], self.starts[idx], self.lengths[idx],
                                                        self.labels[idx])
        return out

    def batch(self, idx: torch.Tensor):
        lengths = self.lengths[idx]
        L = int(lengths.max())
        steps = torch.arange(L, device=self.tokens.device)
        pad = steps[None] >= lengths[:, None]
        rows = (self.starts[idx, None] + steps[None]).clamp(max=self.tokens.shape[0] - 1)
        x = self.tokens[rows].masked_fill(pad[..., None], 0.0)
        return self.cls[idx], x, pad, self.labels[idx]

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for idx in order.to(self.tokens.device).split(batch_size):
            yield self.batch(idx)
