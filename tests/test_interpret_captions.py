"""Caption database: table parsing (segment or start/end), de-duplication, resumable chunked
embedding, and the refusals of a text tower / database outside the store's space."""
import json
import zlib

import numpy as np
import pandas as pd
import pytest

from datasets.captions import CaptionDB, CaptionError, build_database, read_caption_table
from datasets.store import EmbeddingStore, StoreWriter, make_manifest

D = 8
ENCODER = "fake:tower"


def make_store(root, lengths, encoder=ENCODER, dim=D, times=None):
    rng = np.random.default_rng(0)
    with StoreWriter(root, "w", make_manifest(encoder, dim, normalized=False)) as w:
        for vid, n in lengths.items():
            w.add(vid, rng.standard_normal((n, dim)), duration_s=5.0 * n, source="",
                  times=None if times is None else times.get(vid))
    return EmbeddingStore(root)


class FakeTower:
    """Deterministic text embeddings; counts the captions it embedded; can die after a budget."""

    def __init__(self, dim=D, die_after=None):
        self.dim, self.die_after, self.seen = dim, die_after, []

    def encode_text(self, texts):
        if self.die_after is not None and len(self.seen) + len(texts) > self.die_after:
            raise KeyboardInterrupt("killed")
        self.seen += texts
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts])


def write_csv(path, rows, columns):
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def test_table_by_segment_and_by_seconds(tmp_path):
    store = make_store(tmp_path / "s", {"a": 4, "b": 3}, times={"b": np.array([[0, 4], [4, 8], [8, 12]])})
    by_seg = write_csv(tmp_path / "seg.csv", [("a", 2, "dog runs"), ("a", 0, " cat sits "), ("a", 0, "cat sits")],
                       ["video_id", "segment", "caption"])
    t = read_caption_table(by_seg, store)
    assert t.values.tolist() == [["a", 0, "cat sits"], ["a", 2, "dog runs"]]  # stripped, exact duplicate dropped
    # a: 5-s segments [0,5) [5,10) [10,15) [15,20); b: the store's own times [0,4) [4,8) [8,12)
    by_sec = write_csv(tmp_path / "sec.csv", [("a", 0.0, 7.0, "x"), ("a", 7.0, 20.0, "y"), ("b", 3.0, 9.0, "z"),
                                              ("c", 0.0, 5.0, "not in store")],
                       ["video_id", "start", "end", "caption"])
    t = read_caption_table(by_sec, store)
    # a seg1 [5,10): 2 s of x, 3 s of y -> y; b seg0 [0,4): 1 s of z -> z; b seg2: 1 s of z -> z
    assert t.values.tolist() == [["a", 0, "x"], ["a", 1, "y"], ["a", 2, "y"], ["a", 3, "y"],
                                 ["b", 0, "z"], ["b", 1, "z"], ["b", 2, "z"]]
    with pytest.raises(CaptionError, match="store is needed"):
        read_caption_table(by_sec)


def test_table_refusals(tmp_path):
    store = make_store(tmp_path / "s", {"a": 4})
    cols = ["video_id", "segment", "caption"]
    with pytest.raises(CaptionError, match="'a' has no segment 4"):
        read_caption_table(write_csv(tmp_path / "1.csv", [("a", 4, "x")], cols), store)
    with pytest.raises(CaptionError, match="'a' segment 1 has several different captions"):
        read_caption_table(write_csv(tmp_path / "2.csv", [("a", 1, "x"), ("a", 1, "y")], cols), store)
    with pytest.raises(CaptionError, match="needs columns"):
        read_caption_table(write_csv(tmp_path / "3.csv", [("a", "x")], ["video_id", "caption"]), store)


def test_build_dedups_and_resumes_after_a_kill(tmp_path):
    store = make_store(tmp_path / "s", {"a": 10})
    texts = [f"caption {i % 7}" for i in range(10)]  # 7 distinct texts
    table = pd.DataFrame({"video_id": "a", "segment": np.arange(10), "caption": texts})
    out = tmp_path / "db"
    dying = FakeTower(die_after=4)
    with pytest.raises(KeyboardInterrupt):
        build_database(table, dying.encode_text, ENCODER, store.manifest, out, batch_size=2, chunk_size=2,
                       progress=False)
    assert not (out / "meta.json").exists()
    assert len(list((out / "parts").glob("part-*.npy"))) == 2  # two whole chunks committed
    with pytest.raises(CaptionError, match="did not finish"):
        CaptionDB(out)
    tower = FakeTower()
    meta = build_database(table, tower.encode_text, ENCODER, store.manifest, out, batch_size=2, chunk_size=2,
                          progress=False)
    assert tower.seen == [f"caption {i}" for i in range(4, 7)]  # only the missing chunks
    assert meta["num_captions"] == 7 and not (out / "parts").exists()
    db = CaptionDB(out)
    assert db.texts == [f"caption {i}" for i in range(7)]
    ref = FakeTower().encode_text(db.texts)
    np.testing.assert_allclose(db.embeddings, ref / np.linalg.norm(ref, axis=1, keepdims=True), rtol=1e-6)
    assert db.embeddings.dtype == np.float32
    assert db.caption_ids("a", 10).tolist() == [i % 7 for i in range(10)]
    assert db.caption_ids("a", 12).tolist()[-2:] == [-1, -1] and db.caption_ids("zz", 2).tolist() == [-1, -1]
    # a rerun of the finished build embeds nothing; another caption list needs --overwrite
    again = FakeTower()
    build_database(table, again.encode_text, ENCODER, store.manifest, out, progress=False)
    assert again.seen == []
    with pytest.raises(CaptionError, match="--overwrite"):
        build_database(table.assign(caption="other"), again.encode_text, ENCODER, store.manifest, out, progress=False)


def test_refuses_a_tower_of_another_encoder_or_dim(tmp_path):
    store = make_store(tmp_path / "s", {"a": 3})
    table = pd.DataFrame({"video_id": "a", "segment": [0, 1], "caption": ["x", "y"]})
    with pytest.raises(CaptionError, match=r"'other:tower'.*store .*s was made by 'fake:tower'"):
        build_database(table, FakeTower().encode_text, "other:tower", store.manifest, tmp_path / "db1",
                       store_name=str(tmp_path / "s"), progress=False)
    with pytest.raises(CaptionError, match=r"gives 5-d text embeddings .*holds 8-d"):
        build_database(table, FakeTower(dim=5).encode_text, ENCODER, store.manifest, tmp_path / "db2",
                       progress=False)
    assert not (tmp_path / "db2" / "meta.json").exists()


def test_database_refuses_a_store_of_another_encoder(tmp_path):
    store = make_store(tmp_path / "s", {"a": 3})
    table = pd.DataFrame({"video_id": "a", "segment": [0, 1], "caption": ["x", "y"]})
    build_database(table, FakeTower().encode_text, ENCODER, store.manifest, tmp_path / "db", progress=False)
    db = CaptionDB(tmp_path / "db")
    db.check_store(store.manifest, "s")
    other = make_store(tmp_path / "o", {"a": 3}, encoder="fake:other")
    with pytest.raises(CaptionError, match=r"caption database .*'fake:tower'.*store o was made by 'fake:other'"):
        db.check_store(other.manifest, "o")
    wide = make_store(tmp_path / "w", {"a": 3}, dim=16)
    with pytest.raises(CaptionError, match=r"gives 8-d .*holds 16-d"):
        db.check_store(wide.manifest, "w")
    assert json.loads((tmp_path / "db" / "meta.json").read_text())["encoder"] == ENCODER
