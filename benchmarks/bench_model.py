"""Throughput of one LV-MAE training step (forward + backward + AdamW) on ragged batches.

Batches hold videos whose lengths follow the shipped LVU durations (5-s segments) plus 10% long
"movies" capped at ``max_len``; sequences are padded to the batch maximum. Two batchings: random
(almost every batch of 16 then holds a 256-segment movie) and length-grouped (the pretraining
sampler's). The paper's width is run at depth 2 (encoder and decoder) to fit a CPU. Reports real
(unpadded) tokens/s and the useful FLOP rate -- matmul FLOPs of the real tokens only -- as a
fraction of a float32 matmul peak measured in the same process. Prints one JSON line.

    python benchmarks/bench_model.py [--steps 10] [--batch_size 16] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import models_lvmae  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def lvu_lengths(rng, num, max_len, movie_fraction=0.1):
    durations = pd.read_csv(REPO / "data" / "lvu_1.0" / "lvu_durations.csv")["duration"].to_numpy()
    n = np.maximum(2, rng.choice(durations, size=num) // 5).astype(np.int64)
    movies = rng.random(num) < movie_fraction
    n[movies] = max_len
    return np.minimum(n, max_len)


def block_flops(tokens_per_seq: np.ndarray, width: int, mlp_ratio: float) -> float:
    """Forward matmul FLOPs of one transformer block over sequences of the given real lengths:
    qkv + proj + MLP (2 * (4 + 2 * mlp_ratio) * width^2 per token) + attention (QK^T and AV:
    4 * S * width per token)."""
    s = tokens_per_seq.astype(np.float64)
    return float((2 * (4 + 2 * mlp_ratio) * width ** 2 * s + 4 * s * s * width).sum())


def step_flops(model, lengths: np.ndarray, mask_ratio: float) -> float:
    """Useful FLOPs of a training step (3x forward) on the real tokens only."""
    cfg = model.config
    visible = np.array([n if n < 2 else min(max(int(n * (1 - mask_ratio)), 1), n - 1) for n in lengths])
    enc = cfg["depth"] * block_flops(visible + 1, cfg["embed_dim"], cfg["mlp_ratio"])
    dec = cfg["decoder_depth"] * block_flops(lengths + 1, cfg["decoder_embed_dim"], cfg["mlp_ratio"])
    proj = 2 * lengths.sum() * (cfg["embed_dim"] * cfg["decoder_embed_dim"] + cfg["decoder_embed_dim"] * cfg["input_dim"])
    if cfg["input_dim"] != cfg["embed_dim"]:
        proj += 2 * visible.sum() * cfg["input_dim"] * cfg["embed_dim"]
    return 3.0 * (enc + dec + proj)


def matmul_peak(device, n=2048, reps=10, dtype=torch.float32, max_seconds=2.0) -> float:
    """FLOP/s of ``n x n`` matmuls in ``dtype`` on ``device`` (best of 3 timings of ``reps``;
    fewer reps, at least one, where one matmul is slow, e.g. bf16 on a CPU without bf16 units)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    _sync(device)
    t = time.perf_counter()
    a @ b
    _sync(device)
    reps = max(1, min(reps, int(max_seconds / max(time.perf_counter() - t, 1e-9))))
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 * reps / best


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def make_batches(rng, args, max_len, grouped):
    """Lengths of ``steps + warmup`` batches. ``grouped``: batches cut from a length-sorted pool
    of 50 batches (what the pretraining sampler does), so a movie shares its batch with movies."""
    num = args.steps + args.warmup
    if not grouped:
        return [lvu_lengths(rng, args.batch_size, max_len) for _ in range(num)]
    pool = np.sort(lvu_lengths(rng, 50 * args.batch_size, max_len))
    batches = [pool[i:i + args.batch_size] for i in range(0, len(pool), args.batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))[:num]]


def bench(name, model, args, rng, grouped) -> dict:
    model.to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    batches = make_batches(rng, args, model.max_len, grouped)
    data = [torch.randn(len(b), int(b.max()), model.input_dim) for b in batches]
    real = padded = 0
    flops = 0.0
    for i, (lengths, x) in enumerate(zip(batches, data)):
        if i == args.warmup:
            _sync(args.device)
            t = time.perf_counter()
        loss, _, _ = model(x.to(args.device), torch.from_numpy(lengths).to(args.device), mask_ratio=0.5)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            real += int(lengths.sum())
            padded += int(lengths.max()) * len(lengths)
            flops += step_flops(model, lengths, 0.5)
    _sync(args.device)
    elapsed = time.perf_counter() - t
    return {"model": name, "batches": "length_grouped" if grouped else "random", "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "real_tokens_per_s": round(real / elapsed, 1), "padding_fraction": round(1 - real / padded, 3),
            "useful_gflops_per_s": round(flops / elapsed / 1e9, 2), "_flops_per_s": flops / elapsed}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch_size", type=int, default=16, help="videos per batch (the paper's 16)")
    p.add_argument("--input_dim", type=int, default=1024, help="segment embedding dim (LanguageBind: 768, 1024 here)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    peak = matmul_peak(args.device)
    results = []
    for grouped in (False, True):
        results.append(bench("lvmae_tiny", models_lvmae.lvmae_tiny(input_dim=args.input_dim), args, rng, grouped))
        results.append(bench("paper_width_depth2", models_lvmae.lvmae_d32(depth=2, decoder_depth=2,
                                                                        input_dim=args.input_dim), args, rng, grouped))
    for r in results:
        r["useful_fraction_of_matmul_peak"] = round(r.pop("_flops_per_s") / peak, 3)
    out = {"bench": "model_train_step", "device": args.device, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "batch_size": args.batch_size, "input_dim": args.input_dim,
           "matmul_peak_gflops_per_s": round(peak / 1e9, 1), "results": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
