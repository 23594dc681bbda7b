"""Throughput of the preprocessing pipeline against the decoders' own limits, on generated videos.

All rates are 5-s segments per second (T = 8 frames each, the ``--profiles``' frame rules,
through the worker half of a 224-px ``--transform``: ``clip`` = CLIPImageProcessor's PIL
resize + crop, ``languagebind`` = its float32 normalise + resize + crop, ``internvideo2`` = cv2
resize, ``legacy`` = the PIL resize every encoder had before profiles). Per video kind and
reader library, measured side by side in one process with the same decoder thread settings:

- ``decode_all``: the library decoding every frame in order and nothing else (PyAV: the
  frames, no conversion; decord: ``next()`` on every frame, which is how decord decodes) --
  the decoder's limit;
- ``reader``: our reader delivering the profile's frames (``OpenedVideo.frames``: decode, skip,
  RGB of the sampled frames);
- ``sample``: ``sample_video`` (windows, reader, the transform in its background thread) --
  what a decode worker does per video; ``sample_inline``: the same with the transform inline.

``ratio_*`` = that rate / ``decode_all``; ``cpu_ratio_*`` the same with process CPU time
instead of wall time (what one core per worker pays; less sensitive to other load). Each
measurement is the best of ``--repeats`` interleaved runs. Then, as before: ``pool`` (the
supervised decode workers on all videos, no encoder) and ``extract`` (the CLI end to end with
a tiny random 224-px CLIP, the pipeline's ceiling). The JSON line records the machine's load
average before and after: numbers taken on a loaded machine are not decoder limits.

Videos: h264 (x264 ``--preset``, ``--crf``, 25 fps) with a moving texture, one per size x GOP
x B-frame setting, generated once into ``--work_dir``.

    python benchmarks/bench_extract.py                                  # 720p/1080p, GOP 12/250, B 0/3, threads 1/0
    python benchmarks/bench_extract.py --sizes 1280x720 --gops 50 --bframes 0 --preset ultrafast --seconds 60
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from preprocessing import transforms  # noqa: E402
from preprocessing.decode import SamplingSpec, plan_windows, sample_video  # noqa: E402
from preprocessing.pool import DecodePool, Job, default_decoder_threads  # noqa: E402
from preprocessing.profiles import PROFILES  # noqa: E402
from preprocessing.readers import get_reader  # noqa: E402
from preprocessing.synthetic_videos import parse_size, write_video  # noqa: E402
from util.logging import emit_json_line  # noqa: E402

_STATS = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
TRANSFORMS = {"clip": transforms.CLIPProcessorTransform(224, *_STATS),
              "languagebind": transforms.LanguageBindTransform(224, *_STATS),
              "internvideo2": transforms.InternVideo2DemoTransform(224, *_STATS),
              "legacy": transforms.LegacyTransform(224, *_STATS, crop="center", interpolation="bicubic")}


def make_videos(work: Path, seconds, sizes, gops, bframes, preset, crf) -> dict[str, Path]:
    kinds = {}
    for w, h in sizes:
        for gop in gops:
            for b in bframes:
                kind = f"{w}x{h}_{seconds:g}s_gop{gop}_b{b}_{preset}"
                path = work / f"{kind}.mp4"
                if not path.exists():
                    write_video(path, seconds=seconds, fps=25, size=(w, h), crf=crf, gop=gop, bframes=b,
                                preset=preset)
                kinds[kind] = path
    return kinds


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def decode_all(library: str, path: Path, threads: int) -> None:
    """The library decoding every frame in order, nothing else, with the readers' thread settings."""
    if library == "pyav":
        import av
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            codec = stream.codec_context
            if threads == 1:
                codec.thread_type, codec.thread_count = "SLICE", 1
            else:
                codec.thread_type, codec.thread_count = "AUTO", threads
            for _ in container.decode(stream):
                pass
    else:
        import decord
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
        for _ in range(len(vr)):
            vr.next()


def bench_kind(library, path, spec, threads, repeats) -> dict:
    reader = get_reader(library, threads)
    with reader.open(path) as video:
        segments = len(plan_windows(video, spec)[0])

    def run_reader():
        with reader.open(path) as video:
            _, idx = plan_windows(video, spec)
            for _ in video.frames(np.unique(idx)):
                pass

    def run_sample(transform_threads):
        for _ in sample_video(reader, path, spec, transform_threads=transform_threads):
            pass

    runs = {"decode_all": lambda: decode_all(library, path, threads), "reader": run_reader,
            "sample": lambda: run_sample(1), "sample_inline": lambda: run_sample(0)}
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeats):  # interleaved, so slow phases of other load hit every measurement
        for name, fn in runs.items():
            wall, cpu = _timed(fn)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    out = {"segments": segments}
    for name, (wall, cpu) in best.items():
        out[f"{name}_segments_per_s"] = round(segments / wall, 2)
        out[f"{name}_cpu_s_per_segment"] = round(cpu / segments, 4)
    for name in ("reader", "sample", "sample_inline"):
        out[f"ratio_{name}"] = round(best["decode_all"][0] / best[name][0], 3)
        out[f"cpu_ratio_{name}"] = round(best["decode_all"][1] / best[name][1], 3)
    return out


def bench_pool(paths, num_workers, reader, spec) -> float:
    n, t = 0, time.perf_counter()
    with DecodePool(num_workers, reader, spec) as pool:
        jobs = iter([Job(i, p.stem, str(p)) for i, p in enumerate(paths)])
        pending = len(paths)
        while pending:
            for w in pool.idle():
                job = next(jobs, None)
                if job is not None:
                    pool.submit(w, job)
            for event in pool.events(1.0):
                if event[0] == "frames":
                    n += len(event[3])
                elif event[0] in ("done", "failed"):
                    pending -= 1
    return round(n / (time.perf_counter() - t), 2)


def bench_extract(paths, work: Path, num_workers, batch_size) -> dict:
    from preprocessing import extract
    from preprocessing.make_tiny_encoder import make_tiny_encoder
    model = work / "tiny_clip_224"
    if not (model / "config.json").exists():
        make_tiny_encoder("clip", model, dim=32, image_size=224)
    store = work / f"store_{time.time_ns()}"
    summary = extract.main([*map(str, paths), "--encoder", "clip", "--checkpoint", str(model), "--out", str(store),
                            "--num_workers", str(num_workers), "--batch_size", str(batch_size), "--no_progress"])
    return {k: summary[k] for k in ("segments", "seconds", "segments_per_s", "videos_per_s")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="length of every generated video")
    p.add_argument("--sizes", type=parse_size, nargs="+", default=[(1280, 720), (1920, 1080)], help="frame sizes WxH")
    p.add_argument("--gops", type=int, nargs="+", default=[12, 250], help="frames between key frames (x264: 250)")
    p.add_argument("--bframes", type=int, nargs="+", default=[0, 3], help="consecutive B-frames (x264: 3)")
    p.add_argument("--preset", default="veryfast", help="x264 preset of the generated videos (CABAC, deblocking)")
    p.add_argument("--crf", type=int, default=23, help="x264 quality of the generated videos")
    p.add_argument("--profiles", nargs="+", default=["hf", "authors"], choices=list(PROFILES),
                   help="whose frame rule picks the frames (hf: window centres, authors: linspace)")
    p.add_argument("--transform", default="clip", choices=list(TRANSFORMS),
                   help="worker half of which 224-px transform (the extract run is always the tiny CLIP's)")
    p.add_argument("--readers", nargs="+", default=None, choices=["pyav", "decord"],
                   help="reader libraries (default: pyav, and decord where installed)")
    p.add_argument("--decoder_threads", type=int, nargs="+", default=[1, 0],
                   help="decoder thread settings, each measured for reader and decode_all alike (1: one thread, "
                        "the transform thread then has the other cores; 0: the library's automatic count)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each measurement; the best counts")
    p.add_argument("--num_workers", type=int, default=2, help="decode workers for the pool / extract runs")
    p.add_argument("--batch_size", type=int, default=64, help="encoder batch for the extract run")
    p.add_argument("--skip_pipeline", action="store_true", help="only the per-video decode measurements")
    p.add_argument("--work_dir", default=None, help="where videos are generated (default: a temporary directory)")
    p.add_argument("--output", default=None, help="also append the JSON line to this file")
    args = p.parse_args(argv)
    readers = args.readers or ["pyav"] + (["decord"] if importlib.util.find_spec("decord") else [])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        kinds = make_videos(work, args.seconds, args.sizes, args.gops, args.bframes, args.preset, args.crf)
        load_before = [round(x, 2) for x in os.getloadavg()]
        result = {"bench": "extract", "cpus": os.cpu_count(), "load_average_before": load_before,
                  "frames_per_segment": 8, "frame_size": 224, "transform": args.transform,
                  "decoder_threads": args.decoder_threads, "repeats": args.repeats, "best_of": "min wall, min cpu",
                  "key": "profile/library/threads<decoder threads>/video",
                  "decode_all": {"pyav": "container.decode, every frame, no conversion",
                                 "decord": "VideoReader.next() on every frame"},
                  "videos": sorted(kinds), "decode": {}}
        for profile in args.profiles:
            spec = SamplingSpec(frames_per_segment=8, frame_rule=PROFILES[profile].frame_rule,
                                min_last_seconds=5.0 * PROFILES[profile].min_last_fraction,
                                transform=TRANSFORMS[args.transform])
            for kind, path in kinds.items():
                for library in readers:
                    for threads in args.decoder_threads:
                        result["decode"][f"{profile}/{library}/threads{threads}/{kind}"] = bench_kind(
                            library, path, spec, threads, args.repeats)
        for name in ("reader", "sample"):  # the worst case over videos, profiles, libraries and threads
            for prefix in ("ratio", "cpu_ratio"):
                result[f"min_{prefix}_{name}"] = min(v[f"{prefix}_{name}"] for v in result["decode"].values())
        if not args.skip_pipeline:
            spec = SamplingSpec(frames_per_segment=8, transform=TRANSFORMS[args.transform])
            paths = list(kinds.values())
            result["pool_workers"] = args.num_workers
            result["pool_decoder_threads"] = default_decoder_threads(args.num_workers)
            result["pool_segments_per_s"] = bench_pool(paths, args.num_workers, "auto", spec)
            result["extract_tiny_clip"] = bench_extract(paths, work, args.num_workers, args.batch_size)
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    emit_json_line(result, args.output)
    return result


if __name__ == "__main__":
    main()
