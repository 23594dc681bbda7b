r"""Interpretable predictions: caption retrieval of reconstructed masked tokens (paper Sec. 3.4, 4.4,
Figs. 3-4, 6).

For ``--num_videos`` videos sampled with ``--seed``, mask ``--mask_ratio`` of the segments (40% as
in Sec. 4.4), reconstruct them with the LV-MAE of ``--checkpoint``, and retrieve the top-k
captions of the caption database (``python -m datasets.captions``) by cosine similarity for

  (a) the original embedding of every masked segment,
  (b) its LV-MAE reconstruction,
  and two reconstructions that use no model: the nearest visible segment and the linear
  interpolation of the visible segments either side (``util.baselines``), which say what (b)'s
  numbers are worth.

Metrics over the masked segments that have a caption: R@1/5/10 of the segment's own caption (a
hit = the retrieved text equals it; the gallery is de-duplicated), the median rank of the own
caption, the agreement of each reconstruction's retrieval with (a) (same top-1; mean overlap of
the top-k lists) and its cosine similarity to the original embedding. The table is printed
(Markdown) and written with everything else to ``--output_dir``:

  metrics.json     settings, gallery size, counts, per-method metrics, the sampled videos and masks
  retrievals.csv   one row per masked segment: own caption, top-1 caption and rank per method
  report.html      self-contained page, Fig. 3 layout, every sampled video with its masked segments
  report.png       Fig. 3-like figure (rows of 3 consecutive segments)

Masks are reproducible: random masking draws each video's noise from a generator keyed by
(``--seed``, video id), so a video's mask does not depend on which other videos were sampled.
Videos longer than the model's ``max_len`` are not truncated silently: a random window of
``max_len`` consecutive segments (keyed the same way) is evaluated, and the report says which.

    python interpret.py --data_path STORE --captions CAPTION_DB --checkpoint CKPT \\
        --num_videos 8 --mask_ratio 0.4 --output_dir OUT
"""
from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from datasets.captions import CaptionDB, CaptionError
from datasets.store import EmbeddingStore
from models_lvmae import MASKINGS, has_decoder, make_mask
from util.baselines import linear_interpolation, nearest_visible
from util.checkpoint import CheckpointError, check_store_encoder, load_pretrained
from util.cli import (DEVICE_HELP, ArgumentParser, open_fraction, output_dir, positive_int, resolve_device_flag,
                      run_cli)
from util.io import atomic_write_text
from util.report import SegmentView, VideoView, markdown_table, write_html, write_png
from util.retrieval import KS, Retrieval, agreement, retrieve, summarize

ORIGINAL = "original"
METHODS = (ORIGINAL, "LV-MAE", "nearest visible", "linear interpolation")
COLUMNS = ["method", "R@1", "R@5", "R@10", "median rank", "top-1 agree", "top-k overlap", "cos to original"]
THUMB_WIDTH = 192


def get_args_parser():
    p = argparse.ArgumentParser("LV-MAE interpretable predictions (caption retrieval)", add_help=False)
    p.add_argument("--data_path", nargs="+", required=True, help="embedding store(s), or a .txt file listing them")
    p.add_argument("--captions", required=True, help="caption database directory (python -m datasets.captions)")
    p.add_argument("--checkpoint", required=True,
                   help="the pretrained LV-MAE: a training checkpoint or an exported directory (export_pretrained.py)")
    p.add_argument("--output_dir", required=True, type=output_dir,
                   help="where metrics.json, retrievals.csv and the report go")
    p.add_argument("--num_videos", type=positive_int, default=8,
                   help="videos to sample (those with at least one caption)")
    p.add_argument("--video_ids", nargs="*", default=None, help="evaluate these videos instead of sampling")
    p.add_argument("--mask_ratio", type=open_fraction, default=0.4,
                   help="fraction of segments masked, in (0, 1) (Sec. 4.4: 40%%)")
    p.add_argument("--masking", default="random", choices=MASKINGS, help="which segments are masked")
    p.add_argument("--seed", type=int, default=0, help="seed of the video sample, the windows and the masks")
    p.add_argument("--topk", type=positive_int, default=10, help="captions retrieved per query (R@k needs k <= topk)")
    p.add_argument("--num_patches", type=positive_int, default=None,
                   help="window length in segments: at least the checkpoint's max_len (the default)")
    p.add_argument("--batch_size", type=positive_int, default=16, help="videos per forward pass")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--report_columns", type=positive_int, default=3,
                   help="consecutive segments per report row (Fig. 3: 3)")
    p.add_argument("--figure_rows", type=positive_int, default=6, help="rows (one per video) of the PNG figure")
    p.add_argument("--reader", default="auto", help="video reader for thumbnails (auto, decord, pyav)")
    p.add_argument("--no_thumbnails", action="store_true", help="do not decode frames for the report")
    return p


# --- which videos, which windows, which masks ----------------------------------------------------
def _key_rng(seed: int, vid: str, stream: int) -> np.random.Generator:
    """A generator keyed by (seed, video, purpose): independent of the rest of the sample."""
    return np.random.default_rng([seed, zlib.crc32(vid.encode()), stream])


def sample_videos(store: EmbeddingStore, db: CaptionDB, num: int, seed: int) -> list[str]:
    """Up to ``num`` store videos with >= 2 segments and at least one caption, in a seeded order."""
    captioned = set(db.video_ids)
    pool = [v for v in store.video_ids if store.num_segments(v) >= 2 and store.entry(v).video_id in captioned]
    if not pool:
        raise CaptionError(f"no video of the store {', '.join(map(str, store.roots))} with >= 2 segments has a "
                           f"caption in {db.root}; was the database built from this store's captions?")
    pick = np.random.default_rng(seed).permutation(len(pool))[:num]
    return [pool[i] for i in pick]


def choose_window(n: int, max_len: int, seed: int, vid: str) -> int:
    """Start of the evaluated window: 0 when the video fits, else a seeded random start."""
    return 0 if n <= max_len else int(_key_rng(seed, vid, 0).integers(0, n - max_len + 1))


# --- thumbnails ----------------------------------------------------------------------------------
def read_thumbnails(source: str, times: np.ndarray, reader="auto", width: int = THUMB_WIDTH) -> list | None:
    """uint8 ``[h, width, 3]`` frames at ``times`` (seconds) of the video file ``source``, or None when
    it is not a readable local file (synthetic corpora, moved videos)."""
    from preprocessing.readers import DecodeError, get_reader
    from preprocessing.windows import frame_indices

    if not source or not Path(source).is_file():
        return None
    try:
        with get_reader(reader).open(source) as video:
            idx = frame_indices(video.timestamps, np.asarray(times, dtype=np.float64))
            wanted = np.unique(idx)
            frames = dict(zip(wanted.tolist(), video.frames(wanted)))
    except DecodeError:
        return None
    out = []
    for i in idx.tolist():
        img = Image.fromarray(frames[i])
        h = max(1, round(img.height * width / img.width))
        out.append(np.asarray(img.resize((width, h), Image.Resampling.BILINEAR)))
    return out


# --- reconstruction ------------------------------------------------------------------------------
@torch.no_grad()
def reconstruct(model, store, vids, starts, stops, args) -> dict:
    """Every real position of the evaluated windows, flattened over videos: ``x`` the original
    ``[P, D]``, ``recon[name]`` ``[P, D]`` per reconstruction, ``masked`` ``[P]``, ``video`` /
    ``segment`` ``[P]`` (index into ``vids`` / absolute segment index)."""
    out = {"x": [], "masked": [], "video": [], "segment": [], **{m: [] for m in METHODS[1:]}}
    for b in tqdm(range(0, len(vids), args.batch_size), desc="reconstructing", unit="batch", leave=False,
                  disable=None):
        idx = range(b, min(b + args.batch_size, len(vids)))
        lengths = torch.tensor([stops[i] - starts[i] for i in idx])
        L = int(lengths.max())
        x = torch.zeros(len(idx), L, store.dim)
        noise = torch.ones(len(idx), L)
        for j, i in enumerate(idx):
            x[j, :lengths[j]] = torch.from_numpy(store.get(vids[i], starts[i], stops[i]))
            noise[j, :lengths[j]] = torch.from_numpy(_key_rng(args.seed, vids[i], 1).random(int(lengths[j])))
        valid = torch.arange(L)[None] < lengths[:, None]
        mask = make_mask(x, lengths, args.mask_ratio, args.masking, noise)
        _, pred, mask = model(x.to(args.device), lengths.to(args.device), mask=mask.to(args.device))
        visible = valid & ~mask.cpu()
        recon = {"LV-MAE": pred.float().cpu(), "nearest visible": nearest_visible(x, visible),
                 "linear interpolation": linear_interpolation(x, visible)}
        out["x"].append(x[valid])
        out["masked"].append(mask.cpu()[valid])
        out["video"].append(torch.tensor(list(idx))[:, None].expand(-1, L)[valid])
        out["segment"].append((torch.tensor([starts[i] for i in idx])[:, None] + torch.arange(L)[None])[valid])
        for m, r in recon.items():
            out[m].append(r[valid])
    return {k: torch.cat(v) for k, v in out.items()}


def evaluate(rec: dict, targets: torch.Tensor, gallery: torch.Tensor, topk: int):
    """Retrievals of every method on the masked positions and the metrics table rows."""
    sel = rec["masked"]
    scored = targets[sel] >= 0
    rets = {m: retrieve(rec["x" if m == ORIGINAL else m][sel], gallery, topk, targets[sel].clamp(min=0))
            for m in METHODS}
    rows = []
    for m in METHODS:
        r = rets[m]
        sub = Retrieval(r.indices[scored], r.scores[scored], r.ranks[scored])
        s = summarize(sub, targets[sel][scored], KS)
        row = {"method": m, **{f"R@{k}": 100 * s[f"R@{k}"] for k in KS}, "median rank": s["median_rank"]}
        if m != ORIGINAL:
            a = agreement(rets[ORIGINAL].indices[scored], sub.indices)
            cos = F.cosine_similarity(rec[m][sel][scored].float(), rec["x"][sel][scored], dim=-1)
            row.update({"top-1 agree": 100 * a["top1"], "top-k overlap": 100 * a["overlap"],
                        "cos to original": cos.mean().item() if len(cos) else float("nan")})
        rows.append(row)
    G = gallery.shape[0]
    rows.append({"method": "chance", **{f"R@{k}": 100 * min(k, G) / G for k in KS}, "median rank": (G + 1) / 2})
    return rets, rows


# --- report --------------------------------------------------------------------------------------
def build_views(store, db, vids, starts, stops, rec, rets, targets, args) -> list[VideoView]:
    texts = db.texts
    own_top = retrieve(rec["x"], torch.from_numpy(db.embeddings), 1).indices[:, 0]  # for uncaptioned segments
    masked_pos = torch.nonzero(rec["masked"]).flatten()
    lvmae_top = dict(zip(masked_pos.tolist(), rets["LV-MAE"].indices[:, 0].tolist()))
    orig_top = dict(zip(masked_pos.tolist(), rets[ORIGINAL].indices[:, 0].tolist()))
    lvmae_rank = dict(zip(masked_pos.tolist(), rets["LV-MAE"].ranks.tolist()))
    views = []
    # reconstruct() flattens the windows video after video, so video i owns a contiguous range.
    offsets = np.cumsum([0] + [stop - start for start, stop in zip(starts, stops)])
    for i, vid in enumerate(tqdm(vids, desc="report", unit="video", leave=False, disable=None)):
        times = store.times(vid)[starts[i]:stops[i]]
        thumbs = None if args.no_thumbnails else read_thumbnails(store.source(vid), times.mean(1), args.reader)
        segs = []
        for j, p in enumerate(range(offsets[i], offsets[i + 1])):
            t = int(targets[p])
            masked = bool(rec["masked"][p])
            segs.append(SegmentView(
                index=int(rec["segment"][p]), start_s=float(times[j, 0]), end_s=float(times[j, 1]), masked=masked,
                caption=texts[t] if t >= 0 else None,
                retrieved=texts[lvmae_top[p]] if masked else None,
                retrieved_original=texts[orig_top[p]] if masked else texts[int(own_top[p])],
                hit_rank=int(lvmae_rank[p]) if masked and t >= 0 else None,
                thumbnail=thumbs[j] if thumbs else None))
        n = store.num_segments(vid)
        note = "" if stops[i] - starts[i] == n else \
            f"longer than max_len={stops[i] - starts[i]}: a seeded random window is evaluated"
        views.append(VideoView(vid, n, starts[i], segs, note))
    return views


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    if args.topk < max(KS):
        parser.error(f"--topk {args.topk} < {max(KS)}: R@{max(KS)} needs at least {max(KS)} retrieved captions")
    out = Path(args.output_dir)
    resolve_device_flag(args)

    store = EmbeddingStore(args.data_path)
    store_name = ", ".join(map(str, store.roots))
    db = CaptionDB(args.captions)
    db.check_store(store.manifest, store_name)
    model, ckpt = load_pretrained(args.checkpoint, args.device, input_dim=store.dim, max_len=args.num_patches)
    if not has_decoder(model.objective):
        raise CheckpointError(f"{args.checkpoint} was trained with --objective {model.objective}: it has no decoder "
                              "to reconstruct masked segments with (interpret.py needs an mae or mae+contrastive one)")
    check_store_encoder(ckpt, store.manifest, args.checkpoint, store_name)
    max_len = model.max_len  # max(--num_patches, the checkpoint's)

    if args.video_ids:
        missing = [v for v in args.video_ids if v not in store]
        if missing:
            parser.error(f"--video_ids {missing} are not in the store {store_name}")
        vids = list(args.video_ids)
    else:
        vids = sample_videos(store, db, args.num_videos, args.seed)
    n = store.lengths(vids)
    starts = [choose_window(int(n[i]), max_len, args.seed, v) for i, v in enumerate(vids)]
    stops = [s + min(int(n[i]), max_len) for i, s in enumerate(starts)]
    windowed = sum(int(n[i]) > max_len for i in range(len(vids)))
    long_note = f"; {windowed} longer than max_len={max_len}: a seeded random window of {max_len} segments" \
        if windowed else ""
    print(f"{len(vids)} videos, {int(sum(stops) - sum(starts))} segments evaluated{long_note}; caption gallery: "
          f"{len(db.texts)} distinct captions ({db.encoder})")

    rec = reconstruct(model, store, vids, starts, stops, args)
    ids = [db.caption_ids(store.entry(v).video_id, int(n[i])) for i, v in enumerate(vids)]
    targets = torch.tensor(np.concatenate([ids[i][starts[i]:stops[i]] for i in range(len(vids))]))
    gallery = torch.from_numpy(np.asarray(db.embeddings, dtype=np.float32))
    rets, rows = evaluate(rec, targets, gallery, args.topk)

    sel = rec["masked"]
    num_scored = int((targets[sel] >= 0).sum())
    table = markdown_table(rows, COLUMNS)
    print(f"\nCaption retrieval of the {num_scored} masked segments with a caption "
          f"(of {int(sel.sum())} masked; R@k and agreement in %):\n{table}\n")

    masked_pos = torch.nonzero(sel).flatten()
    videos = [{"video_id": v, "num_segments": int(n[i]), "window": [starts[i], stops[i]],
               "masked": rec["segment"][masked_pos[rec["video"][masked_pos] == i]].tolist()}
              for i, v in enumerate(vids)]
    metrics = {"settings": {k: getattr(args, k) for k in ("data_path", "captions", "checkpoint", "num_videos",
                                                          "mask_ratio", "masking", "seed", "topk")}
               | {"max_len": max_len, "encoder": store.manifest["encoder"]},
               "gallery_size": len(db.texts), "num_masked": int(sel.sum()), "num_scored": num_scored,
               "methods": {r["method"]: {k: v for k, v in r.items() if k != "method"} for r in rows},
               "videos": videos}
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves nothing behind
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")

    t = targets[sel]
    table_rows = pd.DataFrame({"video_id": [vids[i] for i in rec["video"][sel].tolist()],
                               "segment": rec["segment"][sel].numpy(),
                               "caption": [db.texts[c] if c >= 0 else "" for c in t.tolist()]})
    for m in METHODS:
        key = m.replace(" ", "_").replace("-", "").lower()
        table_rows[f"{key}_top1"] = [db.texts[c] for c in rets[m].indices[:, 0].tolist()]
        table_rows[f"{key}_rank"] = np.where(t.numpy() >= 0, rets[m].ranks.numpy(), -1)
    atomic_write_text(out / "retrievals.csv", table_rows.to_csv(index=False))

    views = build_views(store, db, vids, starts, stops, rec, rets, targets, args)
    intro = [f"Checkpoint {args.checkpoint}; store {store_name} ({store.manifest['encoder']}, {store.dim}-d); "
             f"caption database {args.captions} ({len(db.texts)} distinct captions).",
             f"{len(vids)} videos sampled with seed {args.seed}; {args.masking} masking of "
             f"{100 * args.mask_ratio:g}% of the segments; {int(sel.sum())} masked segments, {num_scored} with a "
             f"caption. Videos longer than {max_len} segments: a seeded random window of {max_len} consecutive "
             f"segments ({windowed} such videos).",
             "R@k: the segment's own caption is among the top-k retrieved (de-duplicated gallery). Agreement: "
             "with the retrieval of the original embedding. Baselines: nearest visible segment; linear "
             "interpolation of the visible segments either side."]
    write_html(out / "report.html", "LV-MAE interpretable predictions", intro, rows, COLUMNS, views,
               cols=args.report_columns)
    write_png(out / "report.png", views, args.figure_rows, args.report_columns,
              title=f"LV-MAE reconstructions, {100 * args.mask_ratio:g}% masked (red: retrieved caption)")
    print(f"wrote {out / 'report.html'}, {out / 'report.png'}, {out / 'metrics.json'}, {out / 'retrievals.csv'}")
    return metrics


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
