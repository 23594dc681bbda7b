"""Throughput of the preprocessing pipeline on generated videos of several lengths and sizes.

Three measurements, all in 5-s segments per second (T = 8 frames each, through the worker
half of a 224-px transform, ``--transform``: ``clip`` = CLIPImageProcessor's PIL resize + crop,
``languagebind`` = its float32 normalise + resize + crop, ``internvideo2`` = cv2 resize,
``legacy`` = the PIL resize every encoder had before profiles):

- ``sample``: one process, ``sample_video`` (open, timestamps, windows, one forward decode,
  resize + crop) per reader and per video kind;
- ``pool``: the supervised decode workers (``--num_workers``) on all videos, no encoder;
- ``extract``: ``python -m preprocessing.extract`` end to end with a tiny random CLIP (224 px
  input, so the encoder costs almost nothing and the number is the pipeline's ceiling).

Videos are h264 (x264 ``--crf``, 25 fps) with a moving texture, generated once into
``--work_dir``. Prints one JSON line (also appended to ``--output`` when given).

    python benchmarks/bench_extract.py [--seconds 20 60] [--sizes 320x240 1280x720] [--num_workers 2] [--transform clip]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from preprocessing import transforms  # noqa: E402
from preprocessing.decode import SamplingSpec, sample_video  # noqa: E402
from preprocessing.pool import DecodePool, Job  # noqa: E402
from preprocessing.readers import get_reader  # noqa: E402
from preprocessing.synthetic_videos import parse_size, write_video  # noqa: E402

_STATS = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
TRANSFORMS = {"clip": transforms.CLIPProcessorTransform(224, *_STATS),
              "languagebind": transforms.LanguageBindTransform(224, *_STATS),
              "internvideo2": transforms.InternVideo2DemoTransform(224, *_STATS),
              "legacy": transforms.LegacyTransform(224, *_STATS, crop="center", interpolation="bicubic")}


def make_videos(work: Path, seconds, sizes, crf) -> dict[str, list[Path]]:
    kinds = {}
    for w, h in sizes:
        for s in seconds:
            path = work / f"v{w}x{h}_{s:g}s.mp4"
            if not path.exists():
                write_video(path, seconds=s, fps=25, size=(w, h), crf=crf, gop=50)
            kinds[f"{w}x{h}_{s:g}s"] = [path]
    return kinds


def bench_sample(kinds, readers, spec) -> dict:
    out = {}
    for reader in readers:
        r = get_reader(reader)
        for kind, paths in kinds.items():
            t = time.perf_counter()
            n = sum(len(e[2]) for p in paths for e in sample_video(r, p, spec) if e[0] == "frames")
            out[f"{reader}/{kind}"] = round(n / (time.perf_counter() - t), 2)
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
    p.add_argument("--seconds", type=float, nargs="+", default=[20.0, 60.0], help="video lengths")
    p.add_argument("--sizes", type=parse_size, nargs="+", default=[(320, 240), (1280, 720)], help="frame sizes WxH")
    p.add_argument("--crf", type=int, default=23, help="x264 quality of the generated videos")
    p.add_argument("--num_workers", type=int, default=2, help="decode workers for the pool / extract runs")
    p.add_argument("--batch_size", type=int, default=64, help="encoder batch for the extract run")
    p.add_argument("--work_dir", default=None, help="where videos are generated (default: a temporary directory)")
    p.add_argument("--output", default=None, help="also append the JSON line to this file")
    p.add_argument("--transform", default="clip", choices=list(TRANSFORMS),
                   help="worker half of which 224-px transform (the extract run is always the tiny CLIP's)")
    args = p.parse_args(argv)
    spec = SamplingSpec(frames_per_segment=8, transform=TRANSFORMS[args.transform])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        kinds = make_videos(work, args.seconds, args.sizes, args.crf)
        paths = [p for ps in kinds.values() for p in ps]
        readers = ["pyav"] + (["decord"] if importlib.util.find_spec("decord") else [])
        result = {"bench": "extract", "frames_per_segment": spec.frames_per_segment,
                  "frame_size": spec.transform.size, "transform": args.transform,
                  "videos": sorted(kinds), "sample_segments_per_s": bench_sample(kinds, readers, spec),
                  "pool_workers": args.num_workers, "pool_segments_per_s": bench_pool(paths, args.num_workers, "auto", spec),
                  "extract_tiny_clip": bench_extract(paths, work, args.num_workers, args.batch_size)}
    line = json.dumps(result)
    print(line)
    if args.output:
        with open(args.output, "a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
