"""End to end: `python -m preprocessing.extract` (in-process through ``main``) on generated videos
with tiny randomly initialised CLIP / LanguageBind / InternVideo2 models, running the real
loading, decoding (worker processes), batching and writing code."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from datasets.store import EmbeddingStore, committed_ids
from preprocessing import extract
from preprocessing.decode import sample_video
from preprocessing.encoders import build_encoder
from preprocessing.make_tiny_encoder import make_tiny_encoder
from preprocessing.pipeline import Extraction
from preprocessing.readers import get_reader
from preprocessing.synthetic_videos import write_bad_files, write_video

# Every model here is a local directory; transformers is imported lazily, after this line.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.slow  # decode worker processes, one subprocess
GOOD = {"a": 12.0, "b": 31.0, "c": 7.0, "sub/d": 16.0}  # seconds; 2, 6, 1, 3 windows (min_last 2.5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    videos = root / "videos"
    for i, (vid, seconds) in enumerate(GOOD.items()):
        (videos / vid).parent.mkdir(parents=True, exist_ok=True)
        write_video(videos / f"{vid}.mp4", seconds=seconds, fps=10, size=(48, 40), seed=i)
    bad = write_bad_files(videos / "bad", size=(48, 40))
    models = {b: make_tiny_encoder(b, root / f"tiny_{b}", dim=16, image_size=32, frames=4 if b == "internvideo2" else 8)
              for b in ("clip", "languagebind", "internvideo2")}
    return {"root": root, "videos": videos, "bad": {f"bad/{k}" for k in bad}, "models": models}


def run(corpus, out, *extra, encoder="clip"):
    return extract.main([str(corpus["videos"]), "--encoder", encoder, "--checkpoint", str(corpus["models"][encoder]),
                         "--out", str(out), "--batch_size", "4", "--store_dtype", "float32", "--no_progress", "--device",
                         "cpu", *extra])


def contents(store_dir):
    store = EmbeddingStore(store_dir)
    return {v: (store.get(v), store.times(v), store.duration(v)) for v in store.video_ids}


def assert_same_store(a, b):
    assert sorted(a) == sorted(b)
    for vid in a:
        np.testing.assert_allclose(a[vid][0], b[vid][0], atol=1e-5, err_msg=vid)
        np.testing.assert_allclose(a[vid][1], b[vid][1], err_msg=vid)


@pytest.fixture(scope="module")
def reference(corpus):
    out = corpus["root"] / "reference"
    summary = run(corpus, out, "--num_workers", "2")
    return out, summary


def direct_embeddings(encoder, path, spec):
    """The slow reference: one video, decoded in-process, embedded in one batch."""
    events = list(sample_video(get_reader("pyav"), path, spec))
    frames = np.concatenate([e[2] for e in events[1:]])
    v = encoder.encode_video(frames).numpy()
    return v / np.linalg.norm(v, axis=1, keepdims=True), events[0][1]


def test_clip_store_equals_direct_encoding_and_records_every_failure(corpus, reference):
    out, summary = reference
    assert (summary["done"], summary["failed"], summary["skipped"]) == (len(GOOD), len(corpus["bad"]), 0)
    store = EmbeddingStore(out)
    m = store.manifest
    assert m["encoder"] == f"clip:{corpus['models']['clip'].name}" and m["dim"] == 16
    assert (m["segment_seconds"], m["stride_seconds"], m["min_last_seconds"], m["frames_per_segment"]) == (5, 5, 2.5, 8)
    assert sorted(store.video_ids) == sorted(GOOD)
    encoder = build_encoder("clip", corpus["models"]["clip"])
    spec = encoder.sampling(5.0, 5.0, 2.5)
    for vid, seconds in GOOD.items():
        ref, windows = direct_embeddings(encoder, corpus["videos"] / f"{vid}.mp4", spec)
        np.testing.assert_allclose(store.get(vid), ref, atol=1e-5, err_msg=vid)
        np.testing.assert_allclose(store.times(vid), windows, atol=1e-6)
        assert store.duration(vid) == pytest.approx(seconds)
    # every bad file is a failure with a reason, none has a vector
    failures = store.failures.set_index("video_id")
    assert set(failures.index) == corpus["bad"]
    assert failures.loc["bad/too_short", "reason"].startswith("zero windows")
    assert "video stream" in failures.loc["bad/audio_only", "reason"]
    assert "truncated" in failures.loc["bad/truncated_faststart", "reason"]
    assert all(failures.reason.str.len() > 10)
    assert len(list((out / "logs").glob("extract-*.json"))) == 1


def test_the_store_trains_with_main_pretrain(reference, tmp_path):
    import main_pretrain
    result = main_pretrain.main([
        "--data_path", str(reference[0]), "--output_dir", str(tmp_path / "run"), "--model", "lvmae_tiny",
        "--embed_dim", "16", "--depth", "1", "--num_heads", "2", "--decoder_embed_dim", "16", "--decoder_depth", "1",
        "--decoder_num_heads", "2", "--epochs", "1", "--warmup_epochs", "0", "--batch_size", "2", "--num_workers", "0",
        "--val_fraction", "0", "--duration_min", "5", "--no_progress"])
    assert np.isfinite(result["train_loss"])


def test_languagebind_end_to_end(corpus, tmp_path):
    summary = run(corpus, tmp_path / "lb", "--limit", "3", "--extensions", "mp4", encoder="languagebind")
    assert summary["done"] + summary["failed"] == 3
    store = EmbeddingStore(tmp_path / "lb")
    assert store.manifest["encoder"].startswith("languagebind:")
    assert (store.manifest["profile"], store.manifest["transform"]) == ("hf", "languagebind-video")
    encoder = build_encoder("languagebind", corpus["models"]["languagebind"])
    spec = encoder.sampling(5.0, 5.0, 2.5)
    for vid in store.video_ids:
        ref, _ = direct_embeddings(encoder, corpus["videos"] / f"{vid}.mp4", spec)
        np.testing.assert_allclose(store.get(vid), ref, atol=1e-5, err_msg=vid)
    assert encoder.encode_text(["a dog on the beach", "two"]).shape == (2, 16)


def test_internvideo2_through_its_remote_code(corpus, tmp_path):
    encoder = build_encoder("internvideo2", corpus["models"]["internvideo2"])
    assert (encoder.frames_per_segment, encoder.frame_size, encoder.transform.name, encoder.dim) == \
        (4, 32, "internvideo2-demo", 16)
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)
    v = encoder.encode_video(frames)
    np.testing.assert_allclose(v[1:2], encoder.encode_video(frames[1:2]), atol=1e-6)  # batch-independent
    assert v.shape == (3, 16) and encoder.encode_text(["a man cooks food", "a cat"]).shape == (2, 16)
    summary = run(corpus, tmp_path / "iv2", "--limit", "1", encoder="internvideo2")
    assert summary["done"] == 1 and EmbeddingStore(tmp_path / "iv2").manifest["frames_per_segment"] == 4


def test_resume_after_an_interrupted_run_gives_the_same_store(corpus, reference, tmp_path, monkeypatch):
    out = tmp_path / "store"
    original, calls = Extraction._encode_batch, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Extraction, "_encode_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(corpus, out, "--num_workers", "1", "--batch_size", "2")
    monkeypatch.undo()
    first = committed_ids(out)
    assert 0 < len(first & set(GOOD)) < len(GOOD)  # some finished videos were kept, not all were done
    # what a SIGKILL in the middle of a commit leaves behind: files no reader looks at
    (out / "shards" / "r0of1_s0of1-000099.npy").write_bytes(b"half a shard")
    (out / "index-r0of1_s0of1-000099.csv.tmp-4242").write_text("video_id,shard\n")
    summary = run(corpus, out, "--num_workers", "1")
    assert summary["skipped"] == len(first)
    assert summary["done"] + summary["failed"] == len(GOOD) + len(corpus["bad"]) - len(first)
    assert_same_store(contents(out), contents(reference[0]))


@pytest.mark.parametrize("split", ["shards", "ranks"])
def test_two_shards_or_two_ranks_make_one_store(corpus, reference, tmp_path, monkeypatch, split):
    out = tmp_path / "store"
    done = 0
    for i in (0, 1):
        if split == "ranks":  # what torchrun sets
            monkeypatch.setenv("RANK", str(i))
            monkeypatch.setenv("WORLD_SIZE", "2")
        done += run(corpus, out, "--num_workers", "1", *(["--shard", f"{i}/2"] if split == "shards" else []))["done"]
    assert done == len(GOOD)
    writers = ("r0of1_s0of2", "r0of1_s1of2") if split == "shards" else ("r0of2_s0of1", "r1of2_s0of1")
    assert all(len(list(out.glob(f"index-{w}-*.csv"))) == 1 for w in writers)
    assert_same_store(contents(out), contents(reference[0]))


def test_a_killed_run_leaves_a_valid_store_and_a_rerun_completes_it(corpus, reference, tmp_path):
    """A real SIGKILL of the whole process group in the middle of a run."""
    reader = tmp_path / "slow_reader.py"
    reader.write_text("import os, time\nfrom preprocessing.readers import PyAVReader\n"
                      "class SlowReader(PyAVReader):\n"
                      "    def open(self, path):\n"
                      "        if os.path.basename(path) == 'c.mp4':\n            time.sleep(600)\n"
                      "        return super().open(path)\n")
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "preprocessing.extract", str(corpus["videos"]), "--encoder", "clip",
           "--checkpoint", str(corpus["models"]["clip"]), "--out", str(out), "--store_dtype", "float32",
           "--num_workers", "1", "--commit_interval", "0", "--reader", f"{reader}:SlowReader", "--no_progress"]
    proc = subprocess.Popen(cmd, cwd=os.getcwd(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        deadline = time.monotonic() + 120
        while not {"a", "b"} <= (committed_ids(out) if (out / "manifest.json").exists() else set()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before committing"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its decode worker and the fork server
        proc.wait()
    killed = committed_ids(out)
    assert "c" not in killed and "sub/d" not in killed
    assert sorted(EmbeddingStore(out).video_ids) == ["a", "b"]  # opens: no partial commit is visible
    summary = run(corpus, out, "--num_workers", "1")
    assert summary["skipped"] == len(killed) and summary["done"] == 2
    assert_same_store(contents(out), contents(reference[0]))


def test_a_decoder_crash_or_hang_is_attributed_and_the_run_goes_on(corpus, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "crash", "c", "hang"):
        shutil.copy(corpus["videos"] / ("a.mp4" if name in ("crash", "hang") else f"{name}.mp4"), videos / f"{name}.mp4")
    reader = tmp_path / "fragile_reader.py"
    reader.write_text(
        "import os, time\nfrom preprocessing.readers import PyAVReader\n"
        "class FragileReader(PyAVReader):\n"
        "    def open(self, path):\n"
        "        name = os.path.basename(path)\n"
        "        if name == 'crash.mp4':\n            os.abort()  # like a segfault inside FFmpeg\n"
        "        if name == 'hang.mp4':\n            time.sleep(600)\n"
        "        return super().open(path)\n")
    out = tmp_path / "store"
    summary = extract.main([str(videos), "--encoder", "clip", "--checkpoint", str(corpus["models"]["clip"]),
                            "--out", str(out), "--reader", f"{reader}:FragileReader", "--num_workers", "1",
                            "--decode_timeout", "3", "--no_progress"])
    assert (summary["done"], summary["failed"], summary["decoder_restarts"]) == (2, 2, 2)
    store = EmbeddingStore(out)
    assert sorted(store.video_ids) == ["a", "c"]
    reasons = store.failures.set_index("video_id").reason
    assert "SIGABRT" in reasons["crash"] and "while decoding this video" in reasons["crash"]
    assert "no progress for 3 s" in reasons["hang"]


def test_retry_failed_reruns_recorded_failures_and_the_index_wins(corpus, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(corpus["videos"] / "c.mp4", videos / "c.mp4")
    shutil.copy(corpus["videos"] / "bad" / "truncated.mp4", videos / "x.mp4")
    out = tmp_path / "store"
    args = [str(videos), "--encoder", "clip", "--checkpoint", str(corpus["models"]["clip"]), "--out", str(out),
            "--num_workers", "1", "--no_progress"]
    assert extract.main(args)["failed"] == 1
    shutil.copy(corpus["videos"] / "a.mp4", videos / "x.mp4")  # the file gets repaired
    assert extract.main(args)["skipped"] == 2  # failures are not retried unless asked
    assert extract.main(args + ["--retry_failed"])["done"] == 1
    store = EmbeddingStore(out)
    # the committed index row wins over the old failure row (which stays on disk)
    assert sorted(store.video_ids) == ["c", "x"] and store.failures.empty
    assert len(list(out.glob("failures-*.csv"))) == 1
    from preprocessing.stores import describe
    assert describe(store)[0]["failures"] == 0


def test_bad_setups_fail_at_start_naming_the_flag(corpus, tmp_path, capsys):
    videos = str(corpus["videos"])
    with pytest.raises(SystemExit, match="--checkpoint .*not a directory"):
        extract.main([videos, "--encoder", "clip", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as e:
        extract.main([videos, "--encoder", "videomae", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "s")])
    assert e.value.code == 1 and "invalid choice: 'videomae'" in capsys.readouterr().err
    no_code = tmp_path / "iv2"
    shutil.copytree(corpus["models"]["internvideo2"], no_code)
    os.remove(no_code / "modeling_tiny_internvideo2.py")
    with pytest.raises(SystemExit, match="modeling_tiny_internvideo2.py, which is missing"):
        extract.main([videos, "--encoder", "internvideo2", "--checkpoint", str(no_code), "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit, match="--frames_per_segment 4: .* 8 frames"):
        run(corpus, tmp_path / "s", "--frames_per_segment", "4", encoder="languagebind")
    with pytest.raises(SystemExit, match="no videos found"):
        run(corpus, tmp_path / "s", "--extensions", "xyz")
    assert not (tmp_path / "s").exists()  # nothing was written by a failed start
    # resuming a store with other windows is refused
    run(corpus, tmp_path / "s", "--limit", "1")
    with pytest.raises(SystemExit, match="min_last_seconds=2.5"):
        run(corpus, tmp_path / "s", "--min_last_seconds", "1")
