"""The real datasets' own layouts: Breakfast's folder tree keyed by its split files' ids, COIN's
official COIN.json (with the two ids ViS4mer leaves out) and its videos/<class>/<id>.mp4 tree."""
import json

import pandas as pd
import pytest

from datasets import breakfast, coin
from preprocessing.video_list import VideoListError, list_videos

# the dataset's tree (BreakfastII_15fps_qvga_sync) and the ids its split files use for those files
BREAKFAST = {f"{p}/{cam}/{p}_{act}{ch}.avi": f"{p}-{cam}-{p}_{act}{ch}"
             for p in ("P03", "P04", "P16", "P29", "P41", "P54") for act in ("cereals", "milk")
             for cam, ch in (("cam01", ""), ("webcam02", ""), ("stereo", "_ch0"))}


def touch(root, rel):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_breakfast_tree_is_keyed_by_its_split_file_ids(tmp_path):
    root = tmp_path / "BreakfastII_15fps_qvga_sync"
    for rel in BREAKFAST:
        touch(root, rel)
    ids = sorted(BREAKFAST.values())
    default = list_videos([root]).video_id.tolist()
    assert "P03/cam01/P03_cereals" in default and not set(default) & set(ids)  # every split row would be skipped
    assert list_videos([root], id_layout="breakfast").video_id.tolist() == ids
    assert list_videos([tmp_path], id_layout="breakfast").video_id.tolist() == ids  # from any parent directory
    # every row of the split files finds its store key
    ann = tmp_path / "splits"
    ann.mkdir()
    rows = pd.DataFrame({"file_name": ids, "duration": 60.0})
    rows["action"] = rows.file_name.str.extract(r"_(cereals|milk)", expand=False)
    rows["class_id"] = (rows.action == "milk").astype(int)
    test = rows.file_name.str.match(r"P0[34]")  # participants P03-P15 are the test split of s1
    rows[~test].to_csv(ann / "train.csv", index=False)
    rows[test].to_csv(ann / "test.csv", index=False)
    kept, skipped = breakfast.load(ann).in_store(set(list_videos([root], id_layout="breakfast").video_id))
    assert sum(map(len, skipped.values())) == 0 and sum(map(len, kept.splits.values())) == len(ids)
    touch(root, "extras/readme.avi")
    with pytest.raises(VideoListError, match="not in the Breakfast layout"):
        list_videos([root], id_layout="breakfast")


def test_breakfast_video_id_from_path():
    assert breakfast.video_id_from_path("/data/BreakfastII_15fps_qvga_sync/P54/stereo/P54_tea_ch1.avi") == \
        "P54-stereo-P54_tea_ch1"
    with pytest.raises(ValueError, match="Breakfast layout"):
        breakfast.video_id_from_path("cereals.avi")


def official_coin_entry(recipe_type, task, subset, start=1.0, end=30.0):
    """An entry as in the official COIN.json (keys and nesting of the released file)."""
    return {"recipe_type": recipe_type, "class": task, "subset": subset, "start": start, "end": end,
            "duration": end + 10.0, "video_url": "https://www.youtube.com/embed/xxxxxxxxxxx",
            "annotation": [{"id": "1", "segment": [start, start + 5.0], "label": "step one"},
                           {"id": "2", "segment": [start + 6.0, end], "label": "step two"}]}


def test_coin_official_json_without_the_ids_vis4mer_drops(tmp_path):
    db = {}
    for k in range(40):
        db[f"vid{k:08d}"] = official_coin_entry(k % 4, f"Task{k % 4}", "testing" if k % 5 == 0 else "training")
    db["AfiVmAjfTNs"] = official_coin_entry(0, "Task0", "training")
    db["cjwtcDKTQM8"] = official_coin_entry(1, "Task1", "testing")
    path = tmp_path / "COIN.json"
    path.write_text(json.dumps({"database": db}))
    ann = coin.load(tmp_path)
    ids = set().union(*(set(df.video_id) for df in ann.splits.values()))
    assert ids == {f"vid{k:08d}" for k in range(40)}  # both dropped ids are gone, from every split
    assert len(ann.splits["test"]) == 8 and len(ann.splits["train"]) + len(ann.splits["val"]) == 32
    test = ann.splits["test"].set_index("video_id")
    assert test.loc["vid00000005", "label"] == 1 and test.loc["vid00000005", "class"] == "Task1"
    assert "AfiVmAjfTNs" in ann.sources["test"]


def test_coin_video_tree_is_keyed_by_youtube_id(tmp_path):
    for rel in ["videos/12/-0og5vXc3LA.mp4", "videos/3/AfiVmAjfTNs.mp4"]:
        touch(tmp_path, rel)
    assert list_videos([tmp_path / "videos"], id_layout="name").video_id.tolist() == ["-0og5vXc3LA", "AfiVmAjfTNs"]
    touch(tmp_path, "videos/4/-0og5vXc3LA.mp4")
    with pytest.raises(VideoListError, match="names several files"):
        list_videos([tmp_path / "videos"], id_layout="name")
