"""Attentive / linear probing of a frozen LV-MAE encoder (paper Sec. 4, App. 8): the engine
behind ``test_ap.py`` and ``test_lp.py``.

One run = one (dataset, task, probe, backbone); ``--seeds k`` trains heads with seeds 0..k-1 on
the same cached features:

1. annotations -> the annotated videos present in the store (the others are skipped and
   counted; ``runs/<run_id>/ids.csv`` lists the ids used, ``skipped.csv`` the others);
2. frozen features per split, computed once and cached (``util/feature_cache.py``); videos
   longer than the encoder's ``max_len`` follow the sliding-window policy of
   ``util/long_video.py`` (the one ``extract_features.py`` uses);
3. per seed: train the head; after every epoch evaluate on *val*; keep the head of the best val
   epoch (L-BFGS: the best weight decay); evaluate *test* once, with that head
   (``select_epoch`` / ``select_weight_decay`` never receive test data);
4. ``runs/<run_id>/seed<k>.json`` (config, per-epoch metrics, selected epoch, test metric and
   per-video test scores, counts) and one row per seed in ``<output_dir>/results.csv``
   (``util/probe_results.py``), with the run's bootstrap interval.

Heads (``models_probe.py``): ``ap`` = one transformer block over ``[CLS]`` + tokens (raw
backbone: the probe's own ``[CLS]`` + sin-cos positions; ``--probe_positions own`` gives LV-MAE
tokens the same treatment, ``none`` leaves the positions out), ``lp`` = mean of the valid segment
tokens + Linear. Regression tasks use the mean + Linear head with MSE in both scripts, features
and targets standardized with training statistics, the MSE reported in the task's units.
``--solver lbfgs`` (linear heads) fits to convergence instead of Adam epochs (the weight decay
chosen on validation); ``--label_fraction f`` trains on a seeded stratified subset (same steps).
Test metrics come with a 95% bootstrap interval over test videos of the mean over seeds.

    python test_ap.py --dataset lvu --task genre --data_path stores/lvu_languagebind \\
        --checkpoint output/checkpoint-last.pth --seeds 3 --output_dir output/probe
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from datasets import breakfast
from datasets.benchmarks import DATASETS, load_annotations
from datasets.labelled import AnnotationError, LabelledSequences, TaskSpec, stratified_subset
from datasets.store import EmbeddingStore, StoreError
from models_probe import AttentiveProbe, LinearProbe, default_heads, masked_mean
from util import feature_cache
from util.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, CheckpointError, check_store_encoder, checkpoint_digest,
                             load_pretrained)
from util.cli import (DEVICE_HELP, ArgumentParser, UserError, nonneg_float, output_dir, positive_float, positive_int,
                      resolve_device_flag, run_cli, unit_fraction)
from util.io import atomic_write_text
from util.long_video import encode_videos, raw_features
from util.probe_results import bootstrap_interval, has_row, write_row

PROBES = {"ap": "attentive", "lp": "linear"}
POSITIONS = ("own", "none")
SOLVERS = ("adam", "lbfgs")
LBFGS_WEIGHT_DECAYS = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
# Paper App. 8: Table 7 (attentive) and Table 6 (linear). Adam betas (0.9, 0.999), no weight decay.
PROBE_DEFAULTS = {"ap": dict(epochs=20, lr=1e-3, lr_gamma=0.9, batch_size=16),
                  "lp": dict(epochs=30, lr=1e-4, lr_gamma=1.0, batch_size=16)}
EVAL_BATCH = 64


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class ProbeError(UserError, ValueError):
    """A probe that cannot run as configured; the message names the flag or file at fault."""


USER_ERRORS = (ProbeError, AnnotationError, StoreError, CheckpointError)


def get_args_parser(probe: str = "ap"):
    d = PROBE_DEFAULTS[probe]
    p = argparse.ArgumentParser(f"LV-MAE {PROBES[probe]} probing", add_help=False)
    g = p.add_argument_group("task")
    g.add_argument("--dataset", required=True, choices=DATASETS, help="benchmark whose annotations to read")
    g.add_argument("--task", default=None,
                   help="task of the dataset (LVU: director genre writer year scene way_speaking relationship "
                        "like_ratio view_count; synthetic: a key of tasks.json); COIN / Breakfast have one task")
    g.add_argument("--annotations", default=None,
                   help="LVU: the lvu_1.0 folder (default: the copy shipped in data/lvu_1.0); COIN: COIN.json; "
                        "Breakfast: folder with train.csv, test.csv; synthetic / user data: the tasks folder")
    g.add_argument("--split_seed", type=int, default=0,
                   help="seed of the stratified 10%% validation split carved from training (COIN, Breakfast)")
    g.add_argument("--bf_split", default="official", choices=breakfast.SPLITS,
                   help="Breakfast: the literature's train/test split, or participant split s1..s4")
    g = p.add_argument_group("features")
    g.add_argument("--data_path", nargs="+", required=True, help="embedding store directories, or a .txt list of them")
    g.add_argument("--backbone", default="lvmae", choices=("lvmae", "none"),
                   help="lvmae: the frozen LV-MAE encoder of --checkpoint; none: the raw segment embeddings "
                        "(the paper's 'Baseline' rows)")
    g.add_argument("--checkpoint", default=None,
                   help="pretrained LV-MAE, a training checkpoint or an exported directory (export_pretrained.py); "
                        "required with --backbone lvmae")
    g.add_argument("--num_patches", type=positive_int, default=None,
                   help="raise the encoder's max_len (segments per window; positions are recomputed); "
                        "default: the checkpoint's")
    g.add_argument("--window_stride", type=positive_int, default=None,
                   help="stride in segments of the sliding windows over longer videos (default max_len // 2)")
    g.add_argument("--amp", default=None, choices=("none", "bf16"),
                   help="autocast while encoding (default: bf16 on CUDA, none on CPU)")
    g.add_argument("--encode_batch_size", type=positive_int, default=64, help="windows per encoder forward")
    g.add_argument("--cache_dir", default=None, type=output_dir, help="feature cache (default: <output_dir>/cache)")
    g = p.add_argument_group("head and optimisation (defaults: the paper's Table 7 for AP, Table 6 for LP)")
    g.add_argument("--probe_heads", type=positive_int, default=None,
                   help="attention heads of the AP block (default: the encoder's; raw backbone: 16, fewer if the width "
                        "is below 256 so heads keep >= 16 dims)")
    g.add_argument("--probe_dim", type=positive_int, default=None,
                   help="AP with its own [CLS] (raw backbone, or --probe_positions own): width the tokens are "
                        "projected to (default: their dim)")
    g.add_argument("--probe_positions", default=None, choices=POSITIONS,
                   help="AP on classification tasks. own: the probe's own [CLS], Linear + LayerNorm and sin-cos "
                        "positions (the raw baseline's treatment; default for --backbone none); none: no positions "
                        "added (default for --backbone lvmae: the paper's App. 8 head over the encoder's [CLS] and "
                        "tokens; with --backbone none: own [CLS] + Linear + LayerNorm, an order-blind control). "
                        "Ignored by the linear and regression heads")
    g.add_argument("--epochs", type=positive_int, default=d["epochs"], help="training epochs of the head")
    g.add_argument("--batch_size", type=positive_int, default=d["batch_size"], help="videos per step")
    g.add_argument("--lr", type=positive_float, default=d["lr"], help="Adam learning rate")
    g.add_argument("--lr_gamma", type=positive_float, default=d["lr_gamma"],
                   help="ExponentialLR factor per epoch (1.0 = constant)")
    g.add_argument("--solver", default="adam", choices=SOLVERS,
                   help="adam: the paper's protocol (the flags above); lbfgs (linear and regression heads): the "
                        "converged probe -- mean-pooled features standardized with training statistics, full-batch "
                        "L-BFGS (float64) to --lbfgs_tol for each --weight_decays value, the value chosen on "
                        "validation")
    g.add_argument("--weight_decays", type=nonneg_float, nargs="+", default=LBFGS_WEIGHT_DECAYS,
                   help="lbfgs: the grid of L2 penalties (objective: mean loss + wd * ||W||^2, bias not penalized)")
    g.add_argument("--lbfgs_tol", type=positive_float, default=1e-6, help="lbfgs: stop when max |gradient| <= this")
    g.add_argument("--lbfgs_max_iter", type=positive_int, default=5000, help="lbfgs: iteration cap per weight decay")
    g.add_argument("--label_fraction", type=unit_fraction, default=1.0,
                   help="train on a seeded stratified subset of this fraction of the training videos (by class; "
                        "regression: by target decile), drawn per seed; validation and test unchanged. Adam runs as "
                        "many steps as with all labels: an epoch is a full-label epoch's number of steps")
    g.add_argument("--seeds", type=positive_int, default=1,
                   help="train heads with seeds 0..k-1 (init, shuffling, label subset); report mean and std")
    g = p.add_argument_group("run")
    g.add_argument("--output_dir", default="output_probe", type=output_dir, help="results.csv, runs/<run_id>/, cache/")
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--num_threads", type=positive_int, default=None,
                   help="CPU threads for this run (default: torch's, i.e. all cores). On a CPU shared with other "
                        "jobs use 1: there more threads made epochs up to 15x slower (benchmarks/bench_probe.py)")
    g.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue an interrupted multi-seed run: seeds whose result JSON exists are not retrained "
                        "('auto', or the run directory runs/<run_id> to continue)")
    return p


def parse_args(argv=None, probe: str = "ap") -> argparse.Namespace:
    parser = ArgumentParser(parents=[get_args_parser(probe)], description=__doc__, formatter_class=_Formatter)
    args = parser.parse_args(argv)
    args.probe = probe
    return args


# --- features -----------------------------------------------------------------------------------
_encoder_memo: dict = {}
EXPORT_FILES = (CONFIG_FILE, WEIGHTS_FILE)


def load_encoder(args, store) -> dict | None:
    """The frozen LV-MAE (+ checkpoint facts) for ``--backbone lvmae``; memoized so a sweep loads
    each checkpoint once."""
    if args.backbone == "none":
        return None
    if not args.checkpoint:
        raise ProbeError("--backbone lvmae needs --checkpoint (a pretrained LV-MAE); "
                         "use --backbone none to probe the raw segment embeddings")
    path = Path(args.checkpoint)  # a training checkpoint file or an exported directory (its files' digest)
    digest = checkpoint_digest(path) if path.is_file() or all((path / f).is_file() for f in EXPORT_FILES) else None
    memo = (digest, str(args.device), args.num_patches, store.dim)
    if digest is None or memo not in _encoder_memo:
        model, ckpt = load_pretrained(args.checkpoint, args.device, input_dim=store.dim, max_len=args.num_patches)
        ckpt_args = ckpt.get("args") or {}
        _encoder_memo.clear()
        _encoder_memo[memo] = {"model": model, "sha256": digest, "config": dict(ckpt["model_config"]),
                               "masking": ckpt_args.get("masking", ""), "mask_ratio": ckpt_args.get("mask_ratio", ""),
                               "epoch": ckpt.get("epoch"), "data": ckpt.get("data") or {}}
    encoder = _encoder_memo[memo]
    check_store_encoder(encoder, store.manifest, args.checkpoint, str(store.roots[0]))
    return encoder


def amp_dtype(args) -> torch.dtype | None:
    amp = args.amp or ("bf16" if torch.device(args.device).type == "cuda" else "none")
    return torch.bfloat16 if amp == "bf16" else None


def split_features(args, store, video_ids: list[str], encoder: dict | None, cache_dir: Path):
    """``(VideoFeatures, cache key, cache hit)`` of ``video_ids`` in that order."""
    if encoder is None:
        policy = {"kind": "raw"}
        compute = lambda: raw_features(store, video_ids)  # noqa: E731
    else:
        model = encoder["model"]
        if args.window_stride is not None and not 0 < args.window_stride <= model.max_len:
            raise ProbeError(f"--window_stride {args.window_stride} must be in [1, {model.max_len}] "
                             "(the window length)")
        stride = args.window_stride or max(1, model.max_len // 2)
        dtype = amp_dtype(args)
        policy = {"kind": "lvmae", "max_len": model.max_len, "stride": stride, "amp": str(dtype)}
        compute = lambda: encode_videos(model, store, video_ids, batch_size=args.encode_batch_size,  # noqa: E731
                                        device=args.device, stride=stride, amp_dtype=dtype)
    key, doc = feature_cache.cache_key(encoder and encoder["sha256"], store, video_ids, args.backbone, policy)
    features, hit = feature_cache.cached(cache_dir, key, doc, compute)
    return features, key, hit


# --- heads, training, selection -----------------------------------------------------------------
def positions_of(args, spec: TaskSpec) -> str:
    """The attentive head's positional treatment, ``own`` or ``none``; ``""`` for the heads
    without attention (linear probe, regression)."""
    if spec.is_regression or args.probe == "lp":
        return ""
    return args.probe_positions or ("own" if args.backbone == "none" else "none")


def solver_of(args, spec: TaskSpec) -> str:
    return args.solver if (spec.is_regression or args.probe == "lp") else "adam"


@torch.no_grad()
def pooled(data: LabelledSequences, batch_size: int = 256) -> torch.Tensor:
    """``[N, E]`` the mean of each video's valid tokens (the linear heads' input)."""
    return torch.cat([masked_mean(x, pad) for _, x, pad, _ in data.batches(batch_size)])


def build_head(args, spec: TaskSpec, dim: int, encoder: dict | None,
               train: LabelledSequences | None = None) -> torch.nn.Module:
    """The head of this run; ``train`` (the videos trained on) gives the linear heads their
    standardization: features for the converged probe and regression, targets for regression."""
    if spec.is_regression or args.probe == "lp":
        head = LinearProbe(dim, spec.num_outputs)
        if spec.is_regression:  # starts at the training mean (PyTorch's random init adds variance)
            torch.nn.init.zeros_(head.head.weight)
            torch.nn.init.zeros_(head.head.bias)
        if train is not None and (spec.is_regression or solver_of(args, spec) == "lbfgs"):
            head.standardize(pooled(train), train.labels if spec.is_regression else None)
        return head
    positions = positions_of(args, spec)
    own_cls = encoder is None or positions == "own"
    width = (args.probe_dim or dim) if own_cls else dim
    heads = args.probe_heads or (default_heads(width) if encoder is None else encoder["config"]["num_heads"])
    return AttentiveProbe(dim, spec.num_outputs, heads, own_cls=own_cls, width=width, positions=positions == "own")


def head_name(args, spec: TaskSpec) -> str:
    if spec.is_regression:
        return "LinearProbe (standardized mean of segment tokens; regression, MSE)"
    if args.probe == "lp":
        return "LinearProbe (mean of segment tokens" + (", standardized)" if args.solver == "lbfgs" else ")")
    if positions_of(args, spec) == "own":
        return "AttentiveProbe (own [CLS] + sin-cos positions)"
    return "AttentiveProbe (" + ("own [CLS], no positions" if args.backbone == "none" else "encoder [CLS]") + ")"


def setting_of(args, spec: TaskSpec) -> str:
    """One readable line for the tables: the head and its optimisation."""
    solver = solver_of(args, spec)
    if solver == "lbfgs":
        opt = "L-BFGS to convergence, wd on val"
    else:
        opt = f"Adam lr {args.lr:g}" + (f", γ {args.lr_gamma:g}" if args.lr_gamma != 1 else "")
    if spec.is_regression:
        return f"mean + Linear, standardized ({opt})"
    if args.probe == "lp":
        return f"mean + Linear ({opt})"
    pos = {"own": "own [CLS] + sin-cos positions", "none": "own [CLS], no positions" if args.backbone == "none"
           else "encoder [CLS], no added positions"}[positions_of(args, spec)]
    return f"{pos} ({opt})"


def loss_fn(out: torch.Tensor, y: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
    return F.mse_loss(out[:, 0], y.float()) if spec.is_regression else F.cross_entropy(out, y)


def train_steps(head, batches, steps: int, optimizer, spec: TaskSpec) -> float:
    """``steps`` optimizer steps on the next batches of ``batches``; the mean training loss."""
    head.train()
    total, count = 0.0, 0
    for _, (cls, x, pad, y) in zip(range(steps), batches):
        loss = loss_fn(head(cls, x, pad), y, spec)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
    return total / max(count, 1)


def train_one_epoch(head, data: LabelledSequences, optimizer, spec: TaskSpec, batch_size: int,
                    generator: torch.Generator) -> float:
    """One shuffled pass over ``data``."""
    return train_steps(head, data.batches(batch_size, shuffle=True, generator=generator),
                       steps_per_epoch(len(data), batch_size), optimizer, spec)


def steps_per_epoch(num_videos: int, batch_size: int) -> int:
    return -(-num_videos // batch_size)


def batch_stream(data: LabelledSequences, batch_size: int, generator: torch.Generator):
    """Shuffled passes over ``data`` one after the other, endlessly (a new permutation per pass)."""
    while True:
        yield from data.batches(batch_size, shuffle=True, generator=generator)


@torch.no_grad()
def evaluate(head, data: LabelledSequences, spec: TaskSpec, batch_size: int = EVAL_BATCH,
             per_video: bool = False) -> dict:
    """``{"loss", metric}``: top-1 accuracy in % (classification) or MSE (regression, in the
    task's units). ``per_video``: also ``"scores"``, each video's contribution in the metric's
    units (100 / 0 correct, or the squared error), whose mean is the metric."""
    head.eval()
    outs, ys = [], []
    for cls, x, pad, y in data.batches(batch_size):
        outs.append(head(cls, x, pad).float())
        ys.append(y)
    out, y = torch.cat(outs), torch.cat(ys)
    loss = float(loss_fn(out, y, spec))
    if spec.is_regression:
        scores = (out[:, 0].double() - y.double()) ** 2
        result = {"loss": loss, "mse": loss}
    else:
        scores = (out.argmax(1) == y).double() * 100
        result = {"loss": loss, "top1": float((out.argmax(1) == y).float().mean() * 100)}
    if per_video:
        result["scores"] = scores.tolist()
    return result


def selection_key(val: dict, spec: TaskSpec) -> tuple:
    """Larger is better: val accuracy (ties: lower val loss), or lower val MSE."""
    return (-val["mse"],) if spec.is_regression else (val["top1"], -val["loss"])


def select_epoch(make_head, train: LabelledSequences, val: LabelledSequences, spec: TaskSpec, args, seed: int,
                 epoch_steps: int | None = None):
    """Train a head with ``seed``; return it at the epoch with the best *validation* metric, the
    per-epoch log and that epoch. Test data is deliberately not an argument.

    An epoch is ``epoch_steps`` optimizer steps (default: one pass over ``train``); a label
    subset gets the full training split's steps per epoch, drawn from consecutive shuffled
    passes, so it trains for as many steps with the same learning-rate schedule."""
    torch.manual_seed(seed)
    head = make_head().to(args.device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=args.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_gamma)
    steps = epoch_steps or steps_per_epoch(len(train), args.batch_size)
    batches = batch_stream(train, args.batch_size, generator)
    log, best, best_key = [], None, None
    bar = tqdm(range(args.epochs), desc=f"{spec.dataset}/{spec.name} {args.probe} {args.backbone} seed {seed}",
               unit="epoch", leave=False, disable=None)  # on a terminal only, not in logs
    for epoch in bar:
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_steps(head, batches, steps, optimizer, spec)
        val_metrics = evaluate(head, val, spec)
        log.append({"epoch": epoch, "lr": lr, "steps": steps, "train_loss": train_loss,
                    **{f"val_{k}": v for k, v in val_metrics.items()}})
        bar.set_postfix(loss=f"{train_loss:.3f}", **{f"val_{spec.metric}": f"{val_metrics[spec.metric]:.3f}"})
        key = selection_key(val_metrics, spec)
        if best_key is None or key > best_key:
            best_key, best = key, (epoch, {k: v.detach().clone() for k, v in head.state_dict().items()})
        scheduler.step()
    head.load_state_dict(best[1])
    return head, log, best[0]


def fit_linear_lbfgs(z: torch.Tensor, y: torch.Tensor, num_outputs: int, regression: bool, weight_decay: float,
                     tol: float, max_iter: int, init: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Minimise ``mean loss(z W^T + b, y) + weight_decay * ||W||^2`` (cross-entropy, or MSE on
    ``y``; ``b`` not penalized) with full-batch L-BFGS in float64 until max |gradient| <= ``tol``
    or ``max_iter`` iterations. Returns ``W, b`` and ``{iterations, grad_max, converged, loss}``."""
    z = z.double()
    W = torch.zeros(num_outputs, z.shape[1], dtype=torch.float64) if init is None else init[0].clone()
    b = torch.zeros(num_outputs, dtype=torch.float64) if init is None else init[1].clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    target = y.double() if regression else y.long()

    def objective():
        out = z @ W.T + b
        loss = F.mse_loss(out[:, 0], target) if regression else F.cross_entropy(out, target)
        return loss + weight_decay * W.pow(2).sum()

    optimizer = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)
    loss = closure()
    grad_max = float(torch.cat([W.grad.flatten(), b.grad.flatten()]).abs().max())
    info = {"iterations": int(optimizer.state[W].get("n_iter", 0)), "grad_max": grad_max,
            "converged": grad_max <= tol, "loss": float(loss.detach())}
    return W.detach(), b.detach(), info


def select_weight_decay(make_head, train: LabelledSequences, val: LabelledSequences, spec: TaskSpec, args,
                        seed: int):
    """The converged linear probe: for each ``--weight_decays`` value (largest first, each
    warm-started from the previous solution) fit the standardized linear head to convergence
    on ``train`` and evaluate it on *validation*; return the head of the best value, the log
    (one entry per value) and its index. No randomness: ``seed`` only names the run."""
    head = make_head().to(args.device)
    z = (pooled(train).double() - head.feature_mean.double()) / head.feature_std.double()
    y = train.labels
    if spec.is_regression:
        y = (y.double() - head.target_mean.double()) / head.target_std.double()
    log, best, best_key, init = [], None, None, None
    for i, wd in enumerate(sorted(args.weight_decays, reverse=True)):
        W, b, info = fit_linear_lbfgs(z.cpu(), y.cpu(), spec.num_outputs, spec.is_regression, wd,
                                      args.lbfgs_tol, args.lbfgs_max_iter, init)
        init = (W, b)
        with torch.no_grad():
            head.head.weight.copy_(W.float())
            head.head.bias.copy_(b.float())
        val_metrics = evaluate(head, val, spec)
        log.append({"epoch": i, "weight_decay": wd, **info, "train_loss": info["loss"],
                    **{f"val_{k}": v for k, v in val_metrics.items()}})
        key = selection_key(val_metrics, spec)
        if best_key is None or key > best_key:
            best_key, best = key, (i, {k: v.detach().clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[1])
    return head, log, best[0]


def trivial_baseline(train_y: np.ndarray, test_y: np.ndarray, spec: TaskSpec) -> float:
    """Test metric of predicting the training majority class / mean: what a head must beat."""
    if spec.is_regression:
        return float(((test_y - train_y.mean()) ** 2).mean())
    return float((test_y == np.bincount(train_y, minlength=spec.num_classes).argmax()).mean() * 100)


# --- one run --------------------------------------------------------------------------------------
def run_identity(args, ann, store, encoder) -> str:
    spec = ann.spec
    solver = solver_of(args, spec)
    cfg = {k: getattr(args, k) for k in ("dataset", "probe", "backbone", "split_seed", "bf_split", "num_patches",
                                          "window_stride", "probe_heads", "probe_dim")
           + (("epochs", "batch_size", "lr", "lr_gamma") if solver == "adam" else ())}
    cfg.update(task=spec.name, amp=str(amp_dtype(args)) if encoder else None,
               annotations=ann.sources, stores=[str(r.resolve()) for r in store.roots],
               checkpoint_sha256=encoder and encoder["sha256"])
    # settings added later enter the identity only when they change the run, so the runs of the
    # paper's protocol keep their ids
    default_positions = positions_of(argparse.Namespace(**{**vars(args), "probe_positions": None}), spec)
    if positions_of(args, spec) != default_positions:
        cfg["positions"] = positions_of(args, spec)
    if solver == "lbfgs":
        cfg.update(solver=solver, weight_decays=sorted(args.weight_decays), lbfgs_tol=args.lbfgs_tol,
                   lbfgs_max_iter=args.lbfgs_max_iter)
    if args.label_fraction != 1.0:
        cfg["label_fraction"] = args.label_fraction
    if spec.is_regression:
        cfg["regression_head"] = "standardized"  # not the results of the earlier unstandardized head
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{args.dataset}-{ann.spec.name}-{args.probe}-{args.backbone}-{digest}"


def run(args) -> list[dict]:
    """Probe one task; returns the per-seed result dicts (also written to ``--output_dir``)."""
    threads = torch.get_num_threads()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> list[dict]:
    resolve_device_flag(args)
    for flag in ("seeds", "epochs", "batch_size"):
        if getattr(args, flag) < 1:
            raise ProbeError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if not args.lr > 0 or not 0 < args.lr_gamma <= 1:
        raise ProbeError(f"need --lr > 0 and 0 < --lr_gamma <= 1, got {args.lr} and {args.lr_gamma}")
    if args.probe_dim and args.backbone != "none" and args.probe_positions != "own":
        raise ProbeError("--probe_dim applies to the probe's own [CLS] only (--backbone none or --probe_positions "
                         "own); the LV-MAE probe over the encoder's [CLS] works at the encoder width")
    if not 0.0 < args.label_fraction <= 1.0:
        raise ProbeError(f"--label_fraction must be in (0, 1], got {args.label_fraction}")
    if args.solver == "lbfgs" and (not args.weight_decays or min(args.weight_decays) < 0 or not args.lbfgs_tol > 0
                                   or args.lbfgs_max_iter < 1):
        raise ProbeError("--solver lbfgs needs --weight_decays >= 0, --lbfgs_tol > 0 and --lbfgs_max_iter >= 1")
    t0 = time.time()
    annotations = str(Path(args.annotations).resolve()) if args.annotations else None  # run ids independent of cwd
    ann = load_annotations(args.dataset, args.task, annotations, args.split_seed, args.bf_split)
    spec = ann.spec
    if args.solver == "lbfgs" and solver_of(args, spec) != "lbfgs":
        raise ProbeError("--solver lbfgs fits the linear heads (test_lp.py, or a regression task); the attentive "
                         f"probe of the classification task {spec.name!r} trains with Adam")
    store = EmbeddingStore(args.data_path)
    encoder = load_encoder(args, store)
    used, skipped = ann.in_store(store, store_name=f"the store {', '.join(map(str, store.roots))}")
    output_dir = Path(args.output_dir)
    run_id = run_identity(args, ann, store, encoder)
    run_dir = output_dir / "runs" / run_id
    if args.resume not in (None, "auto") and Path(args.resume).resolve() != run_dir.resolve():
        raise ProbeError(f"--resume {args.resume}: this configuration's run directory is {run_dir}; "
                         "a different directory belongs to a different configuration")

    cache_dir = Path(args.cache_dir) if args.cache_dir else output_dir / "cache"
    data, cache = {}, {}
    for split, df in used.splits.items():
        ids = df.video_id.tolist()
        features, key, hit = split_features(args, store, ids, encoder, cache_dir)
        if features.video_ids != ids:
            raise ProbeError(f"feature cache entry {cache_dir / key} holds other videos; delete it")
        data[split] = LabelledSequences(features, df.label.to_numpy(), device=args.device)
        cache[split] = {"key": key, "hit": hit}
    dim = data["train"].dim

    run_dir.mkdir(parents=True, exist_ok=True)
    ids = pd.concat([df[["video_id", "label"]].assign(split=s) for s, df in used.splits.items()])
    atomic_write_text(run_dir / "ids.csv", ids[["video_id", "split", "label"]].to_csv(index=False))
    atomic_write_text(run_dir / "skipped.csv", pd.DataFrame(
        [(v, s) for s, vs in skipped.items() for v in vs], columns=["video_id", "split"]).to_csv(index=False))

    counts = {f"n_{s}": len(df) for s, df in used.splits.items()}
    counts["skipped"] = sum(map(len, skipped.values()))
    common = {
        "run_id": run_id, "dataset": args.dataset, "task": spec.name, "task_type": spec.type, "probe": args.probe,
        "backbone": args.backbone, "head": head_name(args, spec), "metric": spec.metric,
        "encoder": store.manifest["encoder"], "store_dim": store.dim, "feature_dim": dim,
        "checkpoint": None if encoder is None else {"path": str(args.checkpoint), "sha256": encoder["sha256"],
                                                    "model_config": encoder["config"], "masking": encoder["masking"],
                                                    "mask_ratio": encoder["mask_ratio"], "epoch": encoder["epoch"]},
        "config": {k: v for k, v in vars(args).items()}, "annotations": ann.sources,
        "counts": {**counts, "skipped_per_split": {s: len(v) for s, v in skipped.items()}}, "cache": cache,
        "chance": spec.chance,
        "trivial_test": trivial_baseline(data["train"].labels.cpu().numpy(), data["test"].labels.cpu().numpy(), spec),
        "positions": positions_of(args, spec), "solver": solver_of(args, spec), "setting": setting_of(args, spec),
        "label_fraction": args.label_fraction,
    }
    solver = solver_of(args, spec)
    fit = select_weight_decay if solver == "lbfgs" else select_epoch
    epoch_steps = steps_per_epoch(len(data["train"]), args.batch_size)  # a full-label epoch, also for subsets
    results, rows, deterministic_fit = [], [], None
    for seed in range(args.seeds):
        path = run_dir / f"seed{seed}.json"
        if args.resume and path.is_file():
            result = json.loads(path.read_text())
            print(f"[{run_id}] seed {seed}: resumed from {path}")
        else:
            t = time.time()
            train = data["train"]
            if args.label_fraction < 1.0:
                train = train.subset(stratified_subset(train.labels.cpu().numpy(), args.label_fraction, seed,
                                                       regression=spec.is_regression))
            kwargs = {} if solver == "lbfgs" else {"epoch_steps": epoch_steps}
            if deterministic_fit is not None:  # L-BFGS on all labels: every seed fits the same head
                head, log, epoch = deterministic_fit
            else:
                head, log, epoch = fit(lambda: build_head(args, spec, dim, encoder, train), train,
                                       data["val"], spec, args, seed, **kwargs)
                if solver == "lbfgs" and args.label_fraction == 1.0:
                    deterministic_fit = head, log, epoch
            test = evaluate(head, data["test"], spec, per_video=True)
            test_scores = test.pop("scores")
            result = {**common, "seed": seed, "epochs": log, "selected_epoch": epoch,
                      "val": {k[4:]: v for k, v in log[epoch].items() if k.startswith("val_")},
                      "test": test, "train_time_s": time.time() - t,
                      "counts": {**common["counts"], "n_train": len(train), "n_train_split": len(data["train"])},
                      "train_ids": train.video_ids if len(train) < len(data["train"]) else "all",
                      "test_scores": test_scores}
            atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")
        if not (args.resume and has_row(output_dir / "results.csv", run_id, seed)):
            write_row(output_dir / "results.csv", results_row(result, path))
        results.append(result)
        rows.append((result, path))
        print(f"[{run_id}] seed {seed}: val {spec.metric} {result['val'][spec.metric]:.3f} at epoch "
              f"{result['selected_epoch']}, test {spec.metric} {result['test'][spec.metric]:.3f}")
    values = np.array([r["test"][spec.metric] for r in results])
    interval = None
    if all("test_scores" in r for r in results):  # results of older versions lack the per-video scores
        interval = bootstrap_interval(np.array([r["test_scores"] for r in results]))
        for result, path in rows:
            write_row(output_dir / "results.csv", results_row(result, path, interval))
    print(json.dumps({"run_id": run_id, "dataset": args.dataset, "task": spec.name, "probe": args.probe,
                      "backbone": args.backbone, "setting": common["setting"],
                      "label_fraction": args.label_fraction, "metric": spec.metric, "mean": float(values.mean()),
                      "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                      "ci95": None if interval is None else [round(v, 4) for v in interval], "seeds": len(values),
                      **counts, "n_trained": sorted({r["counts"]["n_train"] for r in results}),
                      "trivial_test": common["trivial_test"], "time_s": round(time.time() - t0, 2)}))
    return results


def results_row(result: dict, path: Path, interval: tuple[float, float] | None = None) -> dict:
    ckpt = result["checkpoint"] or {}
    chance = result["chance"]
    if chance is not None and result["metric"] == "top1":
        chance = 100 * chance
    return {"run_id": result["run_id"], "dataset": result["dataset"], "task": result["task"],
            "probe": result["probe"], "backbone": result["backbone"], "encoder": result["encoder"],
            "masking": ckpt.get("masking", ""), "mask_ratio": ckpt.get("mask_ratio", ""),
            "depth": (ckpt.get("model_config") or {}).get("depth", ""),
            "positions": result.get("positions", ""), "solver": result.get("solver", "adam"),
            "lr": result["config"]["lr"] if result.get("solver", "adam") == "adam" else "",
            "weight_decay": result["epochs"][result["selected_epoch"]].get("weight_decay", ""),
            "label_fraction": result.get("label_fraction", 1.0), "setting": result.get("setting", ""),
            "seed": result["seed"], "metric": result["metric"], "value": result["test"][result["metric"]],
            "ci_low": "" if interval is None else interval[0], "ci_high": "" if interval is None else interval[1],
            "selected_epoch": result["selected_epoch"], "epochs": len(result["epochs"]),
            "chance": "" if chance is None else chance, "trivial": result.get("trivial_test", ""),
            "n_train": result["counts"]["n_train"],
            "n_val": result["counts"]["n_val"], "n_test": result["counts"]["n_test"],
            "skipped": result["counts"]["skipped"], "checkpoint": ckpt.get("path", ""),
            "checkpoint_sha256": ckpt.get("sha256", ""), "result_json": str(path),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main(argv=None, probe: str = "ap") -> list[dict]:
    return run(parse_args(argv, probe))


def cli(probe: str) -> None:
    """Entry point of the thin scripts: user errors print one line, no traceback."""
    import sys
    sys.exit(run_cli(lambda argv: main(argv, probe), sys.argv[1:]))
