"""Extraction profiles: the frames each one samples (pinned, for any faster decoder to match),
the authors' pipeline reproduced inside one decode of the source, and the manifest's
``profile`` key (written by extraction, ``legacy`` when missing, refused across stores)."""
import json
import os
import re

import numpy as np
import pytest

import transform_references as ref
from datasets.store import EmbeddingStore, StoreError, StoreWriter, make_manifest, read_manifest
from preprocessing import extract
from preprocessing.decode import SamplingSpec, sample_video
from preprocessing.encoders import build_encoder
from preprocessing.make_tiny_encoder import make_tiny_encoder
from preprocessing.readers import get_reader
from preprocessing.synthetic_videos import frame_index, write_video
from preprocessing.transforms import CLIPProcessorTransform, LanguageBindTransform
from preprocessing.windows import plan_segments

os.environ.setdefault("HF_HUB_OFFLINE", "1")
READER = "decord" if __import__("importlib").util.find_spec("decord") else "pyav"
CFR = np.arange(300) / 25  # 12 s at 25 fps


# --- which frames (pure) ------------------------------------------------------------------------
def test_authors_rule_takes_linspace_frames_of_each_window_and_every_tail():
    windows, idx = plan_segments(CFR, 12.0, 5.0, 5.0, 0.0, 8, "linspace")
    np.testing.assert_allclose(windows, [[0, 5], [5, 10], [10, 12]])
    assert idx.tolist() == [[0, 17, 35, 53, 70, 88, 106, 124],          # np.linspace(0, 124, 8, dtype=int)
                            [125, 142, 160, 178, 195, 213, 231, 249],
                            [250, 257, 264, 271, 278, 285, 292, 299]]   # the 2-s tail: linspace(0, 49, 8)
    # a 0.4-s tail of 10 frames is kept too (their last 5-s file)
    _, idx = plan_segments(np.arange(260) / 25, 10.4, 5.0, 5.0, 0.0, 8, "linspace")
    assert idx[-1].tolist() == [250, 251, 252, 253, 255, 256, 257, 259]
    # a tail holding no frame start has no file in their pipeline: dropped
    windows, _ = plan_segments(np.arange(250) / 25, 10.03, 5.0, 5.0, 0.0, 8, "linspace")
    assert len(windows) == 2 and len(plan_segments(np.arange(250) / 25, 10.03, 5, 5, 0.0, 8, "centres")[0]) == 3


def test_hf_rule_takes_the_frames_on_screen_at_window_centres():
    windows, idx = plan_segments(CFR, 12.0, 5.0, 5.0, 2.5, 8, "centres")
    np.testing.assert_allclose(windows, [[0, 5], [5, 10]])  # the 2-s tail is under half a segment
    assert idx.tolist() == [[7, 23, 39, 54, 70, 85, 101, 117], [132, 148, 164, 179, 195, 210, 226, 242]]
    vfr = np.concatenate([np.arange(0, 5, 0.1), 5 + np.arange(0, 5, 1 / 30)])  # 10 fps, then 30 fps
    assert plan_segments(vfr, 10.0, 5, 5, 2.5, 4, "centres")[1].tolist() == [[6, 18, 31, 43], [68, 106, 143, 181]]
    assert plan_segments(vfr, 10.0, 5, 5, 0.0, 4, "linspace")[1].tolist() == [[0, 16, 32, 49], [50, 99, 149, 199]]


# --- the authors' pipeline ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("authors")
    return d, write_video(d / "movie.mp4", seconds=12, fps=10, size=(426, 240))


def test_authors_profile_equals_their_5s_files_through_languagebinds_processor(source):
    """Their pipeline: one file per 5-s window (here lossless, so the pixels are the source's),
    then LanguageBind's ``load_and_transform_video`` (decord, linspace(0, n - 1, 8)) on each,
    minus its random flip. Ours: one decode of the source with ``--profile authors``."""
    d, _ = source
    spec = SamplingSpec(min_last_seconds=0.0, frames_per_segment=8, frame_rule="linspace",
                        transform=LanguageBindTransform(224, ref.OPENAI_MEAN, ref.OPENAI_STD))
    events = list(sample_video(get_reader(READER), d / "movie.mp4", spec))
    windows, got = events[0][1], np.concatenate([e[2] for e in events[1:]])
    np.testing.assert_allclose(windows, [[0, 5], [5, 10], [10, 12]], atol=1e-3)
    files = ref.split_by_windows(d / "movie.mp4", windows, d / "5_second_segments")
    for k, path in enumerate(files):
        expected = ref.languagebind_load_video(path)
        assert got[k].shape == expected.shape == (8, 3, 224, 224)
        assert np.abs(got[k] - expected).max() <= 1e-5, f"window {k}"


def test_authors_profile_frame_indices_in_the_source(source):
    d, written = source
    spec = SamplingSpec(min_last_seconds=0.0, frames_per_segment=8, frame_rule="linspace",
                        transform=CLIPProcessorTransform(64, (0.5,) * 3, (0.5,) * 3, shortest_edge=64, crop_hw=(64, 64)))
    events = list(sample_video(get_reader(READER), d / "movie.mp4", spec))
    got = np.array([[frame_index(f) for f in seg] for e in events[1:] for seg in e[2]])
    lin = np.linspace(0, 49, 8, dtype=int)
    assert got.tolist() == [lin.tolist(), (50 + lin).tolist(), (100 + np.linspace(0, 19, 8, dtype=int)).tolist()]


# --- the CLI and the manifest -------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("profiles")
    (root / "videos").mkdir()
    for i, (vid, seconds) in enumerate({"a": 12.0, "c": 7.0}.items()):
        write_video(root / "videos" / f"{vid}.mp4", seconds=seconds, fps=10, size=(48, 40), seed=i)
    model = make_tiny_encoder("languagebind", root / "tiny_languagebind", dim=16, image_size=32)
    return root, model


def run(corpus, out, *extra):
    root, model = corpus
    return extract.main([str(root / "videos"), "--encoder", "languagebind", "--checkpoint", str(model), "--out",
                         str(out), "--store_dtype", "float32", "--num_workers", "1", "--no_progress", *extra])


@pytest.mark.slow
def test_cli_profile_authors_keeps_every_tail_in_float32(corpus, tmp_path):
    root, model = corpus
    run(corpus, tmp_path / "authors", "--profile", "authors")
    store = EmbeddingStore(tmp_path / "authors")
    m = store.manifest
    assert (m["profile"], m["sampling"], m["min_last_seconds"], m["encoder_dtype"], m["transform"]) == \
        ("authors", "linspace-endpoints", 0.0, "float32", "languagebind-video")
    assert store.num_segments("c") == 2 and store.num_segments("a") == 3  # the 2-s tails are kept
    encoder = build_encoder("languagebind", model, profile="authors")
    assert encoder.dtype.is_floating_point and str(encoder.dtype) == "torch.float32"
    spec = encoder.sampling(5.0, 5.0, 0.0)
    for vid in ("a", "c"):
        events = list(sample_video(get_reader("pyav"), root / "videos" / f"{vid}.mp4", spec))
        v = encoder.encode_video(np.concatenate([e[2] for e in events[1:]])).numpy()
        np.testing.assert_allclose(store.get(vid), v / np.linalg.norm(v, axis=1, keepdims=True), atol=1e-5)
    # the profile fixes the tails and the precision
    for flags in (["--min_last_seconds", "2.5"], ["--dtype", "float16"]):
        with pytest.raises(SystemExit, match=f"{flags[0]}: --profile authors"):
            run(corpus, tmp_path / "x", "--profile", "authors", *flags)
    # a store of one profile is not extended with another
    with pytest.raises(SystemExit, match=r"profile='authors'.*'hf'.*--profile authors"):
        run(corpus, tmp_path / "authors")


@pytest.mark.slow
def test_a_store_made_before_profiles_is_legacy_and_resumes_with_profile_legacy(corpus, tmp_path):
    out = tmp_path / "old"
    run(corpus, out, "--profile", "legacy", "--limit", "1")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest.pop("profile") == "legacy" and "transform" not in manifest  # the keys old stores had
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(out)["profile"] == "legacy"
    with pytest.raises(SystemExit, match=r"profile='legacy'.*--profile legacy"):
        run(corpus, out)
    summary = run(corpus, out, "--profile", "legacy")
    assert (summary["done"], summary["skipped"]) == (1, 1) and len(EmbeddingStore(out)) == 2


def _store(path, **extra):
    with StoreWriter(path, "w", make_manifest("languagebind:LanguageBind_Video_Huge_V1.5_FT", 4, **extra)) as w:
        w.add("v", np.ones((2, 4)), 10.0)
    return path


def test_stores_of_different_profiles_are_refused_together(tmp_path):
    hf, authors, old = (_store(tmp_path / "hf", profile="hf"), _store(tmp_path / "authors", profile="authors"),
                        _store(tmp_path / "old"))
    assert "profile" not in json.loads((old / "manifest.json").read_text())  # written as given
    assert EmbeddingStore(old).manifest["profile"] == "legacy"               # read with its default
    assert EmbeddingStore(hf).summary()["profile"] == "hf"
    with pytest.raises(StoreError, match=re.escape(f"profile: {hf} has 'hf', {authors} has 'authors'")):
        EmbeddingStore([hf, authors])
    with pytest.raises(StoreError, match=re.escape(f"profile: {old} has 'legacy', {hf} has 'hf'")):
        EmbeddingStore([old, hf])
    with pytest.raises(StoreError, match="profile='legacy' but this writer would write profile='hf'"):
        _store(old, profile="hf")
    assert len(EmbeddingStore([hf, _store(tmp_path / "hf2", profile="hf")])) == 2
