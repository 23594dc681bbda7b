"""Long videos -> 5-second segment embeddings in an embedding store (paper Sec. 3.1, App. 7, 9).

    python -m preprocessing.extract videos/ --encoder languagebind --checkpoint LanguageBind_Video_Huge_V1.5_FT --out stores/movies
    python -m preprocessing.extract list.csv --encoder clip --checkpoint clip-vit-base-patch32 --out stores/x
    # the authors' sampling (linspace frames of each window, every tail, float32)
    python -m preprocessing.extract videos/ ... --profile authors

    # many GPUs: each rank takes a disjoint part of the list (no process group needed)
    torchrun --nproc_per_node 8 -m preprocessing.extract videos/ --encoder languagebind --checkpoint DIR --out STORE
    # job arrays: task i of n (combines with torchrun: n x world parts)
    python -m preprocessing.extract videos/ ... --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT

Each video is opened once and decoded forward once in a supervised worker process (decord, with
PyAV taking over the videos decord fails on; ``--reader pyav`` for PyAV only); ``T`` frames
sampled inside every window by the ``--profile``'s rule go through the encoder's own transform
(``preprocessing.transforms``, ``preprocessing.profiles``), segments of several videos are batched together, and a video's vectors are committed to the store only when
all of its segments are embedded. Failures (unreadable, truncated, audio-only, failing mid-decode, crashing the decoder, zero
windows) go to ``failures-*.csv`` and the run goes on. A rerun of the same command skips every
committed (and failed, unless ``--retry_failed``) video; a killed run leaves no partial commit.
When a retried failure succeeds, its old failures row stays and the index row wins: it is a
committed video from then on.
"""
# Top-level imports stay light on purpose: decode workers (forkserver / spawn) re-import the
# main module, and must not pay for torch, transformers or pandas.
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from preprocessing.encoders import BACKENDS
from preprocessing.profiles import DEFAULT_PROFILE, PROFILES
from preprocessing.readers import READERS, VIDEO_EXTENSIONS
from preprocessing.video_list import ID_LAYOUTS
from util.cli import ArgumentParser, nonneg_float, output_dir, positive_float, positive_int, run_cli
from util.io import nothing_left_on_error

# Manifest keys that must not change between runs writing one store (beyond what StoreWriter
# checks); a key the existing store lacks is not compared.
RESUME_KEYS = ("profile", "min_last_seconds", "frames_per_segment", "frame_size", "transform", "crop",
               "interpolation", "shortest_edge", "resize_hw", "crop_hw", "resample", "rescale", "mean", "std",
               "sampling")


def get_args_parser():
    p = argparse.ArgumentParser("LV-MAE segment embedding extraction", add_help=False)
    p.add_argument("inputs", nargs="+",
                   help="video directories (scanned recursively), CSV lists with columns video_id,path, or video files")
    p.add_argument("--out", required=True, type=output_dir,
                   help="embedding store directory (created; a rerun resumes it)")
    p.add_argument("--encoder", required=True, choices=list(BACKENDS), help="short-video encoder backend")
    p.add_argument("--checkpoint", required=True, help="local directory of the encoder's weights, config and tokenizer")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES),
                   help="hf: each encoder's own transform, frames at window centres, tails from half a segment, "
                        "float16 on GPU; authors: the authors' frames (linspace of each window, ends included), "
                        "every tail, float32; legacy: only to finish a store made before profiles existed")
    p.add_argument("--id_layout", default="path", choices=list(ID_LAYOUTS),
                   help="video_id of a scanned file: path (relative path without extension), name (file stem, "
                        "e.g. COIN's <class>/<youtube id>.mp4), breakfast (P03/cam01/P03_cereals.avi -> "
                        "P03-cam01-P03_cereals, the split files' ids)")
    p.add_argument("--segment_seconds", type=positive_float, default=5.0, help="window length in seconds (paper: 5)")
    p.add_argument("--stride_seconds", type=positive_float, default=None,
                   help="seconds between window starts (default: --segment_seconds, no overlap; smaller overlaps, App. 9)")
    p.add_argument("--min_last_seconds", type=nonneg_float, default=None,
                   help="keep the last, partial window if it lasts at least this long (default: half a segment; "
                        "--profile authors: every tail)")
    p.add_argument("--frames_per_segment", type=positive_int, default=None,
                   help="frames T sampled per window (default: the model's own; clip: 8)")
    p.add_argument("--reader", default="auto",
                   help=f"video reader: {', '.join(READERS)} (auto = decord with a PyAV fallback per video, PyAV "
                        "where decord is not installed), or module:Class / file.py:Class")
    p.add_argument("--batch_size", type=positive_int, default=64, help="segments per encoder batch (mixing videos)")
    p.add_argument("--num_workers", type=positive_int, default=None,
                   help="decode worker processes per rank (default: CPUs per rank - 1, between 1 and 8)")
    p.add_argument("--device", default="auto",
                   help="encoder device: auto (default: cuda:LOCAL_RANK if CUDA is available, else cpu), cpu, cuda, "
                        "cuda:1 ... (a bare cuda is cuda:LOCAL_RANK)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
                   help="encoder precision (auto: float16 on GPU, float32 on CPU; --profile authors: float32)")
    p.add_argument("--store_dtype", default="float16", choices=["float16", "float32"], help="dtype of the stored vectors")
    p.add_argument("--shard", default="0/1", help="i/n: process only part i of n of the video list (job arrays)")
    p.add_argument("--retry_failed", action="store_true", help="retry videos recorded in failures-*.csv")
    p.add_argument("--commit_interval", type=nonneg_float, default=300.0,
                   help="seconds between commits: a killed run loses at most this much finished work")
    p.add_argument("--shard_rows", type=positive_int, default=65536,
                   help="segments per shard file (a commit is made when reached)")
    p.add_argument("--decode_timeout", type=positive_float, default=600.0,
                   help="seconds without progress after which a decoder is killed and its video recorded as failed")
    p.add_argument("--extensions", default=",".join(e[1:] for e in VIDEO_EXTENSIONS),
                   help="comma-separated extensions scanned in input directories")
    p.add_argument("--limit", type=positive_int, default=None, help="process at most this many of the remaining videos")
    p.add_argument("--no_progress", action="store_true", help="no progress bar (logs only)")
    return p


def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (1 process otherwise)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def check_resume(out: Path, manifest: dict) -> None:
    """A store being resumed must have been made with the same windows and preprocessing."""
    from datasets.store import MATCH_KEYS, read_manifest
    if not (out / "manifest.json").exists():
        return
    existing = read_manifest(out)
    for key in dict.fromkeys(("profile",) + MATCH_KEYS + ("dtype",) + RESUME_KEYS):  # the profile first
        if key in existing and existing[key] != manifest.get(key):
            hint = f" (--profile {existing[key]})" if key == "profile" and existing[key] in PROFILES else ""
            raise SystemExit(f"{out / 'manifest.json'} has {key}={existing[key]!r}, this run would write "
                             f"{manifest.get(key)!r}: rerun with the store's settings{hint}, or use another --out")


def _stop_on_sigterm(signum, frame):
    # Schedulers (SLURM preemption, Kubernetes) send SIGTERM: stop like Ctrl-C, committing every
    # finished video, instead of dying with the writer's buffer.
    raise KeyboardInterrupt(f"signal {signum}")


def run(args) -> dict:
    import torch

    from datasets.store import StoreWriter, committed_ids, make_manifest
    from preprocessing.encoders import EncoderError, build_encoder
    from preprocessing.pipeline import Extraction
    from preprocessing.pool import default_decoder_threads
    from preprocessing.profiles import get_profile
    from preprocessing.readers import get_reader
    from preprocessing.video_list import VideoListError, list_videos, parse_shard, select_part

    rank, world, local_rank = dist_env()
    profile = get_profile(args.profile)
    stride = args.segment_seconds if args.stride_seconds is None else args.stride_seconds
    default_min_last = args.segment_seconds * profile.min_last_fraction
    min_last = default_min_last if args.min_last_seconds is None else args.min_last_seconds
    if profile.fixed and (min_last != default_min_last or args.dtype not in ("auto", profile.dtype)):
        flag = "--min_last_seconds" if min_last != default_min_last else "--dtype"
        raise SystemExit(f"{flag}: --profile {profile.name} keeps every tail and runs {profile.dtype}, as the "
                         "authors' code did; drop the flag, or use --profile hf")
    if not 0 < stride <= args.segment_seconds:
        raise SystemExit(f"--stride_seconds {stride} must be in (0, --segment_seconds {args.segment_seconds}]")
    if not 0 <= min_last <= args.segment_seconds:
        raise SystemExit(f"--min_last_seconds {min_last} must be in [0, --segment_seconds {args.segment_seconds}]")
    try:
        shard = parse_shard(args.shard)
        reader = getattr(get_reader(args.reader), "name", args.reader)  # fail here, not in every worker
        from util.dist import resolve_device
        device = str(resolve_device(args.device or "auto", local_rank))
        encoder = build_encoder(args.encoder, args.checkpoint, device, args.dtype, args.frames_per_segment,
                                profile.name)
        videos = list_videos(args.inputs, [e.strip() for e in args.extensions.split(",") if e.strip()],
                             args.id_layout)
    except (VideoListError, EncoderError, ValueError) as e:
        raise SystemExit(str(e)) from None
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))

    out = Path(args.out)
    manifest = make_manifest(encoder.name, encoder.dim, dtype=args.store_dtype, segment_seconds=args.segment_seconds,
                             stride_seconds=stride, min_last_seconds=min_last,
                             frames_per_segment=encoder.frames_per_segment, normalized=False,
                             encoder_dtype=str(encoder.dtype)[6:], **encoder.manifest_fields())
    check_resume(out, manifest)
    writer_id = f"r{rank}of{world}_s{shard[0]}of{shard[1]}"
    writer = StoreWriter(out, writer_id, manifest, shard_rows=args.shard_rows)

    part = select_part(videos, shard, rank, world)
    done = committed_ids(out, include_failures=not args.retry_failed)
    todo = part[~part.video_id.isin(done)]
    skipped = len(part) - len(todo)
    if args.limit is not None:
        todo = todo.iloc[:args.limit]
    cpus = (os.cpu_count() or 2) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    workers = max(1, min(8, cpus - 1)) if args.num_workers is None else args.num_workers
    print(f"[rank {rank}/{world}, shard {shard[0]}/{shard[1]}] {encoder.name} ({encoder.dim}-d, "
          f"T={encoder.frames_per_segment}, {encoder.frame_size}px, profile {profile.name}: "
          f"{encoder.transform.name} transform) on {device} {str(encoder.dtype)[6:]}; "
          f"reader {reader} x {workers} workers; {len(part)} of {len(videos)} videos are this part's, "
          f"{skipped} already done, {len(todo)} to do")

    spec = encoder.sampling(args.segment_seconds, stride, min_last)
    extraction = Extraction(encoder, writer, spec, args.reader, num_workers=workers, batch_size=args.batch_size,
                            commit_interval=args.commit_interval, decode_timeout=args.decode_timeout,
                            progress=not args.no_progress and rank == 0,
                            decoder_threads=default_decoder_threads(workers, cpus))
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with writer:
            counts = extraction.run(todo)
    except KeyboardInterrupt:
        print("interrupted: every finished video was committed; rerun the same command to finish the rest")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = dict(counts, skipped=skipped, writer=writer_id, encoder=encoder.name, profile=profile.name, reader=reader,
                   device=str(device), workers=workers, batch_size=args.batch_size, args=vars(args))
    log = out / "logs" / f"extract-{writer_id}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    log.parent.mkdir(exist_ok=True)
    log.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"done {counts['done']}, skipped {skipped}, failed {counts['failed']}"
          f"{' (reasons in ' + str(out) + '/failures-*.csv)' if counts['failed'] else ''}; "
          f"{counts['segments']} segments in {counts['seconds']:.1f} s ({counts['segments_per_s']:.1f} segments/s, "
          f"{counts['videos_per_s']:.2f} videos/s); summary in {log}")
    return summary


def main(argv=None) -> dict:
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    if dist_env()[1] > 1 or args.shard != "0/1":
        return run(args)  # other writers share --out: what is new there is not all ours
    # A run refused before its first commit leaves no store skeleton (manifest, shards/) behind.
    with nothing_left_on_error(args.out, unless="index-*.csv"):
        return run(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
