"""Annotation parsers of the probing benchmarks: the shipped LVU files, COIN and Breakfast in
their real formats, the task layout of the synthetic corpus / user datasets, and bad input."""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from datasets import breakfast, coin, lvu
from datasets.benchmarks import load_annotations, tasks_of
from datasets.labelled import (AnnotationError, LabelledSequences, read_task_layout, stratified_holdout,
                               stratified_subset)
from util.long_video import VideoFeatures

# (train, val, test) rows of data/lvu_1.0, counted with `wc -l` minus the header.
LVU_COUNTS = {"director": (680, 163, 107), "genre": (3063, 597, 647), "writer": (769, 174, 168),
              "year": (770, 165, 143), "scene": (557, 120, 86), "way_speaking": (939, 205, 201),
              "relationship": (149, 53, 42), "like_ratio": (658, 142, 140), "view_count": (577, 124, 126)}


@pytest.mark.parametrize("task", lvu.TASKS)
def test_lvu_real_files_counts_and_labels(task):
    ann = lvu.load(None, task)
    assert tuple(ann.counts().values()) == LVU_COUNTS[task]
    for df in ann.splits.values():
        assert df.video_id.str.len().eq(11).all()  # YouTube ids
    if ann.spec.is_regression:
        y = np.concatenate([df.label.to_numpy() for df in ann.splits.values()])
        # The literature's offsets centre the targets: a wrong formula would not be near 0.
        assert abs(y.mean()) < 0.1 and np.isfinite(y).all()
    else:
        labels = np.concatenate([df.label.to_numpy() for df in ann.splits.values()])
        assert labels.min() >= 0 and labels.max() < ann.spec.num_classes


def test_lvu_labels_are_global_class_ids_and_targets_follow_the_formulas():
    director = lvu.load(None, "director")
    # director uses ids {0, 1, 4..9}: kept as they are, not re-indexed to 0..7
    assert set(director.splits["train"].label) == {0, 1, 4, 5, 6, 7, 8, 9}
    assert director.spec.num_classes == 10
    first = director.splits["train"].iloc[0]
    assert (first.video_id, first.label, first.raw) == ("-wX6_qCCnPc", 0, "nm0000229")
    like = lvu.load(None, "like_ratio").splits["train"].iloc[0]  # "100061 3801 29VjYkPPY2s tt0451279"
    assert like.video_id == "29VjYkPPY2s"
    assert like.label == pytest.approx(100061 / (100061 + 3801) * 10 - 9.138220535629456, abs=1e-12)
    views = lvu.load(None, "view_count").splits["train"].iloc[0]  # "100124 gFKba_Esjt0 tt0138524"
    assert views.video_id == "gFKba_Esjt0"
    assert views.label == pytest.approx(math.log(100124) - 11.76425435683139, abs=1e-12)


def test_lvu_bad_input_names_file_and_line(tmp_path):
    root = tmp_path / "lvu"
    shutil.copytree(lvu.DEFAULT_ROOT / "genre", root / "genre")
    lines = (root / "genre" / "val.csv").read_text().splitlines()
    lines[6] = "x Comedy abcdefghijk tt0000001"
    (root / "genre" / "val.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"genre/val\.csv line 7: class_id 'x'"):
        lvu.load(root, "genre")
    lines[6] = "4 Comedy abcdefghijk tt0000001"  # genre has 4 classes
    (root / "genre" / "val.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match="line 7: class_id 4 is outside"):
        lvu.load(root, "genre")
    shutil.copy(lvu.DEFAULT_ROOT / "genre" / "val.csv", root / "genre" / "val.csv")
    (root / "genre" / "test.csv").unlink()
    with pytest.raises(AnnotationError, match=r"genre/test\.csv does not exist"):
        lvu.load(root, "genre")
    with pytest.raises(AnnotationError, match="unknown LVU --task 'genres'"):
        lvu.load(root, "genres")


def _coin_json(path, per_class=10, classes=(0, 5, 179)):
    db = {}
    for c in classes:
        for i in range(per_class):
            db[f"c{c}t{i}"] = {"recipe_type": c, "class": f"Task{c}", "subset": "training", "start": 0.0, "end": 9.0,
                               "duration": 120.5, "video_url": "https://www.youtube.com/embed/x", "annotation": []}
        for i in range(3):
            db[f"c{c}e{i}"] = {"recipe_type": c, "class": f"Task{c}", "subset": "testing", "annotation": []}
    path.write_text(json.dumps({"database": db}))
    return path


def test_coin_parser_and_seeded_stratified_validation(tmp_path):
    path = _coin_json(tmp_path / "COIN.json")
    ann = coin.load(path)
    assert ann.spec.num_classes == 180 and ann.spec.name == "task"
    assert ann.counts() == {"train": 27, "val": 3, "test": 9}
    assert sorted(ann.splits["val"].label) == [0, 5, 179]  # 10% of each class, labels as given
    assert ann.splits["test"].video_id.str.contains("e").all()
    again = coin.load(tmp_path)  # the folder holding COIN.json works too
    pd.testing.assert_frame_equal(again.splits["val"], ann.splits["val"])
    other = [set(coin.load(path, split_seed=s).splits["val"].video_id) for s in range(1, 6)]
    assert any(o != set(ann.splits["val"].video_id) for o in other)


def test_coin_bad_input(tmp_path):
    path = _coin_json(tmp_path / "COIN.json")
    data = json.loads(path.read_text())
    data["database"]["c5t3"]["subset"] = "validation"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"database\['c5t3'\]\[\"subset\"\] = 'validation'"):
        coin.load(path)
    path.write_text('{"database": {"a": {"recipe_type": 1,\n "subset": "training",}}}')
    with pytest.raises(AnnotationError, match="COIN.json line 2"):
        coin.load(path)
    with pytest.raises(AnnotationError, match="does not exist"):
        coin.load(tmp_path / "missing.json")


ACTIVITIES = ["cereals", "coffee", "friedegg", "juice", "milk", "pancake", "salat", "sandwich", "scrambledegg", "tea"]


def _breakfast(root, persons_train=range(3, 50), persons_test=range(50, 55)):
    root.mkdir(parents=True, exist_ok=True)
    for name, persons in (("train", persons_train), ("test", persons_test)):
        rows = [f"P{p:02d}-cam01-P{p:02d}_{a},{60.0 + p},{a},{c}" for p in persons for c, a in enumerate(ACTIVITIES)]
        (root / f"{name}.csv").write_text("file_name,duration,action,class_id\n" + "\n".join(rows) + "\n")
    return root


def test_breakfast_parser_official_and_participant_splits(tmp_path):
    root = _breakfast(tmp_path / "bf")
    ann = breakfast.load(root)
    assert ann.spec.num_classes == 10
    assert ann.counts() == {"train": 47 * 10 - 50, "val": 50, "test": 50}  # val: round(4.7) = 5 per class
    assert ann.splits["val"].label.value_counts().eq(5).all()
    assert ann.splits["test"].video_id.iloc[0] == "P50-cam01-P50_cereals"
    s1 = breakfast.load(root, split="s1")
    persons = s1.splits["test"].video_id.str.slice(1, 3).astype(int)
    assert persons.between(3, 15).all() and persons.nunique() == 13
    train_persons = pd.concat([s1.splits["train"], s1.splits["val"]]).video_id.str.slice(1, 3).astype(int)
    assert not train_persons.between(3, 15).any()
    s4 = breakfast.load(root, split="s4")
    assert s4.splits["test"].video_id.str.slice(1, 3).astype(int).between(42, 54).all()


def test_breakfast_bad_input(tmp_path):
    root = _breakfast(tmp_path / "bf")
    lines = (root / "test.csv").read_text().splitlines()
    lines[3] = "P50-cam01-P50_friedegg,62.0,friedegg,12"
    (root / "test.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"test\.csv line 4: label '12' is not an integer class id in \[0, 10\)"):
        breakfast.load(root)
    lines[3] = "P50-cam01-P50_friedegg,62.0,friedegg,7"  # friedegg is class 2 in train.csv
    (root / "test.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match="activity 'friedegg' has several class_ids"):
        breakfast.load(root)
    (root / "test.csv").write_text("file_name,action,class_id\nP50-cam01-P50_tea,tea,9\n")
    with pytest.raises(AnnotationError, match=r"test\.csv line 1: expected the header"):
        breakfast.load(root)


def _layout(root, task="order", splits=None, kind="classification"):
    (root / task).mkdir(parents=True, exist_ok=True)
    (root / "tasks.json").write_text(json.dumps({task: {"type": kind, "num_classes": 3, "chance": 1 / 3}}))
    splits = splits or {"train": ["a", "b", "c"], "val": ["d"], "test": ["e", "f"]}
    for name, ids in splits.items():
        pd.DataFrame({"video_id": ids, "label": np.arange(len(ids)) % 3}).to_csv(root / task / f"{name}.csv",
                                                                                 index=False)
    return root


def test_task_layout_reader_and_errors(tmp_path):
    root = _layout(tmp_path / "tasks")
    ann = read_task_layout(root, "order")
    assert ann.spec.num_classes == 3 and ann.spec.chance == pytest.approx(1 / 3)
    assert ann.counts() == {"train": 3, "val": 1, "test": 2}
    assert tasks_of("synthetic", root) == ("order",)
    assert load_annotations("synthetic", None, root).spec.name == "order"  # the only task is the default
    with pytest.raises(AnnotationError, match="unknown --task 'grammar'.*tasks: order"):
        read_task_layout(root, "grammar")
    (root / "order" / "val.csv").write_text("video_id,label\nd,1\ng,2.5\n")
    with pytest.raises(AnnotationError, match=r"order/val\.csv line 3: label '2.5'"):
        read_task_layout(root, "order")
    leak = _layout(tmp_path / "leak", splits={"train": ["a", "b"], "val": ["c"], "test": ["b"]})
    with pytest.raises(AnnotationError, match="video 'b' is in both the train split.*and the test split"):
        read_task_layout(leak, "order")
    (root / "tasks.json").write_text("{oops")
    with pytest.raises(AnnotationError, match="tasks.json line 1: not valid JSON"):
        read_task_layout(root, "order")
    with pytest.raises(AnnotationError, match="unknown --dataset"):
        load_annotations("kinetics", "x")


def test_in_store_skips_and_counts_missing_videos_and_refuses_an_empty_split(tmp_path):
    ann = read_task_layout(_layout(tmp_path / "tasks"), "order")
    used, skipped = ann.in_store({"a", "c", "d", "f", "zzz"})
    assert used.counts() == {"train": 2, "val": 1, "test": 1}
    assert skipped == {"train": ["b"], "val": [], "test": ["e"]}
    with pytest.raises(AnnotationError, match="none of the 2 annotated test videos.*is in the store"):
        ann.in_store({"a", "d"})


def test_stratified_holdout_is_per_class_and_seeded():
    df = pd.DataFrame({"video_id": [f"v{i}" for i in range(50)], "label": [0] * 30 + [1] * 19 + [2]})
    train, val = stratified_holdout(df, 0.1, seed=0)
    assert val.label.value_counts().to_dict() == {0: 3, 1: 2}  # singleton class 2 stays in train
    assert len(train) + len(val) == 50 and not set(train.video_id) & set(val.video_id)
    train2, val2 = stratified_holdout(df, 0.1, seed=0)
    assert val2.video_id.tolist() == val.video_id.tolist()


def test_stratified_subset_per_class_nested_seeded():
    """Label-efficiency subsets: per class round(f * n) videos (at least one), nested across
    fractions for one seed, the same for the same seed, different for another."""
    labels = np.array([0] * 300 + [1] * 100 + [2] * 40 + [3] * 3)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    subsets = {f: stratified_subset(labels, f, seed=0) for f in (0.05, 0.1, 0.25, 1.0)}
    for f, idx in subsets.items():
        counts = np.bincount(labels[idx], minlength=4)
        expected = [max(1, math.floor(f * n + 0.5)) for n in (300, 100, 40, 3)]
        assert counts.tolist() == expected, (f, counts)
        assert (np.diff(idx) > 0).all()  # sorted, no repeats: the store's order is kept
    assert set(subsets[0.05]) <= set(subsets[0.1]) <= set(subsets[0.25]) <= set(subsets[1.0])
    assert len(subsets[1.0]) == len(labels)
    np.testing.assert_array_equal(stratified_subset(labels, 0.1, seed=0), subsets[0.1])
    assert set(stratified_subset(labels, 0.1, seed=1)) != set(subsets[0.1])
    with pytest.raises(ValueError, match="label fraction"):
        stratified_subset(labels, 0.0, seed=0)


def test_stratified_subset_regression_by_target_decile():
    """Regression: the subset covers the target's range like the full set (one tenth of each
    decile), where a uniform draw of 10 videos can miss the tails."""
    targets = np.random.default_rng(1).exponential(size=1000)
    idx = stratified_subset(targets, 0.1, seed=0, regression=True)
    assert len(idx) == 100
    deciles = np.quantile(targets, np.linspace(0, 1, 11)[1:-1])
    per_bin = np.bincount(np.searchsorted(deciles, targets[idx], side="right"), minlength=10)
    assert per_bin.tolist() == [10] * 10
    assert set(stratified_subset(targets, 0.05, seed=0, regression=True)) <= set(idx)


def test_labelled_sequences_subset_is_the_selected_videos():
    rng = np.random.default_rng(2)
    lengths = np.array([2, 5, 1, 4])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    feats = VideoFeatures([f"v{i}" for i in range(4)], rng.standard_normal((4, 3)).astype(np.float32),
                          rng.standard_normal((offsets[-1], 3)).astype(np.float32), offsets)
    data = LabelledSequences(feats, np.array([0, 1, 0, 1]))
    sub = data.subset([1, 3])
    assert len(sub) == 2 and sub.video_ids == ["v1", "v3"] and sub.labels.tolist() == [1, 1]
    for a, b in zip(sub.batch(torch.arange(2)), data.batch(torch.tensor([1, 3]))):
        torch.testing.assert_close(a, b)
    assert len(data) == 4  # the original is untouched
