"""One pretraining epoch and the validation pass.

Loss normalization (``args.loss_norm``; DESIGN.md). Every micro-batch's loss is the sum of the
per-token loss over its masked real tokens divided by a normalizer:

- ``epoch`` (default): the epoch's mean number of masked real tokens per optimizer step (all
  ranks, all micro-batches), computed from the sampler's plan before the epoch starts. The same
  for every step of the epoch, so every masked token of an epoch carries the same weight whether
  it lands in a step of short or of long windows: length grouping changes padding, never the
  objective.
- ``step``: the masked real tokens of the whole optimizer step. It depends only on the window
  lengths, so it is counted for the step's micro-batches before the first forward and
  all-reduced once. A token in a step of short windows weighs more than one in a step of long
  windows.
- ``authors`` (the authors' ``engine_pretrain.py``): each rank's micro-batch by its own masked
  count, then divided by ``accum_iter``; DDP averages over ranks. Batch-dependent like ``step``
  and, unlike the other two, not equal to one process on the same global batch.

With ``epoch`` and ``step`` the gradients of the micro-batches simply add up; DDP *averages* over
ranks, so each rank backpropagates ``world_size x loss`` and the average becomes the sum. The
result equals one process on the same global batch up to float summation order.

Contrastive objectives (``args.objective``; docs/contrastive.md). Each micro-batch's video
embeddings are gathered from every rank with their gradients (``util.dist.gather_with_grad``),
so the negatives of a pair are all the pairs of the global micro-batch (``batch_size x world``)
and the symmetric InfoNCE equals one process's on the same global micro-batch; it is averaged
over the step's ``accum_iter`` micro-batches (negatives never span micro-batches: no gradient
caching). ``mae+contrastive`` adds ``contrastive_weight x`` that to the normalized MSE of the
same encoder pass. ``train_loss`` is then the objective's total, with its parts as
``train_mse`` and ``train_contrastive``; ``logit_scale`` is the temperature's scale at the end.

Reported losses (``train_loss``, the per-step TensorBoard value) are the mean per-token loss over
the masked tokens, whatever the normalization, so runs with different ``--loss_norm`` compare.
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
from tqdm import tqdm

import util.dist as dist_util
from models_lvmae import LOGIT_SCALE_MAX, has_decoder, has_text_head, num_visible
from util.baselines import mean_visible, nearest_visible
from util.cli import UserError
from util.contrastive import info_nce
from util.lr_sched import adjust_learning_rate

BASELINES = {"nearest_visible": nearest_visible, "mean_visible": mean_visible}
LOSS_NORMS = ("epoch", "step", "authors")


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN / inf loss; the message names the epoch, step and videos."""


def num_masked_tokens(lengths: torch.Tensor, mask_ratio: float, reconstruct: bool = True) -> int:
    """Masked real tokens of a batch: ``n - num_visible(n)`` per sample (0 when ``n < 2``)."""
    return int((lengths - num_visible(lengths, mask_ratio, reconstruct)).sum())


def objective_of(model) -> str:
    """The objective of a model, DDP- / compile-wrapped or not."""
    return getattr(_unwrap(model), "objective", "mae")


class PairedTexts:
    """The text side of the pairs on the device: ``embeddings`` ``[N, T]`` (unit rows, no
    gradient) and ``keys`` ``[N]`` (equal for identical texts), indexed by a batch's ``text``."""

    def __init__(self, embeddings, keys, device: torch.device):
        self.embeddings = torch.as_tensor(np.array(embeddings), dtype=torch.float32).to(device)
        self.keys = torch.as_tensor(np.array(keys), dtype=torch.long).to(device)

    def batch_nce(self, emb: torch.Tensor, scale: torch.Tensor, batch: dict, device: torch.device) -> torch.Tensor:
        """The InfoNCE of a micro-batch over the pairs of every rank (module docstring); the same
        video (``index``) or the same text (``keys``) twice are not negatives."""
        rows = batch["text"].to(device)
        video = dist_util.gather_with_grad(emb)
        text = dist_util.all_gather_cat(self.embeddings[rows])
        text_keys = dist_util.all_gather_cat(self.keys[rows])
        video_keys = dist_util.all_gather_cat(batch["index"].to(device))
        return info_nce(video, text, scale, video_keys, text_keys)


def epoch_masked_per_step(sampler, epoch: int, mask_ratio: float) -> float:
    """Mean masked real tokens per optimizer step over the plan of ``epoch`` (all ranks): the
    ``epoch`` normalizer. ``sampler`` is the loader's ``StepBatchSampler``."""
    lengths = torch.as_tensor(sampler.step_lengths(epoch))  # [num_steps, step_size]
    return float((lengths - num_visible(lengths, mask_ratio)).sum()) / max(lengths.shape[0], 1)


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for ``--amp bf16|fp16`` (resolved, never ``auto``), else a no-op."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _steps(loader, accum_iter: int):
    """Group the loader's micro-batches into optimizer steps (lists of ``accum_iter``)."""
    step = []
    for batch in loader:
        step.append(batch)
        if len(step) == accum_iter:
            yield step
            step = []
    if step:
        yield step


def train_one_epoch(model, loader, optimizer, scaler, device: torch.device, epoch: int, args,
                    log_writer=None, max_steps: int | None = None, show_progress: bool = True,
                    texts: PairedTexts | None = None) -> dict:
    """Train one epoch; returns ``train_loss`` (mean over the epoch's masked tokens), ``lr``,
    ``steps``, ``real_tokens``, ``padded_tokens``, ``padding_fraction``, ``tokens_per_s``.

    ``model`` may be DDP-wrapped. ``args`` needs accum_iter, mask_ratio, masking, cos_loss,
    loss_norm, amp (resolved), lr, min_lr, warmup_epochs, epochs.
    """
    model.train()
    world = dist_util.world_size()
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    objective = objective_of(model)
    decode, contrast = has_decoder(objective), has_text_head(objective)
    weight = float(getattr(args, "contrastive_weight", 1.0)) if decode else 1.0
    if contrast and texts is None:
        raise ValueError(f"--objective {objective} needs the paired texts (--texts)")
    if args.loss_norm not in LOSS_NORMS:
        raise ValueError(f"unknown --loss_norm {args.loss_norm!r}; choose from {LOSS_NORMS}")
    if args.loss_norm == "epoch" and decode:
        sampler = getattr(loader, "batch_sampler", None)
        if not hasattr(sampler, "step_lengths"):
            raise ValueError("--loss_norm epoch needs a loader over a StepBatchSampler (its plan fixes the "
                             "epoch's masked tokens per step); use --loss_norm step")
        epoch_norm = epoch_masked_per_step(sampler, sampler.epoch, args.mask_ratio)
    steps_per_epoch = max(1, len(loader) // args.accum_iter)
    total_steps = steps_per_epoch if max_steps is None else min(max_steps, steps_per_epoch)
    # disable=None: a bar on a terminal, nothing when stderr is a log file.
    pbar = tqdm(total=total_steps, desc=f"epoch {epoch}", unit="step", disable=None if show_progress else True,
                leave=False)
    loss_x_masked = masked_total = real_total = padded_total = nce_total = 0.0
    lr = float("nan")
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for step, micro_batches in enumerate(_steps(loader, args.accum_iter)):
        if step >= total_steps:
            break
        lr = adjust_learning_rate(optimizer, epoch + step / steps_per_epoch, args)
        local = torch.tensor([[num_masked_tokens(b["lengths"], args.mask_ratio, decode), int(b["lengths"].sum()),
                               b["x"].shape[0] * b["x"].shape[1]] for b in micro_batches],
                             dtype=torch.float64, device=device)
        counts = dist_util.all_reduce_sum(local.sum(0))  # M of the whole step, before the first forward
        if not decode:  # no reconstruction loss to normalize
            norms, factor = [1.0] * len(micro_batches), 1
        elif args.loss_norm == "epoch":
            norms, factor = [epoch_norm] * len(micro_batches), world
        elif args.loss_norm == "step":
            norms, factor = [counts[0].float()] * len(micro_batches), world
        else:  # authors: DDP's mean over ranks stays
            norms, factor = [m * args.accum_iter for m in local[:, 0].tolist()], 1

        sums, nces = [], []  # per micro-batch: sum of the per-token loss over its masked tokens; InfoNCE
        for a, batch in enumerate(micro_batches):
            # Gradients are synchronized once per step, on the last micro-batch.
            sync = (not ddp) or a == len(micro_batches) - 1
            with (contextlib.nullcontext() if sync else model.no_sync()):
                x = batch["x"].to(device, non_blocking=True)
                lengths = batch["lengths"].to(device, non_blocking=True)
                noise = batch["noise"].to(device, non_blocking=True) if args.masking == "random" else None
                with autocast(device, args.amp):
                    out = model(x, lengths, mask_ratio=args.mask_ratio, masking=args.masking, noise=noise,
                                num_masked=norms[a], cos_loss=args.cos_loss, **({"with_embedding": True} if contrast
                                                                                 else {}))
                    loss = out[0]
                    total = loss * factor if decode else 0.0
                    if contrast:
                        # the same global loss on every rank: gather_with_grad makes DDP's mean exact
                        nce = texts.batch_nce(out[3], out[4], batch, device)
                        total = total + weight * nce / len(micro_batches)
                        nces.append(nce.detach().double())
                scaler.scale(total).backward()
            if decode:  # forward_loss divides by max(norm, 1)
                sums.append(loss.detach().double() * max(float(norms[a]), 1.0))

        # .item() is a device sync, but the step must not be taken on a NaN: once per step.
        step_sum = dist_util.all_reduce_sum(torch.stack(sums).sum()).item() if decode else 0.0
        step_nce = torch.stack(nces).mean().item() if contrast else 0.0  # already global
        masked, real, padded = counts.tolist()
        step_mse = step_sum / max(masked, 1.0)  # mean per masked token of the step
        step_loss = (step_mse if decode else 0.0) + weight * step_nce
        if not math.isfinite(step_loss) and not decode:
            raise NonFiniteLossError(
                f"non-finite contrastive loss ({step_loss}) at epoch {epoch}, step {step} (lr {lr:.3g}); videos "
                f"of this rank: {[v for b in micro_batches for v in b['video_id']]}. Lower --blr or use --amp none.")
        if not math.isfinite(step_loss):
            bad = [vid for l, b in zip(torch.stack(sums).tolist(), micro_batches) if not math.isfinite(l)
                   for vid in b["video_id"]]
            raise NonFiniteLossError(
                f"non-finite loss ({step_loss}) at epoch {epoch}, step {step} (lr {lr:.3g}); "
                f"videos of this rank's non-finite micro-batch(es): {bad or '(another rank)'}. "
                "Lower --blr, use --amp none, or check these videos' embeddings.")
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        loss_x_masked += step_sum
        nce_total += step_nce
        masked_total += masked
        real_total += real
        padded_total += padded
        if log_writer is not None:
            x1000 = int((step / steps_per_epoch + epoch) * 1000)
            log_writer.add_scalar("train_loss", step_loss, x1000)
            if contrast:
                log_writer.add_scalar("train_contrastive", step_nce, x1000)
            log_writer.add_scalar("lr", lr, x1000)
        pbar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        pbar.update(1)
    pbar.close()
    elapsed = time.perf_counter() - start
    mse = loss_x_masked / max(masked_total, 1)
    stats = {"train_loss": mse, "lr": lr, "steps": total_steps,
             "real_tokens": int(real_total), "padded_tokens": int(padded_total),
             "padding_fraction": 1.0 - real_total / max(padded_total, 1), "tokens_per_s": real_total / elapsed,
             "epoch_time_s": elapsed}
    if contrast:
        nce = nce_total / max(total_steps, 1)
        scale = _unwrap(model).logit_scale.detach().exp().clamp(max=LOGIT_SCALE_MAX)
        stats.update(train_loss=(mse if decode else 0.0) + weight * nce, train_contrastive=nce,
                     masked_tokens=int(masked_total), logit_scale=float(scale))
        if decode:
            stats["train_mse"] = mse
    return stats


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)


@torch.no_grad()
def evaluate(model, loader, device: torch.device, args, show_progress: bool = True) -> dict:
    """Validation on fixed windows and fixed masks: ``val_loss`` (the training loss, averaged
    over masked tokens) and the masked-token MSE of LV-MAE and of the baselines on the same
    masks (``val_mse_<name>``; per token the mean over dims of ``(pred - x)^2``, as the loss).

    ``model`` is the unwrapped model (each rank evaluates its own share; sums are reduced).
    """
    model.eval()
    names = ["lvmae", *BASELINES]
    sums = torch.zeros(2 + len(names), dtype=torch.float64, device=device)  # loss, tokens, mse...
    for batch in tqdm(loader, desc="validation", unit="batch", disable=None if show_progress else True, leave=False):
        x = batch["x"].to(device, non_blocking=True)
        lengths = batch["lengths"].to(device, non_blocking=True)
        noise = batch["noise"].to(device, non_blocking=True) if args.masking == "random" else None
        with autocast(device, args.amp):
            loss, pred, mask = model(x, lengths, mask_ratio=args.mask_ratio, masking=args.masking, noise=noise,
                                     num_masked=1.0, cos_loss=args.cos_loss)
        valid = torch.arange(x.shape[1], device=device)[None] < lengths[:, None]
        visible = valid & ~mask
        preds = [pred] + [fn(x, visible) for fn in BASELINES.values()]
        # forward_loss with num_masked=1 is the *sum* of the per-token loss over the mask.
        mse = [model.forward_loss(x, p, mask, num_masked=1.0) for p in preds]
        sums += torch.stack([loss.double(), mask.sum().double(), *[m.double() for m in mse]])
    dist_util.all_reduce_sum(sums)
    tokens = sums[1].item()
    out = {"val_loss": sums[0].item() / max(tokens, 1), "val_masked_tokens": int(tokens)}
    out.update({f"val_mse_{n}": sums[2 + i].item() / max(tokens, 1) for i, n in enumerate(names)})
    return out


@torch.no_grad()
def evaluate_contrastive(model, loader, device: torch.device, args, texts: PairedTexts,
                         show_progress: bool = True) -> dict:
    """Validation of a contrastive objective on the fixed windows: ``val_contrastive`` (the
    training InfoNCE on the fixed masks, negatives = each validation batch, mean over pairs)
    and, with the *unmasked* encoder, text->video and video->text recall@1 over all validation
    videos (``val_t2v_r1``, ``val_v2t_r1``; a hit is any video / text whose text is identical to
    the query's, so duplicate descriptions do not count as misses). ``model`` is unwrapped."""
    model.eval()
    nce_sum = torch.zeros(2, dtype=torch.float64, device=device)
    embs, rows, keys = [], [], []
    for batch in tqdm(loader, desc="validation (contrastive)", unit="batch",
                      disable=None if show_progress else True, leave=False):
        x = batch["x"].to(device, non_blocking=True)
        lengths = batch["lengths"].to(device, non_blocking=True)
        noise = batch["noise"].to(device, non_blocking=True) if args.masking == "random" else None
        r = batch["text"].to(device)
        with autocast(device, args.amp):
            out = model(x, lengths, mask_ratio=args.mask_ratio, masking=args.masking, noise=noise, num_masked=1.0,
                        with_embedding=True)
            pad = torch.arange(x.shape[1], device=device)[None] >= lengths[:, None]
            embs.append(model.text_space_embedding(x, pad).float())
        nce = info_nce(out[3], texts.embeddings[r], out[4], batch["index"].to(device), texts.keys[r])
        nce_sum += torch.stack([nce.double() * len(x), torch.tensor(float(len(x)), dtype=torch.float64,
                                                                     device=device)])
        rows.append(r)
    dist_util.all_reduce_sum(nce_sum)
    out = {"val_contrastive": nce_sum[0].item() / max(nce_sum[1].item(), 1.0)}
    video = dist_util.all_gather_cat(torch.cat(embs) if embs else torch.zeros(0, texts.embeddings.shape[1],
                                                                              device=device))
    row = dist_util.all_gather_cat(torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long, device=device))
    if len(row):
        key = texts.keys[row]
        sim = texts.embeddings[row] @ video.T  # [texts, videos]; text i belongs to video i
        out["val_t2v_r1"] = (key[sim.argmax(1)] == key).double().mean().item()
        out["val_v2t_r1"] = (key[sim.argmax(0)] == key).double().mean().item()
        out["val_pairs"] = int(len(row))
    return out
