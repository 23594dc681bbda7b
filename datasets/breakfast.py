"""Breakfast (Kuehne et al., CVPR 2014): 10 cooking activities, video-level classification.

Annotations (``--annotations DIR``): ``DIR/train.csv`` and ``DIR/test.csv``, the single
train/test split of the long-video literature the paper compares with (Timeception, VideoGraph,
ViS4mer, Turbo, VideoMamba), each with the header ``file_name,duration,action,class_id``
(``file_name`` like ``P03-cam01-P03_cereals``, the store key; ``duration`` in seconds;
``action`` the activity name; ``class_id`` in 0..9). The papers print 1,357 / 335 videos; the
split files ViS4mer distributes have 1,357 / 355 rows (1,712 in all, the dataset size LV-MAE's
Sec. 4.1 gives), and those rows are what is evaluated.

Videos: the dataset's own tree (``BreakfastII_15fps_qvga_sync/P03/cam01/P03_cereals.avi``,
``P03/stereo/P03_cereals_ch0.avi``) keys a store by ``P03-cam01-P03_cereals`` /
``P03-stereo-P03_cereals_ch0`` when extracted with ``--id_layout breakfast``
(``video_id_from_path``: participant, camera and file name joined by ``-``).

``--bf_split s1..s4`` instead uses the dataset's own participant splits (pooling both files):
test = participants P03-P15 (s1), P16-P28 (s2), P29-P41 (s3), P42-P54 (s4), train = the rest.

Validation is always a seeded, stratified 10% of the training videos (``--split_seed``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.labelled import AnnotationError, Annotations, TaskSpec, parse_labels, stratified_holdout

NUM_CLASSES = 10
TASKS = ("activity",)
COLUMNS = ["file_name", "duration", "action", "class_id"]
VAL_FRACTION = 0.1
SPLITS = ("official", "s1", "s2", "s3", "s4")
# Test participants of the standard four splits (the dataset's own protocol).
PARTICIPANT_SPLITS = {"s1": range(3, 16), "s2": range(16, 29), "s3": range(29, 42), "s4": range(42, 55)}
_PARTICIPANT = re.compile(r"^P(\d+)")
_LAYOUT = re.compile(r"^P\d+$")


def video_id_from_path(path: str | Path) -> str:
    """``.../P03/cam01/P03_cereals.avi`` -> ``P03-cam01-P03_cereals`` (the split files' id)."""
    parts = Path(path).with_suffix("").parts[-3:]
    if len(parts) != 3 or not _LAYOUT.match(parts[0]):
        raise ValueError(f"{Path(path).as_posix()} is not in the Breakfast layout "
                         "<participant>/<camera>/<participant>_<activity>.avi (e.g. P03/cam01/P03_cereals.avi)")
    return "-".join(parts)


def load(root: str | Path | None, task: str = "activity", split: str = "official", split_seed: int = 0
         ) -> Annotations:
    if task not in TASKS:
        raise AnnotationError(f"unknown Breakfast --task {task!r}; Breakfast has one task: {TASKS[0]!r} (10 classes)")
    if split not in SPLITS:
        raise AnnotationError(f"unknown --bf_split {split!r}; choose from {', '.join(SPLITS)}")
    if root is None:
        raise AnnotationError("Breakfast needs --annotations DIR holding train.csv and test.csv "
                              f"({','.join(COLUMNS)})")
    root = Path(root)
    spec = TaskSpec("breakfast", task, "classification", NUM_CLASSES, 1.0 / NUM_CLASSES)
    files = {name: root / f"{name}.csv" for name in ("train", "test")}
    train, test = (read_csv(files[name], spec) for name in ("train", "test"))
    check_actions(pd.concat([train, test], ignore_index=True))
    src = {"train": str(files["train"]), "test": str(files["test"])}
    if split != "official":
        pool = pd.concat([train, test], ignore_index=True)
        person = pool.file_name.str.extract(_PARTICIPANT, expand=False)
        if person.isna().any():
            bad = pool.file_name[person.isna()].iloc[0]
            raise AnnotationError(f"{root}: file_name {bad!r} does not start with a participant id (P03...), "
                                  f"so --bf_split {split} cannot be used")
        is_test = person.astype(int).isin(PARTICIPANT_SPLITS[split]).to_numpy()
        train, test = pool[~is_test].reset_index(drop=True), pool[is_test].reset_index(drop=True)
        lo, hi = PARTICIPANT_SPLITS[split][0], PARTICIPANT_SPLITS[split][-1]
        src = {"train": f"{root} ({split}: all but P{lo:02d}-P{hi:02d})",
               "test": f"{root} ({split}: P{lo:02d}-P{hi:02d})"}
    train, val = stratified_holdout(train, VAL_FRACTION, split_seed)
    return Annotations(spec, {"train": train, "val": val, "test": test},
                       {"train": f"{src['train']} minus 10% val (seed {split_seed})",
                        "val": f"10% of {src['train']} (seed {split_seed})", "test": src["test"]})


def read_csv(path: Path, spec: TaskSpec) -> pd.DataFrame:
    if not path.is_file():
        raise AnnotationError(f"Breakfast annotation file {path} does not exist "
                              f"(--annotations must hold train.csv and test.csv with {','.join(COLUMNS)})")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path} is not a readable CSV: {' '.join(str(e).split())}") from None
    if list(df.columns) != COLUMNS:
        raise AnnotationError(f"{path} line 1: expected the header {','.join(COLUMNS)}, found {','.join(df.columns)}")
    label = parse_labels(df["class_id"], spec, path)
    duration = pd.to_numeric(df["duration"], errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~(duration > 0))
    if len(bad):
        raise AnnotationError(f"{path} line {bad[0] + 2}: duration {df['duration'].iloc[bad[0]]!r} is not a "
                              "positive number of seconds")
    for col in ("file_name", "action"):
        empty = np.flatnonzero(df[col].str.strip().eq("").to_numpy())
        if len(empty):
            raise AnnotationError(f"{path} line {empty[0] + 2}: empty {col}")
    out = pd.DataFrame({"video_id": df.file_name.str.strip(), "label": label, "file_name": df.file_name.str.strip(),
                        "action": df.action.str.strip(), "duration": duration})
    out.attrs["path"] = str(path)
    return out


def check_actions(df: pd.DataFrame) -> None:
    """Each activity name must map to one class id (a swapped column would not)."""
    ids = df.groupby("action")["label"].nunique()
    if (ids > 1).any():
        action = ids.index[ids > 1][0]
        found = sorted(df.label[df.action == action].unique().tolist())
        raise AnnotationError(f"Breakfast activity {action!r} has several class_ids {found} across train.csv/test.csv")
