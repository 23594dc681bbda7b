"""Throughput of the whole pretraining path -- random windows from a memory-mapped store, the
step batch sampler, collate, LV-MAE forward/backward, fused AdamW -- with and without length
grouping. Reports real (unpadded) tokens/s, the padding fraction, peak memory, and the useful
FLOP rate (matmul FLOPs of the real tokens only, ``bench_model.step_flops``) against float32 and
bfloat16 matmul peaks measured in the same run, as one JSON line.

    python benchmarks/bench_pretrain.py                        # a small synthetic store, lvmae_tiny
    python benchmarks/bench_pretrain.py --paper_width          # 1024-d / 16 heads, decoder 512-d / 16 heads,
                                                               # depths 2 / 2, fp32 and --amp bf16, grouped
    python benchmarks/bench_pretrain.py --steps 50 -- --model lvmae_d32 --data_path STORE --device cuda

Every argument after ``--`` (or any argument this script does not know) is a main_pretrain.py
flag, so the benchmark runs exactly the configuration a training run would (``--compile`` too).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import main_pretrain  # noqa: E402
import models_lvmae  # noqa: E402
import util.dist as dist_util  # noqa: E402
from bench_model import matmul_peak, step_flops  # noqa: E402
from engine_pretrain import train_one_epoch  # noqa: E402
from util.logging import emit_json_line  # noqa: E402

# The paper's width (Table 5: 1024-d encoder, 16 heads; 512-d decoder, 16 heads) at depths a CPU runs.
PAPER_WIDTH = ["--model", "lvmae_d32", "--embed_dim", "1024", "--num_heads", "16", "--decoder_embed_dim", "512",
               "--decoder_num_heads", "16"]
PAPER_FLOOR = 0.65  # fraction of the fp32 matmul peak the whole path must keep (issue 16)


def get_args_parser():
    p = argparse.ArgumentParser("LV-MAE pretraining throughput", add_help=False)
    p.add_argument("--steps", type=int, default=None,
                   help="timed optimizer steps per mode (0 = a whole epoch: a few steps are a biased sample of "
                        "lengths once batches are grouped; default 0, with --paper_width 8)")
    p.add_argument("--warmup_steps", type=int, default=3, help="untimed steps first (allocator, kernels, compile)")
    p.add_argument("--synthetic_videos", type=int, default=600,
                   help="videos of the synthetic store built when no --data_path is given (10%% of them movies)")
    p.add_argument("--synthetic_dim", type=int, default=256,
                   help="embedding dim of that store (--paper_width: 1024, LanguageBind-H's)")
    p.add_argument("--paper_width", action="store_true",
                   help="the paper's widths at --paper_depth, grouped batches, fp32 and --amp bf16")
    p.add_argument("--paper_depth", type=int, nargs=2, default=[2, 2], metavar=("ENC", "DEC"),
                   help="encoder and decoder depths of --paper_width (the paper: 32 and 8)")
    p.add_argument("--bf16_steps", type=int, default=2,
                   help="timed steps of the --paper_width bf16 mode (after 1 warmup step): on a CPU without bf16 "
                        "units (AVX2 only) a bf16 matmul is tens of times slower than fp32")
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


class RecordingLoader:
    """The training loader, keeping every batch's real lengths for the useful-FLOP count."""

    def __init__(self, loader):
        self.loader, self.lengths = loader, []
        self.batch_sampler = loader.batch_sampler  # --loss_norm epoch reads the sampler's plan


    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.lengths.append(batch["lengths"].numpy().copy())
            yield batch


def matmul_peaks(device) -> dict:
    """fp32 and bf16 matmul FLOP/s on ``device``, measured now (1024 x 1024 on CPU, where bf16
    without bf16 units is slow, 4096 x 4096 on GPU)."""
    n = 4096 if torch.device(device).type == "cuda" else 1024
    return {"fp32": matmul_peak(device, n=n, dtype=torch.float32), "bf16": matmul_peak(device, n=n, dtype=torch.bfloat16)}


def run_mode(train_args, info, group: bool, steps: int, warmup_steps: int, peaks: dict | None = None) -> dict:
    train_args.group_by_length = group
    torch.manual_seed(train_args.seed)
    rss_before = peak_rss_mb(reset=True)
    store, train_set, _, sampler, loader, _ = main_pretrain.build_data(train_args, info)
    model = models_lvmae.LVMAE(**main_pretrain.model_config(train_args, store.dim, "store")).to(info.device)
    train_model = main_pretrain.compile_model(model, train_args)
    optimizer = main_pretrain.build_optimizer(model, train_args, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=train_args.amp == "fp16")
    if info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(info.device)
    steps_per_epoch = len(sampler) // train_args.accum_iter
    if steps > steps_per_epoch:
        raise SystemExit(f"--steps {steps} > {steps_per_epoch} steps in an epoch of this store; lower --steps")
    steps = steps or steps_per_epoch
    sampler.set_epoch(0)
    train_one_epoch(train_model, loader, optimizer, scaler, info.device, 0, train_args, max_steps=warmup_steps,
                    show_progress=False)
    sampler.set_epoch(1)
    timed = RecordingLoader(loader)
    if info.device.type == "cuda":
        torch.cuda.synchronize(info.device)
    start = time.perf_counter()
    stats = train_one_epoch(train_model, timed, optimizer, scaler, info.device, 1, train_args, max_steps=steps,
                            show_progress=False)
    if info.device.type == "cuda":
        torch.cuda.synchronize(info.device)
    elapsed = time.perf_counter() - start
    flops = float(sum(step_flops(model, lengths, train_args.mask_ratio)
                      for lengths in timed.lengths[:steps * train_args.accum_iter]))
    out = {"steps": steps, "real_tokens_per_s": round(stats["real_tokens"] / elapsed, 1),
           "padding_fraction": round(stats["padding_fraction"], 4), "step_ms": round(1000 * elapsed / steps, 2),
           "train_loss": round(stats["train_loss"], 6), "useful_gflops_per_s": round(flops / elapsed / 1e9, 2)}
    for name, peak in (peaks or {}).items():
        out[f"fraction_of_{name}_peak"] = round(flops / elapsed / peak, 3)
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_before_mb"] = rss_before
    if info.device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(info.device) / 2**20, 1)
    if train_args.compile:  # what a checkpoint of this run would hold: the uncompiled module's keys
        out["state_dict_keys_uncompiled"] = not any("_orig_mod" in k for k in model.state_dict())
    return out


def synthetic_store(tmp: str, videos: int, dim: int) -> str:
    from datasets import synthetic
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the result line
        synthetic.main(["--out", f"{tmp}/corpus", "--num_videos", "10", "--num_pretrain", str(videos - videos // 10),
                        "--num_movies", str(videos // 10), "--dim", str(dim)])
    return f"{tmp}/corpus/pretrain"


def parse_train_args(rest: list[str], tmp: str):
    train_args = main_pretrain.get_args_parser().parse_args(
        [*rest, "--output_dir", f"{tmp}/run", "--val_fraction", "0", "--no_progress"])
    info = dist_util.init_distributed(train_args.device)
    main_pretrain.resolve_args(train_args, info)
    return train_args, info


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    args, rest = parser.parse_known_args(argv)
    rest = [a for a in rest if a != "--"]
    steps = args.steps if args.steps is not None else (8 if args.paper_width else 0)
    with tempfile.TemporaryDirectory() as tmp:
        if "--data_path" not in rest:
            dim = 1024 if args.paper_width and args.synthetic_dim == 256 else args.synthetic_dim
            rest = ["--data_path", synthetic_store(tmp, args.synthetic_videos, dim), *rest]
        if args.paper_width:
            enc, dec = args.paper_depth
            rest = [*PAPER_WIDTH, "--depth", str(enc), "--decoder_depth", str(dec), *rest]
        elif "--model" not in rest:
            rest = ["--model", "lvmae_tiny", *rest]
        train_args, info = parse_train_args(rest, tmp)
        peaks = matmul_peaks(info.device)
        result = {"benchmark": "pretrain", "device": str(info.device), "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "model": train_args.model,
                  "batch_size": train_args.batch_size, "accum_iter": train_args.accum_iter,
                  "amp": train_args.amp, "masking": train_args.masking, "compile": train_args.compile,
                  "matmul_peak_gflops_per_s": {k: round(v / 1e9, 1) for k, v in peaks.items()}}
        if args.paper_width:
            # Grouped batches (the default sampler), in fp32 and in bf16 autocast.
            result["paper_width"] = {"embed_dim": 1024, "num_heads": 16, "decoder_embed_dim": 512,
                                     "decoder_num_heads": 16, "depth": enc, "decoder_depth": dec,
                                     "note": f"depths reduced from 32 / 8 to {enc} / {dec} for CPU time"}
            for amp in ("none", "bf16"):
                mode_args = copy.copy(train_args)
                mode_args.amp = main_pretrain.resolve_amp(amp, info.device)
                timed, warmup = (steps, args.warmup_steps) if amp == "none" else (args.bf16_steps, 1)
                result[f"grouped_{'fp32' if amp == 'none' else amp}"] = run_mode(mode_args, info, True, timed,
                                                                                  warmup, peaks)
            fp32 = result["grouped_fp32"]["fraction_of_fp32_peak"]
            result["keeps_floor_of_fp32_peak"] = {"floor": PAPER_FLOOR, "fp32": fp32, "kept": bool(fp32 >= PAPER_FLOOR)}
            result["bf16_speedup"] = round(result["grouped_bf16"]["real_tokens_per_s"]
                                           / result["grouped_fp32"]["real_tokens_per_s"], 3)
        else:
            for name, group in (("grouped", True), ("ungrouped", False)):
                result[name] = run_mode(train_args, info, group, steps, args.warmup_steps, peaks)
            result["grouping_speedup"] = round(result["grouped"]["real_tokens_per_s"]
                                               / result["ungrouped"]["real_tokens_per_s"], 3)
        result["matmul_peak_after_gflops_per_s"] = {k: round(v / 1e9, 1) for k, v in matmul_peaks(info.device).items()}
    emit_json_line(result, args.out)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
