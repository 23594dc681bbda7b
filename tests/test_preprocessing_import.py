"""Importers of the authors' formats: langbind_output.pt caches + segment CSVs, and MAE-style
pretraining checkpoints with a pickled argparse.Namespace."""
import argparse
import os

import numpy as np
import pandas as pd
import pytest
import torch

import models_lvmae
from datasets.store import EmbeddingStore
from preprocessing import import_reference
from util.checkpoint import load_pretrained

D = 12
AUTHORS_ROOT = "/data/authors/lvu_cache"  # where the authors' CSVs say the files are


def write_cache(root, lengths):
    """``<root>/<vid>/<SSSSS>-<EEEEE>/langbind_output.pt``; returns ``{vid: [D]-vectors in time order}``."""
    rng = np.random.default_rng(0)
    vectors = {}
    for vid, n in lengths.items():
        vectors[vid] = rng.standard_normal((n, D)).astype(np.float32)
        for i in range(n):
            d = root / vid / f"{5 * i:05d}-{5 * i + 5:05d}"
            d.mkdir(parents=True)
            torch.save({"embedding": torch.from_numpy(vectors[vid][i]), "start": 5 * i, "end": 5 * i + 5},
                       d / "langbind_output.pt")
    return vectors


def paths_literal(vid, segments):
    return repr([f"{AUTHORS_ROOT}/{vid}/{5 * i:05d}-{5 * i + 5:05d}/langbind_output.pt" for i in segments])


def test_cache_and_csvs_become_a_store(tmp_path):
    root = tmp_path / "cache"
    vectors = write_cache(root, {"tt01": 7, "tt02": 3, "tt03": 4})
    (root / "tt03" / "00005-00010" / "langbind_output.pt").unlink()  # a lost segment file
    csv = tmp_path / "train.csv"
    pd.DataFrame([
        # the authors split long videos over rows; the rows' lists are listed out of order here
        dict(segment_idx=1, video_filename="tt01.mp4", segment_paths=paths_literal("tt01", [4, 5, 6]),
             number_of_segments=3, label=2, label_name="comedy"),
        dict(segment_idx=0, video_filename="tt01.mp4", segment_paths=paths_literal("tt01", [0, 1, 2, 3, 4]),
             number_of_segments=5, label=2, label_name="comedy"),
        dict(segment_idx=0, video_filename="tt02.mp4", segment_paths=paths_literal("tt02", range(3)),
             number_of_segments=3, label=0, label_name="drama"),
        dict(segment_idx=0, video_filename="tt03.mp4", segment_paths=paths_literal("tt03", range(4)),
             number_of_segments=4, label=1, label_name="action"),
    ]).to_csv(csv, index=False)
    out = tmp_path / "store"
    counts = import_reference.main(["cache", str(root), "--out", str(out), "--csv", str(csv),
                                    "--labels_out", str(tmp_path / "labels.csv")])
    assert counts == {"done": 2, "failed": 1, "skipped": 0, "segments": 10}
    store = EmbeddingStore(out)
    # the authors' checkpoint (langbind_preprocessing.py) and their sampling
    assert store.manifest["encoder"] == "languagebind:LanguageBind_Video_Huge_V1.5_FT" and store.dim == D
    assert store.manifest["profile"] == "authors"
    for vid in ("tt01", "tt02"):
        ref = vectors[vid] / np.linalg.norm(vectors[vid], axis=1, keepdims=True)
        np.testing.assert_allclose(store.get(vid), ref, atol=2e-3)  # float16 store
        np.testing.assert_allclose(store.times(vid)[:, 0], 5 * np.arange(len(ref)))
    assert store.failures.set_index("video_id").reason["tt03"].startswith("segment file")
    labels = pd.read_csv(tmp_path / "labels.csv").set_index("video_id")
    assert labels.loc["tt01", "label"] == 2 and labels.loc["tt02", "label_name"] == "drama"
    # a rerun skips what is there; the scan of the cache root alone (no CSV) finds the same videos
    assert import_reference.main(["cache", str(root), "--out", str(out)])["skipped"] == 3


def test_segment_lists_are_parsed_as_literals_never_evaluated(tmp_path):
    root = tmp_path / "cache"
    write_cache(root, {"v": 2})
    csv = tmp_path / "evil.csv"
    marker = tmp_path / "pwned"
    pd.DataFrame([dict(segment_idx=0, video_filename="v.mp4", segment_paths=f"__import__('os').system('touch {marker}')",
                       number_of_segments=2, label=0, label_name="x")]).to_csv(csv, index=False)
    with pytest.raises(SystemExit, match="evil.csv line 2: segment_paths is not a Python list literal"):
        import_reference.main(["cache", str(root), "--out", str(tmp_path / "s"), "--csv", str(csv)])
    assert not marker.exists()


def authors_checkpoint(path, model):
    """What the authors' MAE-based main_pretrain.py saves (DDP prefix, fixed pos_embed buffers,
    input projection named like MAE's patch_embed, a pickled argparse.Namespace)."""
    state = {}
    for k, v in model.state_dict().items():
        state["module." + k.replace("input_proj.", "patch_embed.proj.")] = v
    state["module.pos_embed"] = model.pos_embed.clone()
    state["module.decoder_pos_embed"] = model.decoder_pos_embed.clone()
    opt = torch.optim.AdamW(model.parameters())
    args = argparse.Namespace(num_heads=2, decoder_num_heads=2, num_patches=32, input_size=8, mask_ratio=0.5,
                              output_dir="./output_dir", masking_strategy=True, lr=None)
    torch.save({"model": state, "optimizer": opt.state_dict(), "epoch": 150, "args": args}, path)


def test_authors_checkpoint_converts_and_loads_into_lvmae(tmp_path):
    torch.manual_seed(0)
    # a project model of the authors' (unscaled) form, with an input projection named like MAE's
    model = models_lvmae.LVMAE(embed_dim=16, depth=2, num_heads=2, decoder_embed_dim=8, decoder_depth=1,
                               decoder_num_heads=2, max_len=32, input_dim=8, input_scale="none").eval()
    authors_checkpoint(tmp_path / "checkpoint-150.pth", model)
    config = import_reference.main(["checkpoint", str(tmp_path / "checkpoint-150.pth"), "--out", str(tmp_path / "c.pth")])
    assert config == model.config
    loaded, ckpt = load_pretrained(tmp_path / "c.pth", input_dim=8)
    assert ckpt["epoch"] == 150 and ckpt["args"]["masking_strategy"] is True and ckpt["data"]["dim"] == 8
    x, lengths = torch.randn(2, 10, 8), torch.tensor([10, 6])
    with torch.no_grad():
        for a, b in zip(model.forward_features(x, lengths), loaded.forward_features(x, lengths)):
            torch.testing.assert_close(a, b)


class _Evil:
    def __reduce__(self):
        return os.system, ("touch pwned_by_checkpoint",)


def test_checkpoints_with_other_pickled_objects_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {}, "args": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(SystemExit, match="cannot be loaded safely"):
        import_reference.main(["checkpoint", str(tmp_path / "evil.pth"), "--out", str(tmp_path / "c.pth")])
    assert not (tmp_path / "pwned_by_checkpoint").exists() and not (tmp_path / "c.pth").exists()
    torch.save({"model": {"encoder.weight": torch.zeros(2)}, "args": argparse.Namespace()}, tmp_path / "other.pth")
    with pytest.raises(SystemExit, match="not an MAE-style LV-MAE state dict"):
        import_reference.main(["checkpoint", str(tmp_path / "other.pth"), "--out", str(tmp_path / "c.pth")])
