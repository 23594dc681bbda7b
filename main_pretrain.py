r"""LV-MAE pretraining (paper Sec. 3.3, App. 7, Table 5) on one or more embedding stores.

    # one process (CPU or one GPU)
    python main_pretrain.py --data_path STORE [STORE ...] --output_dir OUT --model lvmae_tiny
    # all GPUs of one machine / several machines (DDP; NCCL on GPU, gloo on CPU)
    torchrun --standalone --nproc_per_node=8 main_pretrain.py --data_path STORE --output_dir OUT
    # the authors' README command runs unchanged (add --data_path):
    python main_pretrain.py --batch_size 16 --dataset combined --decoder_depth 8 --decoder_embed_dim 512 \
        --decoder_num_heads 16 --depth 32 --epochs 151 --input_size 1024 --mask_ratio .5 --num_heads 16 \
        --num_patches 256 --distributed --world_size 8 --masking_strategy --data_path STORE
    # ... and computes what their code computes with (README, "The authors' public code"):
    #   --input_scale none --loss_norm authors --short_videos authors --no_group_by_length
    #   --masking semantic_inverse (instead of --masking_strategy, the paper's definition)

Masked video-text contrastive pretraining (``--objective contrastive`` / ``mae+contrastive``,
docs/contrastive.md) runs through this same entry point: the same data, sampler, DDP, checkpoints
and logs, with ``--texts TEXT_DB`` (``python -m datasets.texts``) pairing each video with a text.

Writes to ``--output_dir``: ``config.json`` (resolved arguments, git revision), ``log.txt`` (a
JSON line per epoch), TensorBoard events, ``checkpoint-last.pth`` after every epoch (the file
probing uses) and ``checkpoint-<epoch>.pth`` every ``--keep_every`` epochs. Rerunning the same
command continues from ``checkpoint-last.pth`` (``--resume auto``), losing at most the epoch that
was running; on CPU the continued run is bitwise identical to an uninterrupted one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import models_lvmae
import util.dist as dist_util
from datasets.pretrain import (SHORT_VIDEOS, WINDOW_SAMPLINGS, PretrainWindows, StepBatchSampler, WeightedMix,
                               collate_windows, eval_batches, split_validation)
from datasets.store import EmbeddingStore, StoreError, weighted_data_paths
from engine_pretrain import (LOSS_NORMS, NonFiniteLossError, PairedTexts, evaluate, evaluate_contrastive,
                             train_one_epoch)
from util.checkpoint import (FORMAT_VERSION, LEGACY_PROFILE, CheckpointError, check_model_config,
                             check_store_encoder, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state)
from util.cli import (ArgumentParser, UserError, fraction, nonneg_float, nonneg_int, open_fraction, output_dir,
                      positive_float, positive_int, run_cli)
from util.io import atomic_write_text, nothing_left_on_error
from util.lr_sched import LR_SCHEDULES
from util.logging import JsonLog, git_revision, jsonable, tensorboard_writer, write_run_config

LAST = "checkpoint-last.pth"
# Flags that define the run and whose default may change between versions. Not given on resume,
# they take the checkpoint's value (rerunning the same command continues the run it started);
# otherwise the default. flag: (default of a new run, value of a checkpoint whose args lack it).
RUN_DEFAULTS = {"loss_norm": ("epoch", "step"), "short_videos": ("drop", "drop"),
                "window_sampling": ("duration", "duration"), "lr_schedule": ("cosine", "cosine"),
                "objective": ("mae", "mae")}
# --mask_ratio's default by objective (the paper of each: LV-MAE 0.5, masked contrastive 0.75).
MASK_RATIO_DEFAULTS = {"mae": 0.5, "contrastive": 0.75, "mae+contrastive": 0.5}
INIT_ARCH_FLAGS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "input_size", "input_scale")
TEXTS_UNKNOWN = "texts_unknown_videos.txt"  # in --output_dir: texts whose video is not in --data_path


class ConfigError(UserError, ValueError):
    """Flags that contradict each other or the data; the message names the flag."""


def get_args_parser():
    p = argparse.ArgumentParser("LV-MAE pretraining", add_help=False)
    g = p.add_argument_group("data")
    g.add_argument("--data_path", nargs="+", required=True,
                   help="embedding store directories, or a .txt file listing them (all with the same encoder and "
                        "dim); STORE:WEIGHT (or a weight column in the .txt) makes a weighted mix: each epoch draws as "
                        "many items as there are training videos, each from a store with probability proportional "
                        "to its weight (unweighted stores weigh 1)")
    g.add_argument("--val_data_path", nargs="+", default=None,
                   help="held-out stores for validation (default: hold out --val_fraction of the --data_path videos)")
    g.add_argument("--val_fraction", type=fraction, default=0.05,
                   help="fraction of videos held out for validation when --val_data_path is not given (0 = none)")
    g.add_argument("--dataset", default="pretrain",
                   help="name of the run (the authors' flag, e.g. 'combined'); recorded in config.json and log.txt")
    g.add_argument("--duration_min", type=positive_float, default=10.0,
                   help="shortest random window, in seconds (Sec. 3.3)")
    g.add_argument("--duration_max", type=positive_float, default=1280.0,
                   help="longest random window, in seconds (256 tokens x 5 s); windows are also capped at --num_patches")
    g.add_argument("--window_sampling", choices=WINDOW_SAMPLINGS, default=None,
                   help="duration (default): a random duration in [--duration_min, --duration_max] seconds, capped "
                        "at the video and --num_patches; segments: a number of segments uniform in [2, min(video "
                        "length, --num_patches)] (duration flags unused); on resume the default is the checkpoint's")
    g.add_argument("--no_group_by_length", dest="group_by_length", action="store_false",
                   help="do not group windows of similar length into batches (with --loss_norm epoch grouping "
                        "only reduces padding; with step / authors it also reweights short windows' tokens)")
    g.add_argument("--short_videos", choices=SHORT_VIDEOS, default=None,
                   help="drop (default): skip videos of fewer than 2 segments; authors: the authors' CombinedData "
                        "rule (skip videos with n x (1 - mask_ratio) < 1 segments, tile the window of videos of "
                        "fewer than 5 segments 3 times); on resume the default is the checkpoint's")
    g.add_argument("--num_workers", type=nonneg_int, default=2,
                   help="DataLoader worker processes (0 = load in the main process)")

    g = p.add_argument_group("model (explicit flags override the --model preset)")
    g.add_argument("--model", default="lvmae_d32", choices=sorted(models_lvmae.PRESETS),
                   help="architecture preset; lvmae_d32 is the authors' README model, lvmae_tiny runs on a CPU")
    g.add_argument("--input_size", type=positive_int, default=None,
                   help="segment embedding dim (the authors' name for input_dim); default and required: the store's dim")
    g.add_argument("--num_patches", type=positive_int, default=256,
                   help="max segments per sequence (the authors' name for max_len; Table 5: 256 tokens)")
    g.add_argument("--embed_dim", type=positive_int, default=None, help="encoder width")
    g.add_argument("--depth", type=positive_int, default=None, help="encoder blocks")
    g.add_argument("--num_heads", type=positive_int, default=None, help="encoder attention heads")
    g.add_argument("--decoder_embed_dim", type=positive_int, default=None, help="decoder width")
    g.add_argument("--decoder_depth", type=positive_int, default=None, help="decoder blocks")
    g.add_argument("--decoder_num_heads", type=positive_int, default=None, help="decoder attention heads")
    g.add_argument("--mlp_ratio", type=positive_float, default=None, help="MLP hidden width / width")
    g.add_argument("--input_scale", choices=models_lvmae.INPUT_SCALES, default=None,
                   help="none: unit-norm embeddings added to the positions as they are (the paper's Eq. 1, the "
                        "authors' code); sqrt_dim: multiplied by sqrt(input dim) first, reconstructions divided by "
                        f"it. Default: {models_lvmae.DEFAULT_INPUT_SCALE}, or the checkpoint's on resume")

    g = p.add_argument_group("masking and loss")
    g.add_argument("--mask_ratio", type=fraction, default=None,
                   help="fraction of segments masked: in (0, 1) for objectives that reconstruct, [0, 1) for "
                        "contrastive (0 = the unmasked encoder); default 0.75 for contrastive, else 0.5, or the "
                        "checkpoint's on resume")
    g.add_argument("--masking", choices=models_lvmae.MASKINGS, default=None,
                   help="random (default); semantic: mask the segments least similar to their predecessor (the "
                        "paper's text); semantic_inverse: mask the most redundant ones (what the authors' code does)")
    g.add_argument("--masking_strategy", action="store_true",
                   help="the authors' flag: same as --masking semantic, deliberately the paper's definition "
                        "(use --masking semantic_inverse to reproduce the authors' code)")
    g.add_argument("--cos_loss", action="store_true", help="1 - cosine similarity per masked token instead of MSE")
    g.add_argument("--loss_norm", choices=LOSS_NORMS, default=None,
                   help="what each step's masked-token loss sum is divided by: epoch (default) = the epoch's mean "
                        "masked tokens per step (every masked token weighs the same); step = the step's masked "
                        "tokens; authors = each rank's micro-batch by its own count / accum_iter (the authors' "
                        "code; DDP and accumulation then differ from one big batch). On resume the default is the "
                        "checkpoint's")

    g = p.add_argument_group("objective (docs/contrastive.md)")
    g.add_argument("--objective", choices=models_lvmae.OBJECTIVES, default=None,
                   help="mae (default): masked-embedding reconstruction; contrastive: masked video-text InfoNCE "
                        "(no decoder); mae+contrastive: both on one encoder pass. On resume the default is the "
                        "checkpoint's")
    g.add_argument("--texts", default=None,
                   help="text database (python -m datasets.texts) pairing videos with texts; needed by the "
                        "contrastive objectives")
    g.add_argument("--contrastive_weight", type=positive_float, default=None,
                   help="mae+contrastive: loss = MSE + this x InfoNCE (default 1)")
    g.add_argument("--pooling", choices=models_lvmae.POOLINGS, default="mean",
                   help="video embedding of the contrastive head: mean of the output tokens (the paper's) or [CLS]")
    g.add_argument("--init", default=None,
                   help="start a new run from this LV-MAE checkpoint's weights (the paper's second stage; its "
                        "architecture is used, the text head starts fresh unless it has one)")
    g.add_argument("--train_last_k", type=nonneg_int, default=None,
                   help="train only the last K encoder blocks (and the final norm and the heads); 0 = all (default, "
                        "or the checkpoint's on resume)")

    g = p.add_argument_group("optimization (Table 5 defaults)")
    g.add_argument("--batch_size", type=positive_int, default=16,
                   help="windows per process per iteration; effective batch = batch_size x accum_iter x world size")
    g.add_argument("--accum_iter", type=positive_int, default=1, help="micro-batches accumulated per optimizer step")
    g.add_argument("--epochs", type=positive_int, default=150, help="training epochs")
    g.add_argument("--warmup_epochs", type=nonneg_float, default=40, help="linear lr warmup, in epochs")
    g.add_argument("--blr", type=positive_float, default=1.5e-4, help="base lr: lr = blr x effective batch / 256")
    g.add_argument("--lr", type=positive_float, default=None, help="absolute lr (overrides --blr)")
    g.add_argument("--lr_schedule", choices=LR_SCHEDULES, default=None,
                   help="after the linear warmup: cosine (default; Table 5) decay to --min_lr, or constant lr; "
                        "on resume the default is the checkpoint's")
    g.add_argument("--min_lr", type=nonneg_float, default=0.0, help="lr at the end of the cosine decay")
    g.add_argument("--weight_decay", type=nonneg_float, default=0.05,
                   help="AdamW weight decay (not on biases, norms, tokens)")
    g.add_argument("--amp", choices=("auto", "bf16", "fp16", "none"), default="auto",
                   help="autocast: auto = bf16 on CUDA, none on CPU; fp16 adds a GradScaler")
    g.add_argument("--seed", type=int, default=0, help="seeds the model init, windows, masks, sampler and split")

    g = p.add_argument_group("run")
    g.add_argument("--output_dir", default=None, type=output_dir,
                   help="where everything is written (default ./output_dir/<dataset>)")
    g.add_argument("--resume", default="auto",
                   help="auto = continue from <output_dir>/checkpoint-last.pth if present; a path; or none = start over")
    g.add_argument("--keep_every", type=nonneg_int, default=50,
                   help="also keep checkpoint-<epoch>.pth every this many epochs (0 = only checkpoint-last.pth)")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    g.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="train through torch.compile (default backend inductor; checkpoints keep the uncompiled "
                        "module's keys); benchmarks/gpu_check.py reports whether it pays")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="no tqdm progress bars")

    g = p.add_argument_group("accepted for the authors' command line (torchrun sets these)")
    g.add_argument("--distributed", action="store_true",
                   help="ignored: launch with torchrun for DDP (torchrun sets rank and world size)")
    g.add_argument("--world_size", type=int, default=None, help="ignored: torchrun's --nproc_per_node x --nnodes sets it")
    g.add_argument("--local_rank", "--local-rank", type=int, default=None, help="ignored: torchrun sets LOCAL_RANK")
    return p


# --- resolving arguments ----------------------------------------------------------------------------
def resolve_masking(args) -> str:
    if args.masking_strategy and args.masking not in (None, "semantic"):
        raise ConfigError(f"--masking_strategy means --masking semantic, but --masking {args.masking} was also given")
    return "semantic" if args.masking_strategy else (args.masking or "random")


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA device (on CPU use --amp bf16 or none)")
    return amp


def run_dir(args) -> Path:
    return Path(args.output_dir or Path("output_dir") / args.dataset)


def resolve_args(args, info: dist_util.DistInfo, resumed: dict | None = None) -> int:
    """Replace ``auto`` / alias / unset values by what this run uses (recorded in config.json);
    ``resumed`` is the checkpoint the run continues, whose values unset run flags take. Returns
    the effective batch size."""
    args.masking = resolve_masking(args)
    args.amp = resolve_amp(args.amp, info.device)
    args.output_dir = str(run_dir(args))
    for flag, (default, legacy) in RUN_DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, (resumed.get("args") or {}).get(flag, legacy) if resumed is not None else default)
    if args.input_scale is None:
        args.input_scale = resumed["model_config"]["input_scale"] if resumed is not None \
            else models_lvmae.DEFAULT_INPUT_SCALE
    resolve_objective(args, info, (resumed.get("args") or {}) if resumed is not None else {})
    eff_batch = args.batch_size * args.accum_iter * info.world_size
    if args.lr is None:
        args.lr = args.blr * eff_batch / 256
    return eff_batch


def resolve_objective(args, info: dist_util.DistInfo, resumed_args: dict) -> None:
    """The objective flags' defaults (on resume, the checkpoint's values of the flags left out)
    and the checks that need no data (ConfigError naming the flag)."""
    contrast = models_lvmae.has_text_head(args.objective)
    if args.contrastive_weight is not None and args.objective != "mae+contrastive":
        raise ConfigError(f"--contrastive_weight weighs the InfoNCE of --objective mae+contrastive, not of "
                          f"--objective {args.objective}")
    for flag in ("mask_ratio", "contrastive_weight", "train_last_k"):
        if getattr(args, flag) is None and resumed_args.get(flag) is not None:
            setattr(args, flag, resumed_args[flag])
    if args.mask_ratio is None:
        args.mask_ratio = MASK_RATIO_DEFAULTS[args.objective]
    if args.train_last_k is None:
        args.train_last_k = 0
    if models_lvmae.has_decoder(args.objective) and not 0.0 < args.mask_ratio < 1.0:
        raise ConfigError(f"--mask_ratio {args.mask_ratio}: --objective {args.objective} reconstructs masked "
                          "segments and needs a ratio in (0, 1) (0 is for --objective contrastive)")
    args.contrastive_weight = 1.0 if args.contrastive_weight is None else args.contrastive_weight
    if contrast and not args.texts:
        raise ConfigError(f"--objective {args.objective} needs --texts (a text database: python -m datasets.texts)")
    if args.texts and not contrast:
        raise ConfigError(f"--texts pairs videos with texts for a contrastive objective; --objective {args.objective} "
                          "does not use it")
    if contrast and args.batch_size * info.world_size < 2:
        raise ConfigError(f"--batch_size {args.batch_size} x world size {info.world_size} gives "
                          f"{args.batch_size * info.world_size} pair per micro-batch: InfoNCE needs at least 2 "
                          "(raise --batch_size)")


def paired_texts(args, stores, output_dir: Path, is_main: bool, say):
    """The text database of ``--texts`` checked against the stores: ``(db, {video: row}, number
    of texts of videos in no store)``; those are listed in ``TEXTS_UNKNOWN``."""
    from datasets.texts import TextDatabase
    db = TextDatabase(args.texts)
    for store in stores:
        db.check_store(store.manifest, ", ".join(map(str, store.roots)))
    in_store = {v for store in stores for v in store.video_ids}
    unknown = [v for v in db.ids if v not in in_store]
    if unknown and is_main:
        atomic_write_text(output_dir / TEXTS_UNKNOWN, "\n".join(unknown) + "\n")
    trunc = db.num_truncated
    trunc = "truncation not counted (no tokenizer)" if trunc is None else \
        f"{trunc} truncated to the tower's {db.meta.get('max_length')} tokens"
    say(f"texts: {len(db)} from {args.texts} ({db.meta.get('num_texts')} distinct, {trunc}); "
        f"{len(unknown)} texts of videos in no store"
        + (f" (listed in {output_dir / TEXTS_UNKNOWN})" if unknown else ""))
    rows = {v: i for i, v in enumerate(db.ids) if v in in_store}
    if not rows:
        raise ConfigError(f"--texts {args.texts} has a text for none of the training videos of --data_path "
                          f"(its {len(db)} ids are no video of the stores)")
    return db, rows, len(unknown)


def init_config(explicit: dict, init: dict, path, cfg: dict) -> dict:
    """``--init``: the checkpoint's architecture with this run's objective head; the architecture
    flags given explicitly (``explicit``: flag -> value or None) must agree with it."""
    saved = dict(init["model_config"])
    for flag, given in explicit.items():
        key = "input_dim" if flag == "input_size" else flag
        if given is not None and given != saved.get(key):
            raise ConfigError(f"--{flag} {given} but --init {path} has {key} {saved.get(key)!r}; drop --{flag}")
    if saved.get("input_dim") != cfg["input_dim"]:
        raise ConfigError(f"--init {path} expects {saved.get('input_dim')}-d segment embeddings, --data_path holds "
                          f"{cfg['input_dim']}-d ones")
    return {**saved, "max_len": cfg["max_len"], "objective": cfg["objective"], "text_dim": cfg["text_dim"],
            "pooling": cfg["pooling"]}


def load_init(model, init: dict, path) -> list[str]:
    """Copy ``--init``'s weights that the new model has (same name and shape); the encoder must be
    complete. Returns the names of the model's tensors left at their initialization."""
    own = model.state_dict()
    take = {k: v for k, v in init["model"].items() if k in own and own[k].shape == v.shape}
    fresh = [k for k in own if k not in take]
    encoder = [k for k in fresh if k.split(".")[0] in ("input_proj", "cls_token", "blocks", "norm")]
    if encoder:
        raise CheckpointError(f"--init {path} lacks encoder weights {encoder[:5]} of this model")
    model.load_state_dict(take, strict=False)
    return fresh


def freeze_all_but_last(model, k: int) -> int:
    """``--train_last_k``: freeze the input projection, ``[CLS]`` and all but the last ``k``
    encoder blocks; returns the number of trainable parameters."""
    if k:
        if k > len(model.blocks):
            raise ConfigError(f"--train_last_k {k} exceeds the encoder's {len(model.blocks)} blocks (--depth)")
        frozen = [model.input_proj, *model.blocks[:len(model.blocks) - k]]
        for module in frozen:
            module.requires_grad_(False)
        model.cls_token.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_config(args, store_dim: int, store_name: str, text_dim: int | None = None) -> dict:
    """The LVMAE constructor arguments: the --model preset, explicit flags applied."""
    objective = args.objective or "mae"  # unresolved (parsed only): the default
    if args.input_size is not None and args.input_size != store_dim:
        raise ConfigError(f"--input_size {args.input_size} but {store_name} holds {store_dim}-d embeddings; "
                          f"drop --input_size or pass --input_size {store_dim}")
    cfg = models_lvmae.preset_config(
        args.model, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.num_heads,
        decoder_embed_dim=args.decoder_embed_dim, decoder_depth=args.decoder_depth,
        decoder_num_heads=args.decoder_num_heads, mlp_ratio=args.mlp_ratio, max_len=args.num_patches,
        input_dim=store_dim, input_scale=args.input_scale, objective=objective,
        text_dim=text_dim if models_lvmae.has_text_head(objective) else None,
        pooling=args.pooling if models_lvmae.has_text_head(objective) else "mean")
    for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
        if cfg[width] % cfg[heads]:
            raise ConfigError(f"--{width} {cfg[width]} is not divisible by --{heads} {cfg[heads]}")
    cfg["mlp_ratio"] = float(cfg["mlp_ratio"])
    return cfg


def open_stores(args):
    """``(train store, train ids, val store, val ids)``; ``args.store_weights`` = the --data_path
    weights (None: no weighted mix)."""
    roots, args.store_weights = weighted_data_paths(args.data_path)
    store = EmbeddingStore(roots)
    if args.val_data_path:
        val_store = EmbeddingStore(args.val_data_path)
        for key in ("encoder", "dim"):
            if val_store.manifest[key] != store.manifest[key]:
                raise StoreError(f"--val_data_path {', '.join(map(str, val_store.roots))} has {key} "
                                 f"{val_store.manifest[key]!r}, --data_path {', '.join(map(str, store.roots))} has "
                                 f"{store.manifest[key]!r}")
        return store, store.video_ids, val_store, val_store.video_ids
    train_ids, val_ids = split_validation(store.video_ids, args.val_fraction, args.seed)
    return store, train_ids, store, val_ids


def build_data(args, info: dist_util.DistInfo, paired=None):
    """Datasets, the training sampler and both loaders for this rank. ``paired(train store, val
    store) -> {video: text row}`` pairs videos with texts (contrastive objectives)."""
    store, train_ids, val_store, val_ids = open_stores(args)
    texts = paired(store, val_store) if paired else None
    window = dict(seed=args.seed, duration_min=args.duration_min, duration_max=args.duration_max,
                  max_len=args.num_patches, short_videos=args.short_videos, mask_ratio=args.mask_ratio,
                  window_sampling=args.window_sampling, texts=texts)
    train_set = PretrainWindows(store, train_ids, **window)
    if args.store_weights is not None:
        store_of = np.array([store.entry(v).store for v in train_set.video_ids], dtype=np.int64)
        try:
            train_set.mix = WeightedMix(store_of, args.store_weights, seed=args.seed,
                                        names=[str(r) for r in store.roots])
        except ValueError as e:
            raise ConfigError(f"--data_path: {e}") from None
    val_set = PretrainWindows(val_store, val_ids, **window)
    sampler = StepBatchSampler(train_set.window_lengths, len(train_set), args.batch_size, args.accum_iter,
                               info.world_size, info.rank, seed=args.seed, group_by_length=args.group_by_length)
    loader_kw = dict(collate_fn=collate_windows, num_workers=args.num_workers,
                     pin_memory=info.device.type == "cuda", persistent_workers=args.num_workers > 0)
    train_loader = DataLoader(train_set, batch_sampler=sampler, **loader_kw)
    val_loader = DataLoader(val_set, batch_sampler=eval_batches(val_set.window_lengths(None), args.batch_size,
                                                                info.world_size, info.rank), **loader_kw)
    return store, train_set, val_set, sampler, train_loader, val_loader


def build_optimizer(model, args, device: torch.device):
    """AdamW (0.9, 0.95); no weight decay on biases, norms, [CLS] and the mask token."""
    from timm.optim import param_groups_weight_decay
    groups = param_groups_weight_decay(model, args.weight_decay, no_weight_decay_list=model.no_weight_decay())
    # The fused kernel is one pass over all parameters: several times faster than the
    # per-tensor loop for small models on CPU, and deterministic.
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=device.type in ("cpu", "cuda"))


def compile_model(model, args):
    """``torch.compile(model)`` with ``--compile`` (dynamic shapes: batches are padded to their own
    maximum length), else ``model``. The compiled module wraps ``model`` and shares its
    parameters, so ``model.state_dict()`` keeps its keys (no ``_orig_mod.`` prefix)."""
    backend = getattr(args, "compile", None)
    return torch.compile(model, backend=backend, dynamic=True) if backend else model


def checkpoint_dict(model, optimizer, scaler, epoch, args, store) -> dict:
    data = {k: store.manifest[k] for k in ("encoder", "dim", "normalized")}
    data["profile"] = store.manifest.get("profile", LEGACY_PROFILE)
    if getattr(args, "texts", None):
        data["texts"] = args.texts
    return {"format_version": FORMAT_VERSION, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "args": jsonable(vars(args)),
            "model_config": dict(model.config), "objective": model.config["objective"], "data": data,
            "rng": get_rng_state()}


def resume_path(args) -> Path | None:
    if args.resume in ("none", "", None):
        return None
    if args.resume == "auto":
        path = Path(args.output_dir) / LAST
        return path if path.is_file() else None
    return Path(args.resume)


def resume(path: Path, model, optimizer, scaler, store, ckpt: dict | None = None) -> int:
    """Load a checkpoint of *this* run (``ckpt``: the file, already loaded); returns the epoch to
    start from."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    check_model_config(ckpt["model_config"], model.config, path)
    for key in ("encoder", "dim"):
        saved = ckpt.get("data", {}).get(key)
        if saved is not None and saved != store.manifest[key]:
            raise CheckpointError(f"{path} was trained on {key} {saved!r}, --data_path has {store.manifest[key]!r}")
    missing = [k for k in ("optimizer", "scaler", "epoch", "rng") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: it is a model-only checkpoint and cannot be resumed; "
                              "start a new --output_dir")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]) + 1


# --- the run ----------------------------------------------------------------------------------------
def train(args) -> dict:
    info = dist_util.init_distributed(args.device)
    say = print if info.is_main else (lambda *a, **k: None)
    say(f"device: {info.device}" + (f" (--device {args.device})" if args.device != str(info.device) else ""))
    if args.distributed or args.world_size is not None:
        say(f"note: --distributed / --world_size are set by torchrun, not by flags; this run has world size "
            f"{info.world_size} (launch `torchrun --nproc_per_node=N main_pretrain.py ...` for DDP)")
    args.output_dir = str(args.output_dir or Path("output_dir") / args.dataset)
    explicit = {flag: getattr(args, flag) for flag in INIT_ARCH_FLAGS}  # before defaults fill them (--init)
    path = resume_path(args)
    resumed = load_checkpoint(path) if path is not None else None
    init = load_checkpoint(args.init) if args.init and path is None else None
    if init is not None and args.input_scale is None:
        args.input_scale = init["model_config"]["input_scale"]
    eff_batch = resolve_args(args, info, resumed)
    output_dir = Path(args.output_dir)
    if info.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        for orphan in output_dir.glob("checkpoint-*.pth.tmp-*"):  # a save cut short by a kill
            say(f"removing {orphan} (an unfinished checkpoint write)")
            orphan.unlink()

    torch.manual_seed(args.seed)  # the model init; every data draw has its own keyed generator
    np.random.seed(args.seed)
    text_db, text_info = None, {}

    def paired(*stores):
        nonlocal text_db
        text_db, rows, text_info["texts_unknown_videos"] = paired_texts(args, stores, output_dir, info.is_main, say)
        text_info["texts_truncated"] = text_db.num_truncated
        return rows

    contrast = models_lvmae.has_text_head(args.objective)
    store, train_set, val_set, sampler, train_loader, val_loader = build_data(args, info, paired if contrast else None)
    short = "< 2 segments" if args.short_videos == "drop" else "too short to mask, --short_videos authors"
    if train_set.mix is not None:
        say("weighted mix, per epoch " + f"{train_set.mix.num_draws} draws: " + ", ".join(
            f"{name} weight {m['weight']:g} (p {m['probability']:.3f}, {m['videos']} videos, realized share "
            f"{m['realized_share']:.3f})" for name, m in train_set.mix.summary(range(args.epochs)).items()))
    if contrast:
        short = "without a text"
        text_info["texts_videos_without_text"] = train_set.num_without_text + val_set.num_without_text
    say(f"data: {len(train_set)} training videos, {len(val_set)} validation videos "
        f"(skipped {train_set.num_skipped} + {val_set.num_skipped} {short}) from "
        f"{', '.join(map(str, store.roots))}; encoder {store.manifest['encoder']}, dim {store.dim}")
    if contrast and not len(train_set):
        raise ConfigError(f"--texts {args.texts} has a text for none of the training videos of --data_path")
    cfg = model_config(args, store.dim, ", ".join(map(str, store.roots)), text_db.dim if contrast else None)
    if init is not None:
        cfg = init_config(explicit, init, args.init, cfg)
    model = models_lvmae.LVMAE(**cfg).to(info.device)
    if init is not None:
        check_store_encoder(init, store.manifest, args.init, ", ".join(map(str, store.roots)))
        fresh = load_init(model, init, args.init)
        say(f"initialized from {args.init} (objective {init['model_config']['objective']}); fresh: "
            f"{sorted({k.split('.')[0] for k in fresh}) or 'nothing'}")
        del init
    trainable = freeze_all_but_last(model, args.train_last_k)
    say(f"model: {args.model} {cfg}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"
        + (f" ({trainable / 1e6:.2f}M trained: the last {args.train_last_k} blocks, norm and heads)"
           if args.train_last_k else ""))
    texts = PairedTexts(text_db.embeddings, text_db.text_ids, info.device) if contrast else None

    say(f"base lr: {args.blr:.2e}  actual lr: {args.lr:.2e}  effective batch size: {eff_batch} "
        f"(= {args.batch_size} x accum {args.accum_iter} x world {info.world_size})")
    if args.warmup_epochs >= args.epochs:
        say(f"note: --warmup_epochs {args.warmup_epochs} >= --epochs {args.epochs}: the lr never leaves warmup")
    optimizer = build_optimizer(model, args, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=args.amp == "fp16")

    start_epoch = 0
    if path is not None:
        start_epoch = resume(path, model, optimizer, scaler, store, resumed)
        del resumed  # not held for the whole run
        say(f"resumed from {path}: starting at epoch {start_epoch} (--loss_norm {args.loss_norm}, "
            f"--input_scale {args.input_scale}, --short_videos {args.short_videos}, --window_sampling "
            f"{args.window_sampling}, --lr_schedule {args.lr_schedule})")
    ddp_model = compile_model(model, args)  # shares model's parameters; model is what is saved
    if info.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            ddp_model, device_ids=[info.device.index] if info.device.type == "cuda" else None)

    log, log_writer = None, None
    if info.is_main:
        write_run_config(output_dir, {"args": vars(args), "git": git_revision(), "model_config": cfg,
                                      "data": store.summary(), "world_size": info.world_size,
                                      "effective_batch_size": eff_batch, "start_epoch": start_epoch,
                                      "train_videos": len(train_set), "val_videos": len(val_set),
                                      "mix": train_set.mix and train_set.mix.summary(range(args.epochs)),
                                      **text_info})
        log = JsonLog(output_dir / "log.txt", resume_epoch=start_epoch - 1 if path is not None else None)
        log_writer = tensorboard_writer(output_dir, purge_step=start_epoch * 1000 if path is not None else None)

    history, val_stats = [], {}
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        train_stats = train_one_epoch(ddp_model, train_loader, optimizer, scaler, info.device, epoch, args,
                                      log_writer=log_writer, show_progress=args.progress and info.is_main, texts=texts)
        val_stats = validate(model, val_loader, info.device, args, texts, args.progress and info.is_main) \
            if len(val_set) else {}
        row = {"epoch": epoch, "dataset": args.dataset, **train_stats, **val_stats, **text_info}
        if train_set.mix is not None:
            row["mix_share"] = train_set.mix.shares(epoch)
        history.append(row)
        if info.is_main:
            # checkpoint-last.pth last: it is the commit point of the epoch. Killed before its
            # rename, a rerun redoes the epoch (rewriting the kept checkpoint and, after
            # JsonLog dropped it, the log line); after it, the epoch's files are all there.
            ckpt = checkpoint_dict(model, optimizer, scaler, epoch, args, store)
            if args.keep_every > 0 and ((epoch + 1) % args.keep_every == 0 or epoch + 1 == args.epochs):
                save_checkpoint(ckpt, output_dir / f"checkpoint-{epoch}.pth")
            log.write(row)
            save_checkpoint(ckpt, output_dir / LAST)
            for k in ("val_loss", "val_mse_lvmae", "val_mse_nearest_visible", "val_mse_mean_visible",
                      "val_contrastive", "val_t2v_r1", "val_v2t_r1"):
                if k in val_stats:
                    log_writer.add_scalar(k, val_stats[k], (epoch + 1) * 1000)
            log_writer.flush()
        val_txt = f"  val_loss {val_stats['val_loss']:.5f}" if val_stats else ""
        say(f"epoch {epoch}: train_loss {train_stats['train_loss']:.5f}{val_txt}  lr {train_stats['lr']:.2e}  "
            f"{train_stats['tokens_per_s']:.0f} tokens/s  padding {train_stats['padding_fraction']:.1%}")

    if not history and len(val_set):  # nothing left to train: still report where the run stands
        val_stats = validate(model, val_loader, info.device, args, texts, False)
    if "val_t2v_r1" in val_stats:
        say(f"contrastive validation on {val_stats['val_pairs']} videos: InfoNCE {val_stats['val_contrastive']:.4f} "
            f"(masked, batch negatives) | unmasked text->video R@1 {val_stats['val_t2v_r1']:.3f}, video->text R@1 "
            f"{val_stats['val_v2t_r1']:.3f}")
    if "val_mse_lvmae" in val_stats:
        say(f"masked-token reconstruction MSE on {val_stats['val_masked_tokens']} validation tokens "
            f"({len(val_set)} videos): LV-MAE {val_stats['val_mse_lvmae']:.5f} | nearest visible segment "
            f"{val_stats['val_mse_nearest_visible']:.5f} | mean of visible segments "
            f"{val_stats['val_mse_mean_visible']:.5f}")
    if log_writer is not None:
        log_writer.close()
    dist_util.barrier()
    dist_util.cleanup()
    result = {"output_dir": str(output_dir), "checkpoint": str(output_dir / LAST), "epochs": args.epochs,
              "train_loss": history[-1]["train_loss"] if history else None, "history": history, **val_stats}
    if info.is_main:
        say(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return result


def validate(model, loader, device, args, texts, show_progress: bool) -> dict:
    """The objective's validation: the reconstruction MSE (with a decoder) and the contrastive
    InfoNCE / recall (with a text head); ``val_loss`` is the objective's (the MSE when both)."""
    stats = {}
    if models_lvmae.has_decoder(args.objective):
        stats.update(evaluate(model, loader, device, args, show_progress=show_progress))
    if texts is not None:
        stats.update(evaluate_contrastive(model, loader, device, args, texts, show_progress=show_progress))
        stats.setdefault("val_loss", stats["val_contrastive"])
    return stats


def main(argv=None) -> dict:
    parser = ArgumentParser("LV-MAE pretraining", parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    if int(os.environ.get("RANK", 0)) != 0:
        return train(args)
    # A run refused before its first checkpoint (a NaN vector, a bad flag found late) leaves
    # nothing behind: no config.json, log or TensorBoard file without a checkpoint.
    with nothing_left_on_error(run_dir(args), unless="checkpoint-*.pth"):
        return train(args)


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
