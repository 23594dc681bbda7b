"""Time per probing epoch on an LVU-sized task, from cached features and without the cache.

A random store of ``--videos`` training videos (+20% for validation) with LVU lengths (the shipped
durations, 5-s segments; mean ~27) and ``--dim``-d unit vectors (LanguageBind-like) is probed
with the engine's own code (``LabelledSequences``, ``build_head``, ``train_one_epoch``,
``evaluate``). One epoch = a training pass over train + the validation pass. *With the cache* an
epoch is just that; *without* it the frozen features of train + val are recomputed first (what
an uncached probe pays every epoch). Encoders: the ``lvmae_tiny`` preset over every video, and
the paper's width (1024-d, 16 heads) at ``--paper_depth`` over ``--paper_videos`` videos, scaled
linearly to ``--videos`` (marked ``extrapolated``). Also the raw-embedding AP (``--backbone none``).
Prints one JSON line.

    python benchmarks/bench_probe.py [--videos 3000] [--paper_depth 32] [--paper_videos 100] [--num_threads 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import engine_probe  # noqa: E402
import models_lvmae  # noqa: E402
from datasets.labelled import LabelledSequences, TaskSpec  # noqa: E402
from datasets.store import EmbeddingStore, StoreWriter, make_manifest  # noqa: E402
from util.long_video import encode_videos, raw_features  # noqa: E402
from util.logging import emit_json_line  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPEC = TaskSpec("bench", "genre-like", "classification", 10)


def random_store(root: Path, num: int, dim: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    durations = pd.read_csv(REPO / "data" / "lvu_1.0" / "lvu_durations.csv")["duration"].to_numpy()
    lengths = np.maximum(1, rng.choice(durations, size=num) // 5).astype(int)
    ids = [f"v{i:05d}" for i in range(num)]
    with StoreWriter(root, "bench", make_manifest("bench:random", dim, normalized=True)) as w:
        for vid, n in zip(ids, lengths):
            x = rng.standard_normal((n, dim)).astype(np.float32)
            w.add(vid, x / np.linalg.norm(x, axis=1, keepdims=True), 5.0 * n, "random")
    return ids


def epoch_seconds(args, features: dict, encoder: dict | None, probe: str) -> float:
    """One training epoch on train + one evaluation on val, from in-memory features."""
    pargs = engine_probe.parse_args(["--dataset", "synthetic", "--data_path", "x",
                                     "--backbone", "lvmae" if encoder else "none"], probe)
    rng = np.random.default_rng(0)
    data = {s: LabelledSequences(f, rng.integers(0, SPEC.num_classes, len(f.video_ids))) for s, f in features.items()}
    torch.manual_seed(0)
    head = engine_probe.build_head(pargs, SPEC, data["train"].dim, encoder)
    opt = torch.optim.Adam(head.parameters(), lr=pargs.lr)
    t = time.perf_counter()
    engine_probe.train_one_epoch(head, data["train"], opt, SPEC, pargs.batch_size, torch.Generator().manual_seed(0))
    engine_probe.evaluate(head, data["val"], SPEC)
    return time.perf_counter() - t


def measure(args, store, ids: dict, model) -> dict:
    encoder = {"config": model.config}
    t = time.perf_counter()
    features = {s: encode_videos(model, store, v, batch_size=64, progress=False) for s, v in ids.items()}
    encode_s = time.perf_counter() - t
    out = {"encode_s": encode_s}
    for probe in ("ap", "lp"):
        head_s = epoch_seconds(args, features, encoder, probe)
        out[f"{probe}_epoch_cached_s"] = head_s
        out[f"{probe}_epoch_uncached_s"] = head_s + encode_s
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=3000, help="training videos (validation: 20%% more)")
    p.add_argument("--dim", type=int, default=768, help="segment embedding dim of the random store")
    p.add_argument("--paper_depth", type=int, default=32, help="encoder depth at the paper's width")
    p.add_argument("--paper_videos", type=int, default=100, help="training videos measured at the paper's width")
    p.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    torch.manual_seed(0)
    n_val = args.videos // 5
    with tempfile.TemporaryDirectory() as tmp:
        all_ids = random_store(Path(tmp) / "store", args.videos + n_val, args.dim)
        store = EmbeddingStore(Path(tmp) / "store")
        ids = {"train": all_ids[:args.videos], "val": all_ids[args.videos:]}
        result = {"bench": "probe", "train_videos": args.videos, "val_videos": n_val, "dim": args.dim,
                  "mean_segments": float(store.lengths().mean()), "threads": torch.get_num_threads(),
                  "device": "cpu", "torch": torch.__version__}

        result["lvmae_tiny"] = measure(args, store, ids, models_lvmae.lvmae_tiny(input_dim=args.dim).eval())

        t = time.perf_counter()
        raw = {s: raw_features(store, v) for s, v in ids.items()}
        result["raw_baseline"] = {"read_s": time.perf_counter() - t,
                                  "ap_epoch_cached_s": epoch_seconds(args, raw, None, "ap"),
                                  "lp_epoch_cached_s": epoch_seconds(args, raw, None, "lp")}

        k = min(args.paper_videos, args.videos)
        sub = {"train": ids["train"][:k], "val": ids["val"][:max(1, k // 5)]}
        paper = models_lvmae.LVMAE(embed_dim=1024, depth=args.paper_depth, num_heads=16, decoder_embed_dim=512,
                                   decoder_depth=1, decoder_num_heads=16, input_dim=args.dim).eval()
        scale = args.videos / k
        measured = measure(args, store, sub, paper)
        result[f"paper_width_d{args.paper_depth}"] = {
            "measured_videos": k, "extrapolated": scale != 1.0,
            **{key: v * scale for key, v in measured.items()}}
    emit_json_line(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
