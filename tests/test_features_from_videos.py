"""extract_features.py --videos: video files, directories and CSV lists -> a store (the extraction
engine, its failure rules, resumable) -> LV-MAE features, in one command; equal to the two steps
run by hand. The encoder is checked against the checkpoint before anything is extracted."""
import numpy as np
import pandas as pd
import pytest
import torch

import export_pretrained
import extract_features
from datasets.store import EmbeddingStore
from models_lvmae import LVMAE
from preprocessing import extract
from preprocessing.make_tiny_encoder import make_tiny_encoder
from preprocessing.synthetic_videos import write_video
from test_preprocessing_real_media import clip_path
from util.checkpoint import CheckpointError, save_checkpoint

DIM = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("from_videos")
    encoder = make_tiny_encoder("clip", root / "tiny_clip", dim=DIM, image_size=32)
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "gen_a.mp4", seconds=12)
    write_video(videos / "gen_b.mp4", seconds=23, seed=1)
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    listed = root / "list.csv"  # a real clip of the test data, by a video_id,path list
    pd.DataFrame({"video_id": ["bikes"], "path": [clip_path("bikes.mp4")]}).to_csv(listed, index=False)
    torch.manual_seed(0)
    model = LVMAE(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                  max_len=4, input_dim=DIM)
    ckpt = root / "checkpoint-last.pth"
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "epoch": 0, "args": {},
                     "data": {"encoder": "clip:tiny_clip", "dim": DIM, "normalized": False, "profile": "hf"}}, ckpt)
    export_pretrained.main([str(ckpt), "--out", str(root / "exported")])
    return dict(root=root, encoder=encoder, videos=videos, listed=listed, ckpt=ckpt, exported=root / "exported")


def features_argv(s, out, *extra):
    return ["--videos", str(s["videos"]), str(s["listed"]), "--encoder", "clip", "--encoder_checkpoint",
            str(s["encoder"]), "--checkpoint", str(s["exported"]), "--output_dir", str(out), "--device", "cpu",
            "--extract_batch_size", "4", "--decode_workers", "1", *extra]


@pytest.mark.slow
def test_one_command_equals_extraction_then_features(setup, tmp_path):
    s = setup
    meta = extract_features.main(features_argv(s, tmp_path / "one"))
    index = pd.read_csv(tmp_path / "one" / "index.csv")
    assert sorted(index.video_id) == ["bikes", "gen_a", "gen_b"]  # 10 s, 12 s, 23 s: 2, 2 and 5 segments
    assert index.set_index("video_id").num_segments.to_dict() == {"bikes": 2, "gen_a": 2, "gen_b": 5}
    assert meta["failed_videos"] == ["broken"]  # recorded, and the run went on
    store = EmbeddingStore(tmp_path / "one" / "store")
    assert store.manifest["encoder"] == "clip:tiny_clip" and store.manifest["profile"] == "hf"

    # the same two steps by hand: the extraction CLI, then features of its store
    extract.main([str(s["videos"]), str(s["listed"]), "--encoder", "clip", "--checkpoint", str(s["encoder"]),
                  "--out", str(tmp_path / "store"), "--device", "cpu", "--num_workers", "1", "--no_progress"])
    extract_features.main(["--data_path", str(tmp_path / "store"), "--checkpoint", str(s["ckpt"]),
                           "--output_dir", str(tmp_path / "two"), "--device", "cpu"])
    two = pd.read_csv(tmp_path / "two" / "index.csv")
    assert list(two.video_id) == list(index.video_id)
    for array in ("cls", "mean"):
        np.testing.assert_allclose(np.load(tmp_path / "one" / f"{array}.npy"),
                                   np.load(tmp_path / "two" / f"{array}.npy"), rtol=1e-5, atol=1e-6)
    # gen_b (5 segments) is longer than max_len 4: sliding windows, as for any store
    assert index.set_index("video_id").num_windows["gen_b"] == 2

    # rerun: nothing is extracted again, the features are the same
    before = {a: np.load(tmp_path / "one" / f"{a}.npy") for a in ("cls", "mean")}
    shards = sorted(p.name for p in (tmp_path / "one" / "store" / "shards").iterdir())
    extract_features.main(features_argv(s, tmp_path / "one"))
    assert sorted(p.name for p in (tmp_path / "one" / "store" / "shards").iterdir()) == shards
    for a, v in before.items():
        assert np.array_equal(np.load(tmp_path / "one" / f"{a}.npy"), v)


def test_another_encoder_is_refused_before_extracting(setup, tmp_path):
    other = make_tiny_encoder("clip", tmp_path / "other_clip", dim=DIM, image_size=32)
    argv = features_argv(setup, tmp_path / "out")
    argv[argv.index("--encoder_checkpoint") + 1] = str(other)
    with pytest.raises(CheckpointError, match=r"pretrained on 'clip:tiny_clip' embeddings; .*makes 'clip:other_clip'"):
        extract_features.main(argv)
    assert not (tmp_path / "out").exists()
