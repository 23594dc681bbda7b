"""`python -m preprocessing.stores list / combine` on small stores written with StoreWriter."""
import json

import numpy as np
import pytest

from datasets.store import EmbeddingStore, StoreWriter, expand_data_paths, make_manifest
from preprocessing import stores


def write(root, n_videos, encoder="clip:tiny", dim=8, failures=()):
    rng = np.random.default_rng(len(str(root)))
    with StoreWriter(root, "w", make_manifest(encoder, dim)) as w:
        for i in range(n_videos):
            w.add(f"v{i}", rng.standard_normal((i + 2, dim)), duration_s=5.0 * (i + 2), source=f"v{i}.mp4")
        for vid in failures:
            w.fail(vid, f"{vid}.mp4", "cannot open: not a video")
    return root


def test_list_reports_counts_and_invalid_stores(tmp_path, capsys):
    a = write(tmp_path / "a", 3, failures=["broken"])
    b = write(tmp_path / "b", 2, encoder="languagebind:LB", dim=16)
    bad = write(tmp_path / "bad", 1)
    next((bad / "shards").glob("*.npy")).unlink()
    assert stores.main(["list", str(a), str(b), "--json"]) == 0
    rows = {r["store"]: r for r in json.loads(capsys.readouterr().out)["stores"]}
    assert (rows[str(a)]["videos"], rows[str(a)]["segments"], rows[str(a)]["failures"]) == (3, 9, 1)
    assert (rows[str(b)]["encoder"], rows[str(b)]["dim"]) == ("languagebind:LB", 16)
    assert stores.main(["list", str(a), str(bad), str(tmp_path / "missing"), "--failures"]) == 1
    out, err = capsys.readouterr()
    assert "broken" in out and "not a video" in out
    assert f"INVALID {bad}" in err and "does not exist" in err and f"INVALID {tmp_path / 'missing'}" in err


def test_combine_writes_a_list_file_that_opens_as_one_dataset(tmp_path):
    a, b = write(tmp_path / "movies", 3), write(tmp_path / "clips" / "anet", 2)
    out = tmp_path / "lists" / "pretrain.txt"
    assert stores.main(["combine", str(a), str(b), "--out", str(out)]) == 0
    lines = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert lines == ["../movies", "../clips/anet"]  # relative to the list file: the tree can move
    assert [p.resolve() for p in expand_data_paths(out)] == [a.resolve(), b.resolve()]
    store = EmbeddingStore(out)
    assert len(store) == 5 and store.num_segments("movies/v0") == 2  # equal ids are kept apart per store


def test_combine_refuses_other_encoders_or_dims(tmp_path):
    a = write(tmp_path / "a", 2)
    other_encoder = write(tmp_path / "b", 2, encoder="languagebind:LB")
    other_dim = write(tmp_path / "c", 2, dim=4)
    out = tmp_path / "list.txt"
    with pytest.raises(SystemExit, match="disagree on encoder.*'clip:tiny'.*'languagebind:LB'"):
        stores.main(["combine", str(a), str(other_encoder), "--out", str(out)])
    with pytest.raises(SystemExit, match="disagree on dim"):
        stores.main(["combine", str(a), str(other_dim), "--out", str(out)])
    with pytest.raises(SystemExit, match="must end in .txt"):
        stores.main(["combine", str(a), "--out", str(tmp_path / "list.csv")])
    assert not out.exists()
