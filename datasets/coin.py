"""COIN (Tang et al., CVPR 2019): 180 procedural tasks, video-level task classification.

Annotation file: the official ``COIN.json``::

    {"database": {"<youtube id>": {"recipe_type": <int>, "class": "<task name>",
                                   "subset": "training" | "testing", ...}, ...}}

The label is ``recipe_type`` as given (a global id, never re-indexed; the head has
``max(180, largest id + 1)`` outputs, so 0- and 1-based id files both work). ``testing`` is the
test split; validation is a seeded, stratified 10% of ``training`` (``--split_seed``), so epoch
selection never sees the test videos. Store keys are the YouTube ids (the ``database`` keys;
extract COIN's ``videos/<recipe_type>/<youtube id>.mp4`` tree with ``--id_layout name``).

As ViS4mer (whose COIN protocol the paper follows), the two ids ``DROPPED_IDS`` are left out
of every split whatever the store holds, so train / test counts match theirs.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from datasets.labelled import AnnotationError, Annotations, TaskSpec, stratified_holdout
from util.io import read_json

NUM_CLASSES = 180
TASKS = ("task",)
VAL_FRACTION = 0.1
# Left out by ViS4mer's COIN loader (md-mohaiminul/ViS4mer); we do the same.
DROPPED_IDS = ("AfiVmAjfTNs", "cjwtcDKTQM8")


def load(path: str | Path | None, task: str = "task", split_seed: int = 0) -> Annotations:
    if task not in TASKS:
        raise AnnotationError(f"unknown COIN --task {task!r}; COIN has one task: {TASKS[0]!r} (180 classes)")
    if path is None:
        raise AnnotationError("COIN needs --annotations PATH/TO/COIN.json (the official annotation file)")
    path = Path(path)
    if path.is_dir():
        path = path / "COIN.json"
    data = read_json(path, AnnotationError, f"COIN annotation file {path} does not exist")
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict) or not db:
        raise AnnotationError(f"{path}: expected {{\"database\": {{video_id: {{recipe_type, class, subset}}}}}}")
    rows = []
    for vid, entry in db.items():
        if vid in DROPPED_IDS:
            continue
        if not isinstance(entry, dict):
            raise AnnotationError(f"{path}: database[{vid!r}] is not an object")
        rtype, subset = entry.get("recipe_type"), entry.get("subset")
        if isinstance(rtype, bool) or not isinstance(rtype, int) or rtype < 0:
            raise AnnotationError(f"{path}: database[{vid!r}][\"recipe_type\"] = {rtype!r} is not a "
                                  "non-negative integer")
        if subset not in ("training", "testing"):
            raise AnnotationError(f"{path}: database[{vid!r}][\"subset\"] = {subset!r}, expected "
                                  "'training' or 'testing'")
        rows.append((vid, rtype, subset, str(entry.get("class", ""))))
    df = pd.DataFrame(rows, columns=["video_id", "label", "subset", "class"])
    num_classes = max(NUM_CLASSES, int(df.label.max()) + 1)
    spec = TaskSpec("coin", task, "classification", num_classes, 1.0 / NUM_CLASSES)
    train, val = stratified_holdout(df[df.subset == "training"].reset_index(drop=True), VAL_FRACTION, split_seed)
    test = df[df.subset == "testing"].reset_index(drop=True)
    if not len(train) or not len(test):
        raise AnnotationError(f"{path}: no {'training' if not len(train) else 'testing'} videos")
    src = f"{path} without {', '.join(DROPPED_IDS)} (as ViS4mer)"
    return Annotations(spec, {"train": train, "val": val, "test": test},
                       {"train": f"{src} (training minus 10% val, seed {split_seed})",
                        "val": f"{src} (10% of training, seed {split_seed})", "test": f"{src} (testing)"})
