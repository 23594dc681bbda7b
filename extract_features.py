"""LV-MAE as a feature extractor for long videos (paper Fig. 1: "used to extract high-level
representations for long-video downstream tasks").

Stores (``--data_path``) or video files (``--videos``) + ``--checkpoint`` (a training checkpoint
or an exported directory, ``export_pretrained.py``) -> per-video representations in ``--output_dir``:

  cls.npy      float32 [V, E]   the [CLS] token
  mean.npy     float32 [V, E]   the mean of the video's segment tokens (never [CLS] or padding)
  tokens.npy   float32 [T, E]   with --all_tokens: every segment's token, videos back to back
  index.csv    video_id, store, num_segments, num_windows, token_offset  (row i = row i of the arrays;
               video i's tokens are tokens[token_offset : token_offset + num_segments])
  meta.json    checkpoint, encoder, dims, the long-video policy; written last

Videos of any length, never truncated. Up to ``max_len`` segments (the checkpoint's, or
``--num_patches``) a video is one window and its features are exactly the encoder's unmasked
output (``model.forward_features``). A longer video follows the sliding-window policy of
``util.long_video`` (the same one the probes use): windows of ``max_len`` segments every
``--window_stride`` segments (default ``max_len // 2``, the last window aligned to the end);
each segment takes its token from the one window whose centre is nearest (so every segment
appears exactly once); ``[CLS]`` is the mean of the windows' ``[CLS]`` weighted by how many
segments each window owns; ``mean`` averages the per-segment tokens.

Arrays are filled chunk by chunk (``--chunk_videos``) in memory-mapped temporary files and
renamed into place when complete, so memory stays bounded and a killed run leaves no partial
array under a final name.

    python extract_features.py --data_path STORE --checkpoint CKPT --output_dir FEATURES [--all_tokens]

Straight from videos (files, directories scanned recursively, or ``video_id,path`` CSV lists):
the segment embeddings are extracted first by ``preprocessing.extract`` (the same engine, decode
workers and failure rules: a video that cannot be decoded goes to ``failures-*.csv`` and the run
goes on) into the store ``<output_dir>/store``, then the LV-MAE features of every video in it are
written. The short-video encoder must be the one the LV-MAE was pretrained on (refused before
anything is extracted otherwise); frames follow the checkpoint's preprocessing ``profile`` unless
``--profile`` says otherwise. Rerunning the command resumes the extraction (committed videos are
not extracted again) and rewrites the features.

    python extract_features.py --videos clips/ more.mp4 list.csv --encoder clip --encoder_checkpoint ENCODER_DIR \
        --checkpoint EXPORTED_DIR --output_dir FEATURES
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from datasets.store import EmbeddingStore
from preprocessing.encoders import BACKENDS, encoder_name
from preprocessing.profiles import DEFAULT_PROFILE, PROFILES
from util.checkpoint import CheckpointError, check_input_dim, check_store_encoder, load_pretrained
from util.cli import DEVICE_HELP, ArgumentParser, output_dir, positive_int, resolve_device_flag, run_cli
from util.io import atomic_write_text
from util.long_video import encode_videos, window_starts


def get_args_parser():
    p = argparse.ArgumentParser("LV-MAE long-video feature extraction", add_help=False)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_path", nargs="+", help="embedding store(s), or a .txt file listing them")
    src.add_argument("--videos", nargs="+",
                     help="video files, directories or video_id,path CSV lists: extracted into <output_dir>/store "
                          "first (needs --encoder and --encoder_checkpoint)")
    p.add_argument("--checkpoint", required=True,
                   help="the pretrained LV-MAE: a training checkpoint or an exported directory (export_pretrained.py)")
    p.add_argument("--output_dir", required=True, type=output_dir,
                   help="where cls.npy, mean.npy, tokens.npy and index.csv go")
    p.add_argument("--all_tokens", action="store_true", help="also write every segment's token (tokens.npy)")
    p.add_argument("--batch_size", type=positive_int, default=64, help="windows per forward pass")
    p.add_argument("--window_stride", type=positive_int, default=None,
                   help="segments between window starts for videos longer than max_len (default max_len // 2)")
    p.add_argument("--num_patches", type=positive_int, default=None,
                   help="window length in segments: at least the checkpoint's max_len (the default); positions "
                        "are recomputed, so longer windows work")
    p.add_argument("--chunk_videos", type=positive_int, default=1024, help="videos encoded per pass (bounds memory)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--amp", default="auto", choices=("auto", "none", "bf16"),
                   help="bf16 autocast: auto = on CUDA only")
    g = p.add_argument_group("with --videos: segment embedding extraction (preprocessing.extract)")
    g.add_argument("--encoder", choices=list(BACKENDS), default=None,
                   help="the short-video encoder backend the LV-MAE was pretrained on")
    g.add_argument("--encoder_checkpoint", default=None, help="local directory of that encoder's weights")
    g.add_argument("--extract_batch_size", type=positive_int, default=64, help="segments per encoder batch")
    g.add_argument("--profile", choices=list(PROFILES), default=None,
                   help="frame sampling and transform (default: the checkpoint's data profile)")
    g.add_argument("--decode_workers", type=positive_int, default=None,
                   help="decode worker processes (default: preprocessing.extract's)")
    return p


def _open_tmp(path: Path, shape) -> tuple[np.memmap, Path]:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape), tmp


def _publish(arr: np.memmap, tmp: Path, path: Path) -> None:
    arr.flush()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def extract_videos(args, ckpt: dict, store_dir: Path) -> Path:
    """``--videos`` -> the store ``store_dir`` through ``preprocessing.extract`` (resumed if it
    exists); refuses an encoder other than the checkpoint's before extracting anything."""
    from preprocessing import extract
    data = ckpt.get("data") or {}
    made = encoder_name(args.encoder, args.encoder_checkpoint)
    if data.get("encoder") is not None and data["encoder"] != made:
        raise CheckpointError(f"{args.checkpoint} was pretrained on {data['encoder']!r} embeddings; --encoder "
                              f"{args.encoder} --encoder_checkpoint {args.encoder_checkpoint} makes {made!r} ones")
    profile = args.profile or (data.get("profile") if data.get("profile") in PROFILES else DEFAULT_PROFILE)
    argv = [*args.videos, "--out", str(store_dir), "--encoder", args.encoder, "--checkpoint",
            str(args.encoder_checkpoint), "--profile", profile, "--batch_size", str(args.extract_batch_size),
            "--device", args.device, "--no_progress"]
    if args.decode_workers is not None:
        argv += ["--num_workers", str(args.decode_workers)]
    print(f"extracting {made} segment embeddings (profile {profile}) into {store_dir}")
    summary = extract.main(argv)
    if not any(store_dir.glob("index-*.csv")):
        raise CheckpointError(f"no video of --videos could be embedded ({summary['failed']} failed; reasons in "
                              f"{store_dir}/failures-*.csv)")
    return store_dir


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    if args.videos and not (args.encoder and args.encoder_checkpoint):
        parser.error("--videos needs --encoder and --encoder_checkpoint (the short-video encoder the LV-MAE was "
                     "pretrained on)")
    if not args.videos and (args.encoder or args.encoder_checkpoint):
        parser.error("--encoder / --encoder_checkpoint go with --videos (a --data_path store is already embedded)")
    resolve_device_flag(args)
    if args.videos:
        model, ckpt = load_pretrained(args.checkpoint, args.device, max_len=args.num_patches)
        args.data_path = [str(extract_videos(args, ckpt, out / "store"))]
    store = EmbeddingStore(args.data_path)
    store_name = ", ".join(map(str, store.roots))
    if not args.videos:
        model, ckpt = load_pretrained(args.checkpoint, args.device, input_dim=store.dim, max_len=args.num_patches)
    check_input_dim(ckpt, store.dim, args.checkpoint)
    check_store_encoder(ckpt, store.manifest, args.checkpoint, store_name)
    max_len = model.max_len  # max(--num_patches, the checkpoint's): the same windows as the probes use
    if args.window_stride is not None and not 0 < args.window_stride <= max_len:
        parser.error(f"--window_stride {args.window_stride} must be in [1, {max_len}] (the window length)")
    amp = torch.bfloat16 if args.amp == "bf16" or (args.amp == "auto" and torch.device(args.device).type == "cuda") \
        else None

    vids = store.video_ids
    lengths = store.lengths(vids)
    num_windows = np.array([len(window_starts(int(n), max_len, args.window_stride)) for n in lengths])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    E = model.embed_dim
    print(f"{len(vids)} videos, {int(offsets[-1])} segments, {int((lengths > max_len).sum())} longer than "
          f"max_len={max_len} (sliding windows, stride {args.window_stride or max(1, max_len // 2)}): "
          f"{int(num_windows.sum())} windows; features {E}-d")

    out.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves nothing behind
    arrays = {"cls": _open_tmp(out / "cls.npy", (len(vids), E)), "mean": _open_tmp(out / "mean.npy", (len(vids), E))}
    if args.all_tokens:
        arrays["tokens"] = _open_tmp(out / "tokens.npy", (int(offsets[-1]), E))
    try:
        for a in tqdm(range(0, len(vids), args.chunk_videos), desc="video chunks", unit="chunk",
                      disable=True if len(vids) <= args.chunk_videos else None):
            b = min(a + args.chunk_videos, len(vids))
            feats = encode_videos(model, store, vids[a:b], batch_size=args.batch_size, device=args.device,
                                  stride=args.window_stride, amp_dtype=amp)
            arrays["cls"][0][a:b] = feats.cls
            arrays["mean"][0][a:b] = feats.mean()
            if args.all_tokens:
                arrays["tokens"][0][offsets[a]:offsets[b]] = feats.tokens
        for name, (arr, tmp) in arrays.items():
            _publish(arr, tmp, out / f"{name}.npy")
    finally:
        for _, tmp in arrays.values():
            tmp.unlink(missing_ok=True)

    entries = [store.entry(v) for v in vids]
    index = pd.DataFrame({"video_id": [e.video_id for e in entries],
                          "store": [str(store.roots[e.store]) for e in entries],
                          "num_segments": lengths, "num_windows": num_windows, "token_offset": offsets[:-1]})
    atomic_write_text(out / "index.csv", index.to_csv(index=False))
    failures = store.failures
    meta = {"checkpoint": str(args.checkpoint), "encoder": store.manifest["encoder"], "input_dim": store.dim,
            "embed_dim": E, "num_videos": len(vids), "num_segments": int(offsets[-1]), "max_len": max_len,
            "window_stride": args.window_stride or max(1, max_len // 2), "all_tokens": bool(args.all_tokens),
            "policy": "sliding windows of max_len segments; each segment's token from the window with the nearest "
                      "centre; [CLS] = mean of window [CLS] weighted by owned segments; mean = mean of segment tokens",
            "stores": [str(r) for r in store.roots], "failed_videos": failures["video_id"].tolist()}
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    print(f"wrote {', '.join(f'{k}.npy' for k in arrays)}, index.csv and meta.json to {out}"
          + (f"; {len(failures)} videos gave no embedding (reasons in {', '.join(map(str, store.roots))}"
             "/failures-*.csv)" if len(failures) else ""))
    return meta


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
