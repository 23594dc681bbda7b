"""Embedding store: round trip, atomic commits, several writers and stores, clear refusals."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.store import (EmbeddingStore, StoreError, StoreWriter, committed_ids, expand_data_paths,
                            make_manifest)

REPO = Path(__file__).resolve().parent.parent


def manifest(dim=8, encoder="clip:test"):
    return make_manifest(encoder, dim)


def write(root, writer_id, videos, dim=8, encoder="clip:test", **kw):
    with StoreWriter(root, writer_id, manifest(dim, encoder), **kw) as w:
        for vid, x in videos.items():
            w.add(vid, x, duration_s=5.0 * len(x), source=f"/videos/{vid}.mp4")
    return w


def vecs(n, dim=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_round_trip(tmp_path):
    data = {"NA": vecs(5), "0123": vecs(3, seed=1), "a,b": vecs(1, seed=2)}  # ids pandas would mangle
    times = np.array([[0, 5], [5, 10], [10, 12.5]])
    with StoreWriter(tmp_path, "w0", manifest()) as w:
        w.add("NA", data["NA"], 25.0, "/v/NA.mp4")
        w.add("0123", data["0123"], 12.5, "/v/0123.mp4", times=times)
        w.add("a,b", data["a,b"], 5.0, "/v/ab.mp4")
        w.fail("broken", "/v/broken.mp4", "moov atom not found")
    store = EmbeddingStore(tmp_path)
    assert store.video_ids == ["NA", "0123", "a,b"]
    for vid, x in data.items():
        got = store.get(vid)
        assert got.dtype == np.float32 and got.shape == x.shape
        x16 = x.astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(got, x16 / np.linalg.norm(x16, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(store.get("NA", 1, 3), store.get("NA")[1:3])
    np.testing.assert_array_equal(store.times("0123"), times)
    np.testing.assert_array_equal(store.times("NA")[:, 0], [0, 5, 10, 15, 20])
    assert store.num_segments("NA") == 5 and store.source("0123") == "/v/0123.mp4"
    assert store.failures.video_id.tolist() == ["broken"]
    assert committed_ids(tmp_path) == {"NA", "0123", "a,b", "broken"}
    assert committed_ids(tmp_path, include_failures=False) == {"NA", "0123", "a,b"}
    with StoreWriter(tmp_path, "retry", manifest()) as w:  # --retry_failed succeeds later
        w.add("broken", vecs(2), 10.0, "/v/broken.mp4")
    assert EmbeddingStore(tmp_path).failures.empty  # the index wins over the old failure row


def test_normalized_manifest_is_not_renormalized(tmp_path):
    x = vecs(4) * 3
    with StoreWriter(tmp_path, "w", make_manifest("e:x", 8, dtype="float32", normalized=True)) as w:
        w.add("v", x, 20.0)
    np.testing.assert_array_equal(EmbeddingStore(tmp_path).get("v"), x)


def test_auto_commit_and_sequence_numbers(tmp_path):
    write(tmp_path, "w0", {f"v{i}": vecs(3, seed=i) for i in range(5)}, shard_rows=6)
    write(tmp_path, "w0", {"late": vecs(2)})  # a rerun continues the sequence, never overwrites
    indexes = sorted(p.name for p in tmp_path.glob("index-*.csv"))
    assert indexes == ["index-w0-000000.csv", "index-w0-000001.csv", "index-w0-000002.csv", "index-w0-000003.csv"]
    assert len(EmbeddingStore(tmp_path)) == 6


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, numpy as np
    sys.path.insert(0, {repo!r})
    import datasets.store as st
    real_replace = os.replace
    def replace(src, dst):
        if {when!r} == "before_index" and str(dst).endswith(".csv"):
            os.kill(os.getpid(), signal.SIGKILL)
        if {when!r} == "before_shard" and str(dst).endswith(".npy"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if {when!r} == "after_shard" and str(dst).endswith(".npy"):
            os.kill(os.getpid(), signal.SIGKILL)
    st.os.replace = replace
    w = st.StoreWriter({root!r}, "killed", st.make_manifest("clip:test", 8))
    w.add("doomed", np.ones((4, 8), np.float32), 20.0, "x.mp4")
    w.commit()
""")


@pytest.mark.parametrize("when", ["before_shard", "after_shard", "before_index"])
def test_writer_killed_mid_commit_leaves_nothing(tmp_path, when):
    write(tmp_path, "ok", {"kept": vecs(2)})
    script = KILL_SCRIPT.format(repo=str(REPO), root=str(tmp_path), when=when)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    store = EmbeddingStore(tmp_path)
    assert store.video_ids == ["kept"]  # the killed commit is invisible (orphan shard / tmp ignored)
    assert "doomed" not in committed_ids(tmp_path)  # so a rerun redoes it
    write(tmp_path, "killed", {"doomed": vecs(4)})  # the rerun's writer does not collide with debris
    assert sorted(EmbeddingStore(tmp_path).video_ids) == ["doomed", "kept"]
    assert not list(tmp_path.rglob("*.tmp-*"))  # and removes the temporary files the kill left


def test_two_writers_one_store_and_union_reader(tmp_path):
    w0 = StoreWriter(tmp_path / "s", "rank0", manifest())
    w1 = StoreWriter(tmp_path / "s", "rank1", manifest())
    w0.add("a", vecs(2), 10.0)
    w1.add("b", vecs(3), 15.0)
    w1.commit()
    w0.commit()
    write(tmp_path / "t", "w", {"c": vecs(4)})
    (tmp_path / "list.txt").write_text("# my stores\ns\n\nt\n")
    store = EmbeddingStore(tmp_path / "list.txt")
    assert sorted(store.video_ids) == ["a", "b", "c"]
    assert store.summary()["segments"] == 9
    assert expand_data_paths(tmp_path / "list.txt") == [tmp_path / "s", tmp_path / "t"]


def test_duplicate_ids_across_stores_are_qualified(tmp_path):
    write(tmp_path / "movies", "w", {"x": vecs(2)})
    write(tmp_path / "clips", "w", {"x": vecs(3), "y": vecs(1)})
    store = EmbeddingStore([tmp_path / "movies", tmp_path / "clips"])
    assert sorted(store.video_ids) == ["clips/x", "movies/x", "y"]
    assert store.num_segments("clips/x") == 3 and store.store_of("movies/x") == tmp_path / "movies"


def test_mixed_stores_are_refused(tmp_path):
    write(tmp_path / "a", "w", {"x": vecs(2, dim=8)}, dim=8)
    write(tmp_path / "b", "w", {"y": vecs(2, dim=16)}, dim=16)
    write(tmp_path / "c", "w", {"z": vecs(2)}, encoder="languagebind:LanguageBind_Video_FT")
    with pytest.raises(StoreError, match=r"dim.*/a.*8.*/b.*16"):
        EmbeddingStore([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(StoreError, match="encoder"):
        EmbeddingStore([tmp_path / "a", tmp_path / "c"])
    with pytest.raises(StoreError, match="dim=8 but this writer would write dim=16"):
        StoreWriter(tmp_path / "a", "w2", manifest(dim=16))
    with pytest.raises(StoreError, match="shape"):
        StoreWriter(tmp_path / "a", "w2", manifest()).add("bad", vecs(2, dim=16), 10.0)


def test_missing_and_empty_stores(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        EmbeddingStore(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="manifest.json is missing"):
        EmbeddingStore(tmp_path / "plain")
    StoreWriter(tmp_path / "empty", "w", manifest()).commit()
    with pytest.raises(StoreError, match="holds no video"):
        EmbeddingStore(tmp_path / "empty")
    with pytest.raises(StoreError, match="list file"):
        EmbeddingStore(tmp_path / "missing.txt")


def test_corrupt_shard_and_index_rows(tmp_path):
    write(tmp_path, "w", {"a": vecs(3), "b": vecs(2)})
    index = tmp_path / "index-w-000000.csv"
    df = pd.read_csv(index, dtype=str)
    df.loc[1, "offset"] = "4"
    df.to_csv(index, index=False)
    with pytest.raises(StoreError, match=r"index-w-000000.csv line 3: video 'b' claims rows \[4, 6\)"):
        EmbeddingStore(tmp_path)
    df.loc[1, "offset"] = "three"
    df.to_csv(index, index=False)
    with pytest.raises(StoreError, match="line 3.*not numbers"):
        EmbeddingStore(tmp_path)
    df.loc[1, "offset"] = "3"
    df.to_csv(index, index=False)
    shard = tmp_path / "shards" / "w-000000.npy"
    shard.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(StoreError, match="w-000000.npy is corrupt"):
        EmbeddingStore(tmp_path)
    np.save(shard, vecs(5, dim=4))
    with pytest.raises(StoreError, match=r"shape \(5, 4\)"):
        EmbeddingStore(tmp_path)


def test_non_finite_vectors_are_never_written_and_detected_on_read(tmp_path):
    bad = vecs(3)
    bad[1, 2] = np.nan
    w = StoreWriter(tmp_path, "w", manifest())
    with pytest.raises(StoreError, match="'v': non-finite"):
        w.add("v", bad, 15.0)
    with pytest.raises(StoreError, match="float16"):
        w.add("huge", vecs(2) * 1e6, 10.0)
    w.add("fine", vecs(2), 10.0)
    w.commit()
    shard = tmp_path / "shards" / "w-000000.npy"
    arr = np.load(shard)
    arr[1, 0] = np.inf  # damage on disk after the fact
    np.save(shard, arr)
    with pytest.raises(StoreError, match="video 'fine': segment 1 .* not finite"):
        EmbeddingStore(tmp_path).get("fine")


def test_manifest_contents(tmp_path):
    write(tmp_path, "w", {"a": vecs(1)})
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["format"] == "lvmae-store/1" and m["dtype"] == "float16" and m["stride_seconds"] == 5.0
    assert set(m) >= {"encoder", "dim", "segment_seconds", "min_last_seconds", "frames_per_segment", "normalized"}
    assert not any(p.name.startswith("manifest.json.") for p in tmp_path.iterdir())
