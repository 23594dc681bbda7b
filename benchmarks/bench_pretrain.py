"""Throughput of the whole pretraining path -- random windows from a memory-mapped store, the
step batch sampler, collate, LV-MAE forward/backward, fused AdamW -- with and without length
grouping. Reports real (unpadded) tokens/s, the padding fraction and peak memory as one JSON line.

    python benchmarks/bench_pretrain.py                        # a small synthetic store, lvmae_tiny
    python benchmarks/bench_pretrain.py --steps 50 -- --model lvmae_d32 --data_path STORE --device cuda

Every argument after ``--`` (or any argument this script does not know) is a main_pretrain.py
flag, so the benchmark runs exactly the configuration a training run would.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import main_pretrain  # noqa: E402
import models_lvmae  # noqa: E402
import util.dist as dist_util  # noqa: E402
from engine_pretrain import train_one_epoch  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser("LV-MAE pretraining throughput", add_help=False)
    p.add_argument("--steps", type=int, default=0,
                   help="timed optimizer steps per mode (0 = a whole epoch: a few steps are a biased sample of "
                        "lengths once batches are grouped)")
    p.add_argument("--warmup_steps", type=int, default=3, help="untimed steps first (allocator, kernels)")
    p.add_argument("--synthetic_videos", type=int, default=600,
                   help="videos of the synthetic store built when no --data_path is given (10%% of them movies)")
    p.add_argument("--out", default=None, help="also append the JSON line to this file")
    return p


def peak_rss_mb(reset: bool = False) -> float:
    """Peak resident memory of this process (Linux VmHWM, which ``reset`` lowers to the current
    RSS so each mode gets its own peak; elsewhere ru_maxrss, the lifetime peak)."""
    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def run_mode(train_args, info, group: bool, steps: int, warmup_steps: int) -> dict:
    train_args.group_by_length = group
    torch.manual_seed(train_args.seed)
    rss_before = peak_rss_mb(reset=True)
    store, train_set, _, sampler, loader, _ = main_pretrain.build_data(train_args, info)
    model = models_lvmae.LVMAE(**main_pretrain.model_config(train_args, store.dim, "store")).to(info.device)
    optimizer = main_pretrain.build_optimizer(model, train_args, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=train_args.amp == "fp16")
    if info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(info.device)
    steps_per_epoch = len(sampler) // train_args.accum_iter
    if steps > steps_per_epoch:
        raise SystemExit(f"--steps {steps} > {steps_per_epoch} steps in an epoch of this store; lower --steps")
    steps = steps or steps_per_epoch
    sampler.set_epoch(0)
    train_one_epoch(model, loader, optimizer, scaler, info.device, 0, train_args, max_steps=warmup_steps,
                    show_progress=False)
    sampler.set_epoch(1)
    if info.device.type == "cuda":
        torch.cuda.synchronize(info.device)
    start = time.perf_counter()
    stats = train_one_epoch(model, loader, optimizer, scaler, info.device, 1, train_args, max_steps=steps,
                            show_progress=False)
    if info.device.type == "cuda":
        torch.cuda.synchronize(info.device)
    elapsed = time.perf_counter() - start
    out = {"steps": steps, "real_tokens_per_s": round(stats["real_tokens"] / elapsed, 1),
           "padding_fraction": round(stats["padding_fraction"], 4), "step_ms": round(1000 * elapsed / steps, 2),
           "train_loss": round(stats["train_loss"], 6)}
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_before_mb"] = rss_before
    if info.device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(info.device) / 2**20, 1)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args, rest = parser.parse_known_args(argv)
    rest = [a for a in rest if a != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        if "--data_path" not in rest:
            from datasets import synthetic
            n = args.synthetic_videos
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the result line
                synthetic.main(["--out", f"{tmp}/corpus", "--num_videos", "10", "--num_pretrain", str(n - n // 10),
                                "--num_movies", str(n // 10)])
            rest = ["--data_path", f"{tmp}/corpus/pretrain", *rest]
        if "--model" not in rest:
            rest = ["--model", "lvmae_tiny", *rest]
        train_args = main_pretrain.get_args_parser().parse_args(
            [*rest, "--output_dir", f"{tmp}/run", "--val_fraction", "0", "--no_progress"])
        info = dist_util.init_distributed(train_args.device)
        main_pretrain.resolve_args(train_args, info)
        result = {"benchmark": "pretrain", "device": str(info.device), "threads": torch.get_num_threads(),
                  "model": train_args.model, "batch_size": train_args.batch_size, "accum_iter": train_args.accum_iter,
                  "amp": train_args.amp, "masking": train_args.masking}
        for name, group in (("grouped", True), ("ungrouped", False)):
            result[name] = run_mode(train_args, info, group, args.steps, args.warmup_steps)
    result["grouping_speedup"] = round(result["grouped"]["real_tokens_per_s"]
                                       / result["ungrouped"]["real_tokens_per_s"], 3)
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
