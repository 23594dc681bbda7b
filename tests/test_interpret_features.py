"""extract_features.py: a video's features do not depend on its batch, and the sliding-window
aggregate gives every segment of a long video exactly one token, from the window that owns it."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import extract_features
from datasets.store import EmbeddingStore, StoreWriter, make_manifest
from models_lvmae import LVMAE
from util.checkpoint import CheckpointError, save_checkpoint
from util.long_video import encode_videos, segment_owners, window_starts

D, MAX_LEN = 12, 8
LENGTHS = {"short": 3, "full": 8, "long": 37, "one": 1, "mid": 20}


def make_store(root, encoder="test:enc", lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    with StoreWriter(root, "w", make_manifest(encoder, D, dtype="float32", normalized=False)) as w:
        for vid, n in lengths.items():
            w.add(vid, rng.standard_normal((n, D)), duration_s=5.0 * n, source=f"synthetic://{vid}")
    return root


def make_checkpoint(path, encoder="test:enc", max_len=MAX_LEN, seed=0):
    torch.manual_seed(seed)
    model = LVMAE(embed_dim=16, depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                  max_len=max_len, input_dim=D)
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "epoch": 0, "args": {},
                     "data": {"encoder": encoder, "dim": D, "normalized": True}}, path)
    return path


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    store, ckpt, out = make_store(tmp / "store"), make_checkpoint(tmp / "ckpt.pth"), tmp / "out"
    # batch_size 2 mixes videos of different lengths (and windows of one video) in a batch
    extract_features.main(["--data_path", str(store), "--checkpoint", str(ckpt), "--output_dir", str(out),
                           "--all_tokens", "--batch_size", "2", "--chunk_videos", "3", "--device", "cpu"])
    return store, ckpt, out


def test_layout(extracted):
    store, _, out = extracted
    index = pd.read_csv(out / "index.csv", dtype={"video_id": str})
    assert list(index.video_id) == EmbeddingStore(store).video_ids
    assert list(index.num_segments) == [LENGTHS[v] for v in index.video_id]
    assert list(index.num_windows) == [len(window_starts(n, MAX_LEN)) for n in index.num_segments]
    assert index.num_windows[index.video_id == "long"].item() > 1
    assert (np.diff(index.token_offset) == index.num_segments[:-1]).all()
    cls, mean, tokens = (np.load(out / f"{k}.npy") for k in ("cls", "mean", "tokens"))
    assert cls.shape == mean.shape == (len(LENGTHS), 16)
    assert tokens.shape == (sum(LENGTHS.values()), 16)
    assert np.isfinite(tokens).all() and not (np.abs(tokens).sum(1) == 0).any()  # no segment left unwritten
    meta = json.loads((out / "meta.json").read_text())
    assert meta["max_len"] == MAX_LEN and meta["window_stride"] == MAX_LEN // 2
    assert not list(out.glob("*.tmp-*"))


def test_video_alone_equals_in_batch(extracted):
    store_path, ckpt, out = extracted
    from util.checkpoint import load_pretrained
    model, _ = load_pretrained(ckpt)
    store = EmbeddingStore(store_path)
    index = pd.read_csv(out / "index.csv", dtype={"video_id": str})
    cls, mean, tokens = (np.load(out / f"{k}.npy") for k in ("cls", "mean", "tokens"))
    for i, row in index.iterrows():
        alone = encode_videos(model, store, [row.video_id], batch_size=1, progress=False)
        sl = slice(row.token_offset, row.token_offset + row.num_segments)
        np.testing.assert_allclose(tokens[sl], alone.tokens, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(cls[i], alone.cls[0], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(mean[i], alone.tokens.mean(0), atol=1e-5, rtol=1e-5)
        if row.num_segments <= MAX_LEN:  # one window: exactly the encoder's unmasked output
            x = torch.from_numpy(store.get(row.video_id))[None]
            ref, _ = model.forward_features(x, torch.tensor([row.num_segments]))
            np.testing.assert_allclose(cls[i], ref[0, 0].numpy(), atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(tokens[sl], ref[0, 1:].numpy(), atol=1e-5, rtol=1e-5)


def test_windows_cover_long_video_exactly_once(extracted):
    """n=37, max_len=8: each segment's token is the one its owning window computes (slow reference:
    one forward per window), every segment is owned once, by a window that contains it."""
    store_path, ckpt, out = extracted
    from util.checkpoint import load_pretrained
    model, _ = load_pretrained(ckpt)
    store = EmbeddingStore(store_path)
    n = LENGTHS["long"]
    starts = window_starts(n, MAX_LEN)
    owners = segment_owners(n, starts, MAX_LEN)
    assert starts[0] == 0 and starts[-1] == n - MAX_LEN
    assert ((starts[owners] <= np.arange(n)) & (np.arange(n) < starts[owners] + MAX_LEN)).all()
    assert np.bincount(owners, minlength=len(starts)).sum() == n
    assert len(set(owners)) == len(starts)  # every window contributes
    index = pd.read_csv(out / "index.csv", dtype={"video_id": str}).set_index("video_id")
    off = index.loc["long", "token_offset"]
    tokens = np.load(out / "tokens.npy")[off:off + n]
    cls = np.load(out / "cls.npy")[list(index.index).index("long")]
    x = torch.from_numpy(store.get("long"))
    ref_cls = np.zeros(16)
    for w, s in enumerate(starts):
        win, _ = model.forward_features(x[None, s:s + MAX_LEN], torch.tensor([MAX_LEN]))
        own = np.flatnonzero(owners == w)
        np.testing.assert_allclose(tokens[own], win[0, 1 + own - s].numpy(), atol=1e-5, rtol=1e-5)
        ref_cls += len(own) * win[0, 0].numpy()
    np.testing.assert_allclose(cls, ref_cls / n, atol=1e-5, rtol=1e-5)


def test_refuses_store_of_another_encoder(tmp_path):
    store = make_store(tmp_path / "store", encoder="other:enc", lengths={"a": 4})
    ckpt = make_checkpoint(tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError, match="'test:enc'.*'other:enc'"):
        extract_features.main(["--data_path", str(store), "--checkpoint", str(ckpt), "--output_dir",
                               str(tmp_path / "out")])
