"""Readers and frame sampling on generated h264 videos of known length, frame rate and content
(every frame carries its own index, see preprocessing.synthetic_videos)."""
import importlib.util

import numpy as np
import pytest

from preprocessing.decode import SamplingSpec, sample_video
from preprocessing.readers import DecodeError, PyAVVideo, get_reader
from preprocessing.synthetic_videos import frame_index, write_bad_files, write_video
from preprocessing.transforms import CLIPProcessorTransform
from preprocessing.windows import frame_indices, plan_segments, sample_times

HAVE_DECORD = importlib.util.find_spec("decord") is not None
READERS = ["pyav"] + (["decord", "auto"] if HAVE_DECORD else [])
T32 = CLIPProcessorTransform(32, (0.5,) * 3, (0.5,) * 3, shortest_edge=32, crop_hw=(32, 32))
SPEC = SamplingSpec(frames_per_segment=4, min_last_seconds=1.0, transform=T32)
VFR = np.concatenate([np.arange(0, 5, 0.1), 5 + np.arange(0, 5, 1 / 30)])  # 10 fps, then 30 fps


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {"cfr": (d / "cfr.mp4", write_video(d / "cfr.mp4", seconds=12, fps=25, size=(64, 48))),
            "vfr": (d / "vfr.mp4", write_video(d / "vfr.mp4", timestamps=VFR, size=(64, 48))),
            "bad": write_bad_files(d / "bad")}


def run(reader, path, spec=SPEC, chunk=16):
    events = list(sample_video(get_reader(reader), path, spec, chunk))
    assert events[0][0] == "meta" and all(e[0] == "frames" for e in events[1:])
    assert [e[1] for e in events[1:]] == list(np.cumsum([0] + [len(e[2]) for e in events[1:-1]]))
    return events[0][1], events[0][2], np.concatenate([e[2] for e in events[1:]])


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", ["cfr", "vfr"])
def test_timestamps_and_duration(videos, reader, kind):
    path, written = videos[kind]
    with get_reader(reader).open(path) as video:
        np.testing.assert_allclose(video.timestamps, written, atol=2e-3)
        if kind == "cfr":
            assert video.duration == pytest.approx(12.0, abs=1e-3)
        else:  # the end of the last frame: its pts + the duration the muxer gave it
            assert written[-1] < video.duration <= written[-1] + 0.05


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", ["cfr", "vfr"])
def test_sampled_frames_are_the_frames_on_screen_inside_their_window(videos, reader, kind):
    path, written = videos[kind]
    windows, duration, frames = run(reader, path)
    expected_windows = [[0, 5], [5, 10], [10, 12]] if kind == "cfr" else [[0, 5], [5, 10]]
    np.testing.assert_allclose(windows, expected_windows, atol=2e-3)
    assert frames.shape == (len(windows), 4, 32, 32, 3) and frames.dtype == np.uint8
    got = np.array([[frame_index(f) for f in seg] for seg in frames])
    assert (got == frame_indices(written, sample_times(windows, 4))).all()
    shown = written[got]
    assert ((shown >= windows[:, :1] - 0.1) & (shown < windows[:, 1:])).all()


@pytest.mark.parametrize("reader", READERS)
def test_sampling_is_deterministic_and_independent_of_chunking(videos, reader):
    path = videos["cfr"][0]
    a = run(reader, path, chunk=16)[2]
    b = run(reader, path, chunk=1)[2]
    assert np.array_equal(a, b)
    if reader != "pyav":
        assert np.array_equal(a, run("pyav", path)[2])  # all readers decode the same pixels


def test_overlapping_windows_share_frames(videos):
    spec = SamplingSpec(segment_seconds=5, stride_seconds=2.5, min_last_seconds=1.0, frames_per_segment=4,
                        transform=T32)
    windows, _, frames = run("pyav", videos["cfr"][0], spec, chunk=3)
    np.testing.assert_allclose(windows, [[0, 5], [2.5, 7.5], [5, 10], [7.5, 12]])
    got = np.array([[frame_index(f) for f in seg] for seg in frames])
    assert (got == frame_indices(videos["cfr"][1], sample_times(windows, 4))).all()


BAD = {"empty": "cannot open", "not_a_video": "cannot open", "garbage": "cannot open",
       "audio_only": "video stream", "truncated": "cannot open", "truncated_faststart": "truncated|cannot open",
       "fails_mid_decode": "decod", "too_short": "zero windows"}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_raise_decode_errors_with_a_reason(videos, reader, kind):
    events = []
    with pytest.raises(DecodeError, match=BAD[kind]):
        for event in sample_video(get_reader(reader), videos["bad"][kind], SamplingSpec(frames_per_segment=4,
                                                                                       transform=T32), 1):
            events.append(event[0])
    if kind == "fails_mid_decode":  # it opened, was cut into windows, then decoding failed
        assert events[:1] == ["meta"]


@pytest.mark.skipif(not HAVE_DECORD, reason="decord has x86-64 wheels only")
def test_auto_reader_falls_back_to_pyav_where_decord_fails(tmp_path):
    path = tmp_path / "w48.mp4"  # decord 0.6 cannot batch-decode 48-pixel-wide frames
    written = write_video(path, seconds=6, fps=10, size=(48, 40))
    with pytest.raises(DecodeError, match="decoding frames"):
        run("decord", path)
    windows, _, frames = run("auto", path)
    got = np.array([[frame_index(f) for f in seg] for seg in frames])
    assert (got == frame_indices(written, sample_times(windows, 4))).all()
    assert np.array_equal(frames, run("pyav", path)[2])


def test_reader_selection(tmp_path):
    assert get_reader("auto").name == ("decord+pyav" if HAVE_DECORD else "pyav")
    plugin = tmp_path / "my_reader.py"
    plugin.write_text("from preprocessing.readers import PyAVReader\nclass Mine(PyAVReader):\n    name = 'mine'\n")
    assert get_reader(f"{plugin}:Mine").name == "mine"
    assert get_reader("preprocessing.readers:PyAVReader").name == "pyav"
    with pytest.raises(ValueError, match="unknown --reader"):
        get_reader("opencv")
    with pytest.raises(ValueError, match="no class"):
        get_reader(f"{plugin}:Missing")


# --- decoding only what the sampled frames need ---------------------------------------------------
def full_decode(path):
    import av
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory):
    """Lossy 160x96 videos (the index band survives crf 18): short GOPs with and without
    B-frames, long GOPs with B-frames, and open GOPs (leading B-frames that reference the GOP
    before)."""
    d = tmp_path_factory.mktemp("gops")
    kinds = {"short_ip": dict(gop=6, bframes=0), "short_b": dict(gop=12, bframes=3, preset="medium"),
             "long_b": dict(gop=100, bframes=3, preset="medium"),
             "open_b": dict(gop=20, bframes=3, preset="medium", open_gop=True)}
    for kind, options in kinds.items():
        write_video(d / f"{kind}.mp4", seconds=8, fps=25, size=(160, 96), crf=18, **options)
    return {kind: d / f"{kind}.mp4" for kind in kinds}


def test_synthetic_videos_have_the_requested_gop_structure(gop_videos):
    import av
    for kind, (keys, reordered) in {"short_ip": (34, False), "short_b": (17, True), "long_b": (2, True),
                                    "open_b": (10, True)}.items():
        with av.open(str(gop_videos[kind])) as container:
            packets = [p for p in container.demux(video=0) if p.size]
        assert sum(p.is_keyframe for p in packets) == keys, kind
        assert any(p.pts != p.dts for p in packets) == reordered, kind
    assert PyAVVideo(str(gop_videos["open_b"]))._open_gop and not PyAVVideo(str(gop_videos["long_b"]))._open_gop


@pytest.mark.parametrize("kind", ["short_ip", "short_b", "long_b", "open_b"])
@pytest.mark.parametrize("rule", ["centres", "linspace"])
def test_sampled_frames_equal_a_full_decode(gop_videos, kind, rule):
    """PyAV leaves GOP tails and whole GOPs undecoded, decord skips; both must return exactly the
    frames an in-order decode of every frame shows at the sampled indices (decord 0.6's
    get_batch and skip_frames both return the wrong frames after an open GOP's key frame)."""
    path, reference = gop_videos[kind], full_decode(gop_videos[kind])
    for T in (8, 2):
        with get_reader("pyav").open(path) as video:
            _, idx = plan_segments(video.timestamps, video.duration, 2.0, 2.0, 0.5, T, rule)
        wanted = np.unique(idx)
        for reader in READERS:
            with get_reader(reader).open(path) as video:
                got = list(video.frames(wanted))
            assert len(got) == len(wanted), reader
            bad = [int(i) for a, i in zip(got, wanted) if not np.array_equal(a, reference[i])]
            assert not bad, f"{reader}: wrong frames {bad}"
            assert [frame_index(a) for a in got] == wanted.tolist(), reader


def test_pyav_decodes_only_the_packets_the_sampled_frames_need(gop_videos):
    """Short GOPs: GOPs without a sampled frame and every GOP's tail after its last one are left
    out; open GOPs: everything up to the last sampled frame."""
    video = PyAVVideo(str(gop_videos["short_ip"]))
    wanted = np.array([3, 40, 41, 100])  # GOPs of 6 frames, I/P only: decode order == display order
    feed = video.packets_to_decode(wanted)
    assert np.flatnonzero(feed).tolist() == [0, 1, 2, 3, 36, 37, 38, 39, 40, 41, 96, 97, 98, 99, 100]
    opened = PyAVVideo(str(gop_videos["open_b"]))
    assert opened.packets_to_decode(wanted).tolist() == (np.arange(200) <= opened._decode_pos[100]).tolist()


def test_transform_thread_changes_nothing(gop_videos):
    path = gop_videos["long_b"]
    events = [list(sample_video(get_reader("pyav"), path, SPEC, 3, transform_threads=t)) for t in (0, 1, 2)]
    frames = [np.concatenate([e[2] for e in ev[1:]]) for ev in events]
    assert np.array_equal(frames[0], frames[1]) and np.array_equal(frames[0], frames[2])
    assert [e[1] for e in events[0][1:]] == [e[1] for e in events[1][1:]]


def test_decoder_threads_are_the_cores_left_to_each_worker():
    from preprocessing.pool import default_decoder_threads
    assert [default_decoder_threads(w, 8) for w in (1, 2, 3, 7, 8, 16)] == [8, 4, 2, 1, 1, 1]
    assert get_reader("pyav", 1).threads == 1 and get_reader("auto", 3).threads == 3
