"""Memory and throughput of masked contrastive training steps against mask ratio and window length
(the second paper's trade-off: masking 75% of the input cuts memory and buys length).

Each (mask ratio, window) configuration runs in a fresh subprocess (so the CPU peak RSS is that
configuration's own; on CUDA the peak is ``torch.cuda.max_memory_allocated``): a
``contrastive`` LV-MAE (no decoder), ``--batch_size`` full windows of random unit segment
embeddings paired with random unit text embeddings (the text side is a frozen database), the
model's masked forward with the text-space embedding, the symmetric InfoNCE
(``util.contrastive``), backward and a fused AdamW step -- ``--warmup_steps`` untimed, then
``--steps`` timed. Reported per configuration: real input tokens/s (segments of the windows,
masked ones included: the length of video covered per second) and encoder tokens/s (the visible
ones it actually ran), peak memory, the RSS before the steps (interpreter, model, data) and the
steps' own peak above it (``peak_rss_delta_mb``, what the comparison uses on CPU). The summary
also gives, for each window at ratio 0, the longest window whose 75%-masked run fits in the
same peak memory. One JSON line on stdout.

    python benchmarks/bench_contrastive.py                   # CPU: a small width (128-d, depth 2)
    python benchmarks/bench_contrastive.py --device cuda     # CUDA: lvmae_d32's width and depth, bf16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

RATIOS = (0.0, 0.25, 0.5, 0.75)
WINDOWS = (256, 1024, 4096)
# CPU: a small width that runs here; CUDA: lvmae_d32 (1024-d, depth 32, 16 heads).
WIDTHS = {"cpu": dict(embed_dim=128, depth=2, num_heads=4), "cuda": dict(embed_dim=1024, depth=32, num_heads=16)}


def get_args_parser():
    p = argparse.ArgumentParser("Masked contrastive training: memory and tokens/s vs mask ratio and window",
                                add_help=False)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="mask ratios")
    p.add_argument("--windows", type=int, nargs="+", default=list(WINDOWS), help="window lengths in segments")
    p.add_argument("--batch_size", type=int, default=None, help="windows per step (default: 4 on CPU, 8 on CUDA)")
    p.add_argument("--input_dim", type=int, default=None, help="segment embedding dim (default: the width's)")
    p.add_argument("--text_dim", type=int, default=None, help="text embedding dim (default: the input dim)")
    p.add_argument("--embed_dim", type=int, default=None, help="override the width's encoder dim")
    p.add_argument("--depth", type=int, default=None, help="override the width's depth")
    p.add_argument("--num_heads", type=int, default=None, help="override the width's heads")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    p.add_argument("--warmup_steps", type=int, default=1, help="untimed steps first")
    p.add_argument("--amp", default="auto", choices=("auto", "none", "bf16"), help="bf16 autocast: auto = on CUDA")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: "<ratio>,<window>"
    return p


def config(args, device_type: str) -> dict:
    width = dict(WIDTHS[device_type])
    for k in ("embed_dim", "depth", "num_heads"):
        if getattr(args, k) is not None:
            width[k] = getattr(args, k)
    input_dim = args.input_dim or width["embed_dim"]
    return dict(width, input_dim=input_dim, text_dim=args.text_dim or input_dim,
                batch_size=args.batch_size or (8 if device_type == "cuda" else 4),
                amp=args.amp if args.amp != "auto" else ("bf16" if device_type == "cuda" else "none"))


def run_one(ratio: float, window: int, cfg: dict, device: torch.device, steps: int, warmup: int) -> dict:
    """One configuration in this process (the child)."""
    import models_lvmae
    from bench_pretrain import peak_rss_mb
    from util.contrastive import info_nce
    torch.manual_seed(0)
    model = models_lvmae.LVMAE(embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"],
                               max_len=window, input_dim=cfg["input_dim"], objective="contrastive",
                               text_dim=cfg["text_dim"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    B = cfg["batch_size"]
    x = torch.nn.functional.normalize(torch.randn(B, window, cfg["input_dim"], device=device), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(B, cfg["text_dim"], device=device), dim=-1)
    lengths = torch.full((B,), window, dtype=torch.long, device=device)
    amp = cfg["amp"] == "bf16"
    rss_before = peak_rss_mb(reset=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    visible = 0

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            _, _, mask, emb, scale = model(x, lengths, mask_ratio=ratio, with_embedding=True)
        loss = info_nce(emb.float(), text, scale)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int((~mask).sum())

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        visible += step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t
    out = {"mask_ratio": ratio, "window": window, "tokens_per_s": round(B * window * steps / dt, 1),
           "encoder_tokens_per_s": round(visible / dt, 1),
           "visible_fraction": visible / (B * window * steps), "step_s": round(dt / steps, 4),
           "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before}
    out["peak_rss_delta_mb"] = round(out["peak_rss_mb"] - rss_before, 1)  # the steps' own memory
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def longest_fitting(results: list[dict], key: str) -> dict:
    """``{window: longest window at ratio 0.75 whose peak <= the ratio-0 peak at window}``."""
    peak0 = {r["window"]: r[key] for r in results if r["mask_ratio"] == 0.0 and key in r}
    peak75 = {r["window"]: r[key] for r in results if r["mask_ratio"] == 0.75 and key in r}
    return {str(w): max([v for v, m in peak75.items() if m <= p], default=None) for w, p in sorted(peak0.items())}


def main(argv=None):
    from util.cli import ArgumentParser
    from util.dist import resolve_device
    args = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    device = resolve_device(args.device)
    cfg = config(args, device.type)
    if args.one:
        ratio, window = args.one.split(",")
        print(json.dumps(run_one(float(ratio), int(window), cfg, device, args.steps, args.warmup_steps)))
        return 0
    results = []
    for window in args.windows:
        for ratio in args.ratios:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", f"{ratio},{window}", "--device", str(device),
                   "--steps", str(args.steps), "--warmup_steps", str(args.warmup_steps), "--amp", cfg["amp"],
                   "--batch_size", str(cfg["batch_size"]), "--input_dim", str(cfg["input_dim"]),
                   "--text_dim", str(cfg["text_dim"]), "--embed_dim", str(cfg["embed_dim"]),
                   "--depth", str(cfg["depth"]), "--num_heads", str(cfg["num_heads"])]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
            if proc.returncode != 0:  # e.g. out of memory at the longest window: recorded, not fatal
                err = (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]
                results.append({"mask_ratio": ratio, "window": window, "error": err[:300]})
            else:
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # progress; the JSON line is last
    key = "peak_cuda_mb" if device.type == "cuda" else "peak_rss_delta_mb"
    line = {"benchmark": "bench_contrastive", "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "config": cfg, "steps": args.steps, "results": results,
            "memory_key": key, "longest_window_at_0.75_in_the_unmasked_peak": longest_fitting(results, key)}
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    from util.cli import run_cli
    sys.exit(run_cli(main, sys.argv[1:]))
